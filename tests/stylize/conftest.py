"""Tiny generator pairs for the stylization tests: A, and B = A perturbed (a stand-in fine-tune)."""

import copy

import pytest
import torch

from pstyle.models.networks import Generator

TINY = dict(z_dim=16, w_dim=16, c_dim=0, img_resolution=32, img_channels=3, mapping_kwargs=dict(num_layers=2),
            synthesis_kwargs=dict(channel_base=512, channel_max=32))


def tiny_G(seed=1, **overrides):
    torch.manual_seed(seed)
    kwargs = copy.deepcopy(TINY)
    for key, value in overrides.items():
        if isinstance(value, dict):
            kwargs[key] = {**kwargs.get(key, {}), **value}
        else:
            kwargs[key] = value
    G = Generator(**kwargs).eval().requires_grad_(False)
    with torch.no_grad():
        for name, tensor in G.state_dict().items():
            if 'resample_filter' not in name:
                tensor.add_(0.05 * torch.randn_like(tensor))  # Non-zero biases, noise strengths, w_avg.
    return G


@torch.no_grad()
def finetuned(G, seed=2, scale=0.3):
    """A copy of G with every tensor moved (noise buffers and w_avg included), so that each tensor
    tells which network it came from."""
    torch.manual_seed(seed)
    G_b = copy.deepcopy(G)
    for name, tensor in G_b.state_dict().items():
        if 'resample_filter' not in name:
            tensor.add_(scale * torch.randn_like(tensor))
    return G_b


@pytest.fixture(scope='module')
def pair():
    G_a = tiny_G()
    return G_a, finetuned(G_a)


@pytest.fixture(scope='session')
def make_G():
    """The factories, for tests that need other configurations: make_G(seed, **overrides), make_G.finetuned(G)."""
    tiny_G.finetuned = finetuned
    return tiny_G
