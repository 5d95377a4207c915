"""Tiny generator pairs for the stylization tests: A, and B = A perturbed (a stand-in fine-tune)."""


import pytest


STYLIZE_G = dict(resolution=32, perturb=0.05, synthesis_kwargs=dict(channel_base=512))


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
    make.finetuned = tiny_network_factory.finetuned
    return make


@pytest.fixture(scope='module')
def pair(make_G):
    G_a = make_G()
    return G_a, make_G.finetuned(G_a)
