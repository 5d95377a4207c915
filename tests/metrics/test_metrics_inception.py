"""The FID Inception port: weight-file layout, parity with torch-fidelity and pytorch-fid, TorchScript loader."""

import numpy as np
import pytest
import torch

from pstyle.metrics.features import (InceptionExtractor, TorchScriptInceptionExtractor, _is_torchscript, build_inception,
                              extract_features)
from pstyle.metrics.inception import load_inception_pth, random_inception_state_dict
from pstyle.metrics.weights import WeightsNotFoundError, file_sha256

TOL = 1e-4  # the bound on pool3 max abs difference


@pytest.fixture(scope='module')
def images():
    return torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8, generator=torch.Generator().manual_seed(3))


@pytest.fixture(scope='module')
def net(inception_pth):
    return load_inception_pth(inception_pth)


def _pytorch_fid_model(monkeypatch, path, **kwargs):
    import pytorch_fid.inception as pi
    monkeypatch.setattr(pi, 'load_state_dict_from_url', lambda *a, **k: torch.load(path, weights_only=True))
    return pi.InceptionV3([3], **kwargs).eval()


def test_state_dict_layout_equals_pytorch_fid(monkeypatch, inception_pth, net):
    import pytorch_fid.inception as pi
    monkeypatch.setattr(pi, 'load_state_dict_from_url', lambda *a, **k: torch.load(inception_pth, weights_only=True))
    ref_sd = pi.fid_inception_v3().state_dict()      # loads our file strictly: same keys and shapes
    ours = net.state_dict()
    assert list(ours) == list(ref_sd)
    assert all(ours[k].shape == ref_sd[k].shape for k in ours)


def test_pool3_parity_with_torch_fidelity(inception_pth, net, images):
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
    ref = FeatureExtractorInceptionV3('inception-v3-compat', ['2048', 'logits_unbiased'],
                                      feature_extractor_weights_path=inception_pth)
    with torch.no_grad():
        ref_pool, ref_logits = ref(images)
    exact = InceptionExtractor(net, 'x', 'legacy_tf', 'cpu', exact=True)(images, ('pool3', 'logits_unbiased'))
    fused = InceptionExtractor(net, 'x', 'legacy_tf', 'cpu')(images, ('pool3', 'logits_unbiased'))
    assert ref_pool.shape == (2, 2048) and ref_pool.std() > 0.1       # features are not degenerate
    assert (exact['pool3'] - ref_pool).abs().max() <= 1e-5
    assert (fused['pool3'] - ref_pool).abs().max() <= TOL
    assert (fused['logits_unbiased'] - ref_logits).abs().max() <= TOL * ref_logits.abs().max()


def test_pool3_parity_with_pytorch_fid(monkeypatch, inception_pth, net, images):
    ref = _pytorch_fid_model(monkeypatch, inception_pth)
    with torch.no_grad():
        ref_pool = ref(images.float() / 255)[0].squeeze(-1).squeeze(-1)   # pytorch-fid feeds ToTensor() output
    ours = extract_features(images, 'legacy_pytorch', weights=inception_pth)
    assert np.abs(ours - ref_pool.numpy()).max() <= TOL
    tf = InceptionExtractor(net, 'x', 'legacy_tf', 'cpu')(images[:1])['pool3']
    assert (tf[0] - ref_pool[0]).abs().max() > 10 * TOL                # the protocols really differ


def test_extract_features_accepts_nhwc_numpy_and_gray(net, images):
    ext = InceptionExtractor(net, 'x', 'legacy_tf', 'cpu')
    gray = images[:1, :1].expand(2, 3, 64, 64).contiguous()
    batch = torch.cat([images[:1], gray])
    nchw = extract_features(batch, extractor=ext)
    nhwc = extract_features(batch.permute(0, 2, 3, 1).numpy(), extractor=ext, batch_size=1)
    assert nchw.shape == (3, 2048) and nchw.dtype == np.float32
    np.testing.assert_allclose(nchw, nhwc, atol=1e-6)
    one = extract_features(images[:1, :1], extractor=ext)                # [N,1,H,W]: channel repeated
    np.testing.assert_allclose(one[0], nchw[1], atol=1e-6)
    with pytest.raises(ValueError, match='images must be uint8 in \\[0,255\\]; got torch.float32'):
        extract_features(images.float(), extractor=ext)
    with pytest.raises(ValueError, match='extractor protocol legacy_tf differs from the requested clean'):
        extract_features(images, 'clean', extractor=ext)


