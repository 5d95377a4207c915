"""Precision/recall, Inception Score and the VGG16 extractor against torch-fidelity and naive references."""

import copy

import numpy as np
import pytest
import torch

from pstyle.metrics.features import VGG16Extractor, build_vgg16
from pstyle.metrics.inception_score import inception_score
from pstyle.metrics.precision_recall import precision_recall
from pstyle.metrics.weights import WeightsNotFoundError


def _feats(n, d, seed, shift=0.0):
    return (np.random.RandomState(seed).randn(n, d) + shift).astype(np.float32)


def _pr_naive(real, fake, k):
    d = lambda a, b: np.sqrt(((a[:, None].astype(np.float64) - b[None]) ** 2).sum(-1))  # noqa: E731
    r_real = np.sort(d(real, real), axis=1)[:, k]
    r_fake = np.sort(d(fake, fake), axis=1)[:, k]
    precision = (d(fake, real) <= r_real[None]).any(1).mean()
    recall = (d(real, fake) <= r_fake[None]).any(1).mean()
    return precision, recall


def test_precision_recall_matches_naive_and_torch_fidelity():
    from torch_fidelity.metric_prc import calculate_precision_recall_full
    real, fake = _feats(80, 16, 0), _feats(60, 16, 1, shift=0.7)
    p, r = precision_recall(real, fake, k=3)
    assert (p, r) == pytest.approx(_pr_naive(real, fake, 3), abs=1e-6)   # float32 mean of 0/1 flags
    ref_p, ref_r = calculate_precision_recall_full(torch.from_numpy(fake), torch.from_numpy(real), 3)
    assert (p, r) == (ref_p, ref_r)
    assert 0 < p < 1 and 0 < r < 1                        # the shift makes both non-trivial
    assert precision_recall(real, fake, k=3, block=7) == (p, r)   # blocking does not change the result


def test_precision_recall_identical_sets_are_one():
    f = _feats(30, 8, 2)
    assert precision_recall(f, f) == (1.0, 1.0)


def test_precision_recall_needs_more_than_k():
    f = _feats(3, 8, 3)
    with pytest.raises(ValueError, match='precision/recall with k=3 needs more than 3 real images; got 3'):
        precision_recall(f, _feats(10, 8, 4))


def test_inception_score_matches_torch_fidelity():
    from torch_fidelity.metric_isc import isc_features_to_metric
    logits = torch.from_numpy(_feats(50, 1008, 5) * 3)
    ref = isc_features_to_metric(logits, splits=5, shuffle=True, rng_seed=2020)
    mean, std = inception_score(logits=logits.numpy(), splits=5, seed=2020)
    assert mean == pytest.approx(ref['inception_score_mean'], rel=1e-12)
    assert std == pytest.approx(ref['inception_score_std'], rel=1e-9)
    assert mean > 2


def test_inception_score_from_probs_matches_nvidia_formula():
    logits = _feats(40, 1008, 6) * 3
    probs = torch.softmax(torch.from_numpy(logits).double(), 1).numpy()
    mean, std = inception_score(probs=probs, splits=4, shuffle=False)
    # stylegan2-ada-pytorch metrics/inception_score.py, in numpy
    scores = []
    for i in range(4):
        part = probs[i * 40 // 4:(i + 1) * 40 // 4]
        kl = part * (np.log(part) - np.log(np.mean(part, axis=0, keepdims=True)))
        scores.append(np.exp(np.mean(np.sum(kl, axis=1))))
    assert (mean, std) == pytest.approx((np.mean(scores), np.std(scores)), rel=1e-10)
    assert inception_score(logits=logits, splits=4, shuffle=False) == pytest.approx((mean, std), rel=1e-10)


def test_inception_score_bounds_and_errors():
    # One-hot predictions spread over all classes give IS = number of classes per split.
    probs = np.eye(10)[np.arange(40) % 10]
    assert inception_score(probs=probs, splits=4, shuffle=False)[0] == pytest.approx(10)
    with pytest.raises(ValueError, match='pass exactly one of logits or probs'):
        inception_score()
    with pytest.raises(ValueError, match='Inception Score with 10 splits needs at least 10 images; got 5'):
        inception_score(logits=np.zeros((5, 1008)))


def test_vgg16_fc2_matches_torch_fidelity(monkeypatch):
    import torchvision
    import torch_fidelity.feature_extractor_vgg16 as tv16
    torch.manual_seed(0)
    net = torchvision.models.vgg16(weights=None).eval()
    monkeypatch.setattr(tv16, 'torchvision_load_pretrained_vgg16', lambda **kw: copy.deepcopy(net))
    ref = tv16.FeatureExtractorVGG16('vgg16', ['fc2_relu'])
    images = torch.randint(0, 256, (2, 3, 40, 40), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        (expected,) = ref(images)
    ours = VGG16Extractor(net, 'x', 'legacy_tf', 'cpu')(images)['fc2']
    assert ours.shape == (2, 4096) and expected.abs().max() > 0
    assert (ours - expected).abs().max() <= 1e-4 * expected.abs().max()


def test_vgg16_missing_weights_message():
    with pytest.raises(WeightsNotFoundError, match=r'vgg16-397923af.pth not found\. download it from '
                                                   r'https://download.pytorch.org/models/vgg16-397923af.pth'):
        build_vgg16(download=False)
