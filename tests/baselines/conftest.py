"""Networks rebuilt from tests/fixtures/baselines_recipe.json (see tests/fixtures/README.md), saved as the
published files are, and the reference images."""

import json
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from pstyle.baselines.vgg import VGG19


def rebuild(recipe):
    """{name: [shape, [rule, a, b]]} -> {name: tensor}, seeded per name with zlib.crc32(name)."""
    out = {}
    for name, (shape, (kind, a, b)) in recipe.items():
        g = torch.Generator().manual_seed(zlib.crc32(name.encode()))
        if kind == 'zeros':
            out[name] = torch.zeros(shape, dtype=torch.int64 if name.endswith('num_batches_tracked') else torch.float32)
        elif kind == 'uniform':
            out[name] = a + (b - a) * torch.rand(shape, generator=g)
        elif kind == 'normal':
            out[name] = a + b * torch.randn(shape, generator=g)
        else:
            raise ValueError(f'unknown rule {kind!r} for {name}')
    return out


@pytest.fixture(scope='session')
def recipe(fixtures):
    return json.loads((fixtures / 'baselines_recipe.json').read_text())


@pytest.fixture(scope='session')
def ref(fixtures):
    with np.load(fixtures / 'baselines_ref.npz') as data:
        return {k: data[k] for k in data.files}


@pytest.fixture(scope='session')
def published(recipe, ref, tmp_path_factory):
    """The fixture's networks as the published files (vgg_normalised.pth, decoder.pth, latest_net_G.pth)
    and its images as PNG files."""
    root = tmp_path_factory.mktemp('published')
    files = dict(vgg=root / 'vgg_normalised.pth', decoder=root / 'decoder.pth', cyclegan=root / 'latest_net_G.pth')
    torch.save(rebuild(recipe['adain_vgg_recipe']), files['vgg'])
    torch.save(rebuild(recipe['adain_decoder_recipe']), files['decoder'])
    torch.save(rebuild(recipe['cyclegan_G_recipe']), files['cyclegan'])
    for key in ('content', 'style', 'style2'):
        files[key] = root / f'{key}.png'
        Image.fromarray(ref[key][0]).save(files[key])
    return files


@pytest.fixture
def assert_parity():
    return _assert_parity


def _assert_parity(out, expected, max_diff=2, mean_diff=0.75):
    """uint8 images equal within `max_diff` grey levels, mean absolute difference below `mean_diff`."""
    out, expected = np.asarray(out).astype(np.int32), np.asarray(expected).astype(np.int32)
    assert out.shape == expected.shape, (out.shape, expected.shape)
    diff = np.abs(out - expected)
    assert diff.max() <= max_diff and diff.mean() < mean_diff, f'max {diff.max()}, mean {diff.mean():.4f}'
    return diff


def random_vgg19(seed=0, dtype=torch.float32):
    """torchvision's VGG19 layout with random but deterministic weights (He-normal, so activations keep
    their scale through 16 layers)."""
    vgg = VGG19()
    g = torch.Generator().manual_seed(seed)
    for m in vgg.features:
        if isinstance(m, torch.nn.Conv2d):
            m.weight.data = torch.randn(m.weight.shape, generator=g) * (2 / m.weight[0].numel()) ** 0.5
            m.bias.data = torch.randn(m.bias.shape, generator=g) * 0.01
    return vgg.to(dtype).eval().requires_grad_(False)


@pytest.fixture(scope='session')
def vgg():
    return random_vgg19()


@pytest.fixture(scope='session')
def vgg64():
    return random_vgg19(dtype=torch.float64)


@pytest.fixture
def image():
    return random_image


def random_image(seed, h, w):
    """A smooth random RGB image (PIL): low-frequency noise, upsampled, so that VGG features vary."""
    rng = np.random.RandomState(seed)
    small = rng.randint(0, 256, (max(2, h // 4), max(2, w // 4), 3)).astype(np.uint8)
    return Image.fromarray(small).resize((w, h), Image.BILINEAR)
