"""Metric names of the training loop and the pixel proxy extractor."""

import json

import pytest
import torch

from pstyle.training.launch import train
from pstyle.datasets.synthetic import make_shapes_dataset
from pstyle.training.train_config import TrainOptions
from pstyle.training.train_metrics import PixelFeatureExtractor, parse_metric


@pytest.mark.parametrize('name, expected', [
    ('fid50k_full', dict(metrics=['fid'], num_gen=50000, max_real=None, proxy=False)),
    ('fid50k', dict(metrics=['fid'], num_gen=50000, max_real=50000, proxy=False)),
    ('kid2k_full', dict(metrics=['kid'], num_gen=2000, max_real=None, proxy=False)),
    ('pr50k3_full', dict(metrics=['pr'], num_gen=50000, max_real=None, proxy=False)),
    ('is50k', dict(metrics=['is'], num_gen=50000, max_real=None, proxy=False)),
    ('proxyfid1k_full', dict(metrics=['fid'], num_gen=1000, max_real=None, proxy=True)),
])
def test_parse_metric(name, expected):
    assert parse_metric(name) == expected


@pytest.mark.parametrize('name', ['fid', 'fid50', 'ppl_zend', 'fid50k_fulll', ''])
def test_parse_metric_rejects(name):
    with pytest.raises(ValueError, match='unknown training metric'):
        parse_metric(name)


def test_proxy_features_separate_distributions():
    ext = PixelFeatureExtractor('clean', 'cpu')
    a = torch.randint(0, 128, [8, 3, 16, 16], dtype=torch.uint8)
    f = ext(a)['pool3']
    assert f.shape == (8, 192 + 16 + 24) and torch.equal(f, ext(a)['pool3'])
    assert not torch.equal(f, ext(a + 100)['pool3'])


def test_proxy_metric_during_training(tmp_path, monkeypatch):
    monkeypatch.setenv('PSTYLE_CACHE_DIR', str(tmp_path / 'cache'))
    data = make_shapes_dataset(tmp_path / 'shapes', num_images=8, resolution=16)
    snap = train(TrainOptions(outdir=str(tmp_path / 'runs'), data=str(data), cfg='tiny', batch=4, mbstd=2, kimg=0.004,
                              kimg_per_tick=0.004, grid=(1, 1), workers=0, device='cpu', metrics=('proxyfid1k_full',)),
                 echo=False)
    lines = (snap.parent / 'metric-proxyfid1k_full.jsonl').read_text().splitlines()
    result = json.loads(lines[-1])
    assert result['proxy_fid'] > 0 and result['extractor'] == 'pixel_proxy_v1' and result['kimg'] == 0.004
    assert 'fid' not in result
