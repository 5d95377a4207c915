"""FreezeD / FreezeG: NVIDIA's layer numbering, and frozen tensors bit-identical in G, D and G_ema."""

import copy

import numpy as np
import pytest
import torch

from pstyle.models import wplus
from pstyle.training import freeze
from pstyle.models.networks import Discriminator, Generator
from pstyle.training.trainer import Trainer
import pstyle_tests_train_helpers as H  # registered by conftest.py


def tiny_D(**kw):
    return Discriminator(c_dim=0, img_resolution=32, img_channels=3, channel_base=256, channel_max=32, **kw)


@pytest.mark.parametrize('architecture', ['resnet', 'orig', 'skip'])
def test_freezed_matches_nvidia_freeze_layers(architecture):
    D = tiny_D(architecture=architecture)
    total = len(freeze.d_layer_names(D))
    assert total == sum(getattr(D, f'b{r}').num_layers for r in D.block_resolutions)
    for k in range(total + 1):
        # NVIDIA's freeze_layers turns exactly these layers' weights into buffers.
        ref = tiny_D(architecture=architecture, block_kwargs=dict(freeze_layers=k))
        nvidia = sorted(name.rsplit('.', 1)[0] for name, _ in ref.named_buffers() if name.endswith('.weight'))
        assert sorted(freeze.freezed_modules(D, k)) == nvidia, k


def test_freezed_counts_from_the_top_resolution():
    D = tiny_D()
    assert freeze.freezed_modules(D, 3) == ['b32.fromrgb', 'b32.conv0', 'b32.conv1']
    assert freeze.freezed_modules(D, 5)[-1] == 'b16.conv0'


def test_freezeg_names():
    G = Generator(z_dim=8, c_dim=0, w_dim=8, img_resolution=32, img_channels=3,
                  mapping_kwargs=dict(num_layers=2), synthesis_kwargs=dict(channel_base=256, channel_max=32))
    assert freeze.freezeg_modules(G, 8) == ['synthesis.b4', 'synthesis.b8']
    assert freeze.freezeg_modules(G, 0, mapping=True) == ['mapping']
    assert freeze.freezeg_modules(G, 32, mapping=True)[-2:] == ['synthesis.b32', 'mapping']


@pytest.mark.parametrize('call, message', [
    (lambda: freeze.freezed_modules(tiny_D(), 99), r'--freezed must be between 0 and 10 '),
    (lambda: freeze.freezeg_modules(Generator(8, 0, 8, 32, 3, synthesis_kwargs=dict(channel_base=256, channel_max=32)), 12),
     r'--freezeg must be one of the generator resolutions \[4, 8, 16, 32\]'),
    (lambda: freeze.freeze_modules(tiny_D(), ['b64.conv0']), r"Discriminator has no modules \['b64.conv0'\]"),
])
def test_bad_freeze_arguments(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_frozen_tensors_stay_bit_identical():
    cfg = H.tiny_cfg(freezed=3, freezeg=8, freezeg_mapping=True, resume='source')
    torch.manual_seed(0)
    G = Generator(**cfg['G_kwargs'])
    D = Discriminator(**cfg['D_kwargs'])
    G_ema = copy.deepcopy(G)
    with torch.no_grad():  # A fine-tuning source whose G_ema differs from its G.
        for p in G_ema.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    source = dict(G=G, D=D, G_ema=G_ema)
    t = Trainer(cfg, 'cpu', np.zeros([16, 0], np.float32), source=source, log=lambda m: None)
    assert t.frozen['D'] == ['b16.fromrgb.weight', 'b16.fromrgb.bias', 'b16.conv0.weight', 'b16.conv0.bias',
                             'b16.conv1.weight', 'b16.conv1.bias']
    assert all(n.startswith(('synthesis.b4.', 'synthesis.b8.', 'mapping.')) for n in t.frozen['G'])
    refs = {k: freeze.snapshot_tensors(net, t.frozen['D' if k == 'D' else 'G'])
            for k, net in t.networks().items()}
    w_avg = t.G.mapping.w_avg.clone()
    before = {k: copy.deepcopy(net.state_dict()) for k, net in t.networks().items()}
    img = torch.randint(0, 256, [4, 3, 16, 16], dtype=torch.uint8)
    for _ in range(4):  # Gmain, Greg, Dmain, Dreg all run.
        t.step(img, torch.zeros([4, 0]))
    for key, net in t.networks().items():
        freeze.assert_unchanged(net, refs[key])
        assert refs[key] and torch.equal(refs[key][next(iter(refs[key]))], before[key][next(iter(refs[key]))])
        moved = H.state_diff(before[key], net.state_dict())
        assert any(n.startswith(('synthesis.b16', 'b8', 'b4')) for n in moved), key  # the rest trains
    assert torch.equal(t.G.mapping.w_avg, w_avg)  # frozen mapping: w_avg stays the source's
    assert H.state_diff(dict(G_ema.named_parameters()), dict(t.G_ema.named_parameters())) != []
    with pytest.raises(AssertionError, match='frozen tensors changed'):
        freeze.assert_unchanged(t.G, {'synthesis.b16.conv1.weight': before['G']['synthesis.b16.conv1.weight']})


@pytest.mark.parametrize('architecture', ['skip', 'orig', 'resnet'])
def test_freezeg_through_the_table_freezes_the_same_tensors_as_before(architecture):
    G = Generator(z_dim=8, c_dim=0, w_dim=8, img_resolution=32, img_channels=3, mapping_kwargs=dict(num_layers=2),
                  synthesis_kwargs=dict(channel_base=256, channel_max=32, architecture=architecture))
    for res in G.synthesis.block_resolutions:
        before = [f'synthesis.b{r}' for r in G.synthesis.block_resolutions if r <= res]   # the old derivation
        assert freeze.freezeg_modules(G, res) == before
        frozen = freeze.freeze_modules(copy.deepcopy(G), freeze.freezeg_modules(G, res))
        owned = wplus.select_params(G, f'res:4-{res}')   # the rows' owned tensors: the same parameters
        assert sorted(frozen) == sorted(owned)