def test_fuse_is_idempotent_and_drops_batchnorm(net):
    import copy
    net = copy.deepcopy(net).fuse().fuse()
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())
    assert hasattr(net.Mixed_5b, 'merged_heads') and not hasattr(net.Mixed_5b, 'branch1x1')


def test_load_rejects_foreign_state_dict(tmp_path):
    sd = random_inception_state_dict(0)
    sd['extra.weight'] = torch.zeros(1)
    torch.save(sd, tmp_path / 'bad.pth')
    with pytest.raises(ValueError, match='not an FID Inception state_dict: 0 missing keys .* 1 unexpected'):
        load_inception_pth(tmp_path / 'bad.pth')
    sd = random_inception_state_dict(0)
    sd['fc.weight'] = torch.zeros(1000, 2048)
    torch.save(sd, tmp_path / 'bad2.pth')
    with pytest.raises(ValueError, match=r'fc.weight: shape \[1000, 2048\], expected \[1008, 2048\]'):
        load_inception_pth(tmp_path / 'bad2.pth')


def test_loads_files_without_num_batches_tracked(tmp_path):
    sd = {k: v for k, v in random_inception_state_dict(0).items() if not k.endswith('num_batches_tracked')}
    torch.save(sd, tmp_path / 'old.pth')
    net = load_inception_pth(tmp_path / 'old.pth')
    assert torch.equal(net.fc.weight, sd['fc.weight'])


def test_missing_weights_message(tmp_path):
    with pytest.raises(WeightsNotFoundError, match='pt_inception-2015-12-05-6726825d.pth'):
        build_inception(None, download=False)
    with pytest.raises(WeightsNotFoundError, match=r'nope.pth not found.*mseitzer/pytorch-fid'):
        build_inception(str(tmp_path / 'nope.pth'))


class _FakeNvidiaInception(torch.nn.Module):
    """Same call signature as NVIDIA's TorchScript inception-2015-12-05.pt: uint8 in, features or probs out."""

    def __init__(self):
        super().__init__()
        self.layers = torch.nn.Sequential(torch.nn.Conv2d(3, 2048, 3, stride=8), torch.nn.AdaptiveAvgPool2d(1))
        self.output = torch.nn.Linear(2048, 1008)

    def forward(self, img: torch.Tensor, return_features: bool = False, no_output_bias: bool = False):
        x = img.to(torch.float32)
        x = torch.nn.functional.interpolate(x, size=(299, 299), mode='bilinear', align_corners=False)
        f = self.layers((x - 128) / 128).reshape(img.shape[0], 2048)
        if return_features:
            return f
        if no_output_bias:
            return torch.softmax(f @ self.output.weight.t(), dim=1)
        return torch.softmax(self.output(f), dim=1)


def test_torchscript_loader_calls_like_nvidia(tmp_path, images, monkeypatch):
    torch.manual_seed(0)
    module = torch.jit.script(_FakeNvidiaInception())
    path = tmp_path / 'inception-2015-12-05.pt'
    module.save(str(path))
    assert _is_torchscript(path)
    monkeypatch.setenv('PSTYLE_TRUSTED_SHA256', file_sha256(path))   # TorchScript loads only with a known digest.
    ext = build_inception(str(path), 'legacy_tf')
    assert isinstance(ext, TorchScriptInceptionExtractor)
    assert ext.info() == dict(extractor='inception_v3_fid_torchscript', extractor_sha256=file_sha256(path),
                              protocol='legacy_tf')
    out = ext(images, ('pool3', 'probs'))
    with torch.no_grad():
        assert torch.equal(out['pool3'], module(images, return_features=True))
        assert torch.equal(out['probs'], module(images, no_output_bias=True))
    # Other protocols resize outside and call `layers`, as clean-fid does.
    clean = build_inception(str(path), 'clean')(images)
    from pstyle.metrics.resize import preprocess
    with torch.no_grad():
        ref = module.layers(preprocess(images, 'clean')).reshape(2, -1)
    assert torch.equal(clean['pool3'], ref)
    with pytest.raises(ValueError, match='probabilities only under protocol legacy_tf'):
        build_inception(str(path), 'clean')(images, ('probs',))


def test_state_dict_file_is_not_torchscript(inception_pth):
    assert not _is_torchscript(inception_pth)
