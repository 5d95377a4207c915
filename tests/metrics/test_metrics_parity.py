"""End-to-end parity of the API with torch-fidelity 0.4.0, clean-fid 0.1.35 and pytorch-fid 0.3.0.

All implementations read the same image folders and the same Inception weight file (random weights in
the exact layout of pt_inception-2015-12-05-6726825d.pth).
"""

import hashlib
import json

import numpy as np
import pytest
import torch

from pstyle.metrics.api import compute_metrics, source_features
from pstyle.metrics.features import InceptionExtractor
from pstyle.metrics.fid_kid import FeatureStats
from pstyle.metrics.inception import load_inception_pth
from pstyle.metrics.inputs import open_images


@pytest.mark.slow
def test_fid_kid_is_parity_with_torch_fidelity(inception_pth, tmp_path, imgtools):
    import torch_fidelity
    real = imgtools.write_folder(tmp_path / 'r', imgtools.make_images(4, seed=1))
    fake = imgtools.write_folder(tmp_path / 'f', imgtools.make_images(4, offset=60, seed=2))
    results = tmp_path / 'results.jsonl'
    out = compute_metrics('fid,kid,is', real=real, fake=fake, inception_weights=inception_pth, kid_subsets=10,
                          kid_subset_size=3, is_splits=2, num_workers=0, results_file=str(results), device='cpu')
    ref = torch_fidelity.calculate_metrics(input1=fake, input2=real, fid=True, kid=True, isc=True, kid_subsets=10,
                                           kid_subset_size=3, isc_splits=2, cuda=False, verbose=False, cache=False,
                                           feature_extractor_weights_path=inception_pth, save_cpu_ram=True)
    assert out['fid'] == pytest.approx(ref['frechet_inception_distance'], rel=1e-4)
    assert out['kid_mean'] == pytest.approx(ref['kernel_inception_distance_mean'], rel=1e-4)
    assert out['kid_std'] == pytest.approx(ref['kernel_inception_distance_std'], rel=1e-4)
    assert out['is_mean'] == pytest.approx(ref['inception_score_mean'], rel=1e-4)
    assert out['fid'] > 1                                  # the two sets differ
    # Every record is stamped.
    lines = [json.loads(line) for line in results.read_text().splitlines()]
    assert [r['metric'] for r in lines] == ['fid', 'kid', 'is']
    for r in lines:
        assert r['protocol'] == 'legacy_tf' and r['extractor'] == 'inception_v3_fid'
        assert r['extractor_sha256'] == hashlib.sha256(open(inception_pth, 'rb').read()).hexdigest()
        assert r['num_gen'] == 4 and r['seed'] == 2020 and r['versions']['torch'] == torch.__version__
        assert r['versions']['portrait_stylegan'] and r['versions']['numpy'] == np.__version__
        assert r['real']['num_items'] == 4 and r['generated']['path'] == fake
    assert lines[0]['num_real'] == 4 and lines[1]['kid_subset_size'] == 3
    assert lines[0]['results'] == dict(fid=out['fid'])


def test_clean_protocol_parity_with_clean_fid(inception_pth, tmp_path, imgtools):
    from cleanfid.fid import get_folder_features
    folder = imgtools.write_folder(tmp_path / 'r', imgtools.make_images(3, size=40, seed=3))
    net = load_inception_pth(inception_pth)
    # clean-fid's own pipeline (file reading, PIL bicubic on float, (x-128)/128) around the same network.
    ref = get_folder_features(folder, model=lambda x: net((x - 128) / 128)['pool3'], mode='clean', num_workers=0,
                              device=torch.device('cpu'), verbose=False)
    ours = source_features(open_images(folder), InceptionExtractor(net, 'x', 'clean', 'cpu'), ('pool3',),
                           num_workers=0, use_cache=False)['pool3']
    assert ref.shape == ours.shape == (3, 2048)
    assert np.abs(ours - ref).max() <= 1e-4


def test_legacy_pytorch_parity_with_pytorch_fid(monkeypatch, inception_pth, tmp_path, imgtools):
    import pytorch_fid.inception as pi
    from pytorch_fid.fid_score import compute_statistics_of_path
    monkeypatch.setattr(pi, 'load_state_dict_from_url', lambda *a, **k: torch.load(inception_pth, weights_only=True))
    real = imgtools.write_folder(tmp_path / 'r', imgtools.make_images(3, size=40, seed=4))
    fake = imgtools.write_folder(tmp_path / 'f', imgtools.make_images(3, size=40, offset=60, seed=5))
    model = pi.InceptionV3([3]).eval()
    mu1, s1 = compute_statistics_of_path(fake, model, 50, 2048, 'cpu', num_workers=0)
    mu2, s2 = compute_statistics_of_path(real, model, 50, 2048, 'cpu', num_workers=0)
    ext = InceptionExtractor(load_inception_pth(inception_pth), 'x', 'legacy_pytorch', 'cpu')
    ours = {k: source_features(open_images(p), ext, ('pool3',), num_workers=0, use_cache=False)['pool3']
            for k, p in (('fake', fake), ('real', real))}
    for name, mu, sigma in (('fake', mu1, s1), ('real', mu2, s2)):
        m, c = FeatureStats.from_features(ours[name]).mean_cov()
        assert np.abs(m - mu).max() <= 1e-4 and np.abs(c - sigma).max() <= 1e-4 * np.abs(sigma).max()
    assert np.abs(mu1 - mu2).max() > 1e-2                  # the sets differ
    # pytorch-fid's FID (scipy sqrtm) on these statistics vs ours: sqrtm of a 2048x2048 rank-2 product
    # costs ~20 s CPU and is only accurate to ~1e-3 here, so that comparison lives in test_metrics_fid_kid.
