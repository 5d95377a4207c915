"""Tiny generator pairs for the stylization tests: A, and B = A perturbed (a stand-in fine-tune)."""

import copy

import pytest
import torch


STYLIZE_G = dict(resolution=32, perturb=0.05, synthesis_kwargs=dict(channel_base=512))


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


@pytest.fixture(scope='session')
def make_G(tiny_network_factory):
    """The root factory at the stylization tests' size (32x32, channel_base 512, moved by 0.05):
    make_G(seed, **overrides), and make_G.finetuned(G) for a stand-in fine-tune."""
    def make(seed=1, **overrides):
        kwargs = {**STYLIZE_G, **overrides}
        kwargs['synthesis_kwargs'] = {**STYLIZE_G['synthesis_kwargs'], **overrides.get('synthesis_kwargs', {})}
        if 'img_resolution' in kwargs:
            kwargs['resolution'] = kwargs.pop('img_resolution')
        return tiny_network_factory(seed, **kwargs)
    make.finetuned = finetuned
    return make


@pytest.fixture(scope='module')
def pair(make_G):
    G_a = make_G()
    return G_a, finetuned(G_a)
