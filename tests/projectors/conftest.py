"""Shared fixtures of the projector tests: a tiny perturbed generator, a random-backbone LPIPS, one thread."""

import contextlib
import io

import pytest
import torch

from pstyle.models.networks import Generator


def tiny_generator(seed=1, resolution=16):
    """A 16x16 Generator whose biases, noise strengths and w_avg are non-zero (random init leaves them 0)."""
    torch.manual_seed(seed)
    G = Generator(z_dim=16, w_dim=16, c_dim=0, img_resolution=resolution, img_channels=3,
                  mapping_kwargs=dict(num_layers=2), synthesis_kwargs=dict(channel_base=256, channel_max=32))
    with torch.no_grad():
        for name, t in G.state_dict().items():
            if 'resample_filter' not in name:
                t.add_(0.1 * torch.randn_like(t))
    return G.eval().requires_grad_(False)


@pytest.fixture(scope='module', autouse=True)
def one_thread():
    """Tiny networks run fastest on one thread, and a shared test machine is often oversubscribed."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope='module')
def make_G():
    return tiny_generator


@pytest.fixture(scope='module')
def G():
    return tiny_generator()


@pytest.fixture(scope='module')
def lpips_model():
    from pstyle.metrics.lpips_utils import load_lpips
    torch.manual_seed(0)
    with contextlib.redirect_stdout(io.StringIO()):
        return load_lpips('vgg', 'cpu', allow_random_backbone=True)
