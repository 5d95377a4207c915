"""Fixtures for the metrics tests: random Inception weights in the real file layout, tiny image sets."""

import os

import numpy as np
import pytest
import torch
from PIL import Image

from pstyle.metrics.features import FeatureExtractor


@pytest.fixture(scope='session')
def inception_pth(tmp_path_factory):
    """Random weights saved exactly like `pt_inception-2015-12-05-6726825d.pth` (a plain state_dict)."""
    from pstyle.metrics.inception import random_inception_state_dict
    path = tmp_path_factory.mktemp('weights') / 'random_pt_inception.pth'
    torch.save(random_inception_state_dict(seed=0), path)
    return str(path)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    """Never touch the user's cache or download anything from a test."""
    monkeypatch.setenv('PSTYLE_CACHE_DIR', str(tmp_path / 'cache'))
    monkeypatch.setenv('PSTYLE_OFFLINE', '1')


def make_images(n, size=48, offset=0, seed=0):
    """n smooth-plus-noise RGB images (uint8 HWC) so that features differ between sets."""
    rs = np.random.RandomState(seed)
    ramp = np.linspace(0, 255, size)[None, :, None] * np.ones((size, size, 3))
    return [np.clip(0.5 * ramp + rs.randint(0, 128, (size, size, 3)) + offset, 0, 255).astype(np.uint8)
            for _ in range(n)]


def write_folder(folder, images, ext='png'):
    os.makedirs(folder, exist_ok=True)
    for i, img in enumerate(images):
        Image.fromarray(img).save(os.path.join(folder, f'{i:03d}.{ext}'))
    return str(folder)


@pytest.fixture(scope='session')
def imgtools():
    """`make_images` and `write_folder` for tests (conftest modules are not importable in importlib mode)."""
    import types
    return types.SimpleNamespace(make_images=make_images, write_folder=write_folder)


@pytest.fixture
def image_sets(tmp_path):
    """Two folders of 6 images each (48x48), clearly different distributions."""
    a = write_folder(tmp_path / 'real', make_images(6, seed=1))
    b = write_folder(tmp_path / 'fake', make_images(6, offset=60, seed=2))
    return a, b


class CountingExtractor(FeatureExtractor):
    """A cheap stand-in for the Inception extractor (same interface) that counts the images it sees."""

    def __init__(self, protocol='legacy_tf', seed=0):
        super().__init__('counting_fake', 'f' * 64, protocol, torch.device('cpu'), ('pool3', 'logits_unbiased', 'fc2'))
        g = torch.Generator().manual_seed(seed)
        self.proj = torch.randn(3 * 8 * 8, 2048, generator=g) / 8
        self.cls = torch.randn(2048, 1008, generator=g) / 20
        self.seen = 0

    def __call__(self, images, features=('pool3',)):
        assert images.dtype == torch.uint8 and images.ndim == 4 and images.shape[1] == 3
        self.seen += len(images)
        x = torch.nn.functional.adaptive_avg_pool2d(images.float() / 255, 8).flatten(1)
        pool3 = torch.relu(x @ self.proj)
        out = dict(pool3=pool3, logits_unbiased=pool3 @ self.cls, fc2=pool3)
        return {k: out[k] for k in features}


@pytest.fixture
def counting_extractor():
    return CountingExtractor()
