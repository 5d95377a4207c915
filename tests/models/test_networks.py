"""Networks: NVIDIA state_dict layout, fixture parity from raw tensors, architectures, determinism."""

import json

import numpy as np
import pytest
import torch

from pstyle.models.networks import Discriminator, Generator
from pstyle.models import wplus

FIXTURE_G = dict(z_dim=32, w_dim=32, c_dim=0, img_resolution=32, img_channels=3,
                 mapping_kwargs=dict(num_layers=2),
                 synthesis_kwargs=dict(channel_base=1024, channel_max=64, num_fp16_res=0, conv_clamp=256, architecture='skip'))
FIXTURE_D = dict(c_dim=0, img_resolution=32, img_channels=3, architecture='resnet', channel_base=1024, channel_max=64,
                 conv_clamp=256, epilogue_kwargs=dict(mbstd_group_size=2))


def tiny_G(**kw):
    args = dict(z_dim=16, w_dim=16, c_dim=0, img_resolution=16, img_channels=3, mapping_kwargs=dict(num_layers=2),
                synthesis_kwargs=dict(channel_base=256, channel_max=32))
    args.update(kw)
    return Generator(**args)


def load_fixture_networks(fixtures):
    ref = np.load(fixtures / 'nvlabs_uncond32.npz')
    G, D = Generator(**FIXTURE_G).eval(), Discriminator(**FIXTURE_D).eval()
    for prefix, net in [('G_ema', G), ('D', D)]:
        state = {k[len(f'param/{prefix}.'):]: torch.from_numpy(ref[k]) for k in ref.files if k.startswith(f'param/{prefix}.')}
        net.load_state_dict(state, strict=True)
    return G, D, ref


def test_state_dict_keys_and_shapes_match_nvidia(fixtures):
    spec = json.loads((fixtures / 'nvlabs_uncond32_keys.json').read_text())['state_dict_shapes']
    G, D = Generator(**FIXTURE_G), Discriminator(**FIXTURE_D)
    ours = {f'G_ema.{k}': list(v.shape) for k, v in G.state_dict().items()}
    ours.update({f'D.{k}': list(v.shape) for k, v in D.state_dict().items()})
    assert list(ours) == [k for k in spec if k.split('.')[0] in ('G_ema', 'D')]
    assert ours == {k: v for k, v in spec.items() if k.split('.')[0] in ('G_ema', 'D')}


def test_fixture_parity_from_raw_tensors(fixtures):
    G, D, ref = load_fixture_networks(fixtures)
    z, c = torch.from_numpy(ref['z']), torch.from_numpy(ref['c'])
    with torch.no_grad():
        ws = G.mapping(z, c, truncation_psi=1)
        assert (ws - torch.from_numpy(ref['ws_psi1'])).abs().max() <= 1e-4
        ws_cut = G.mapping(z, c, truncation_psi=0.5, truncation_cutoff=4)
        assert (ws_cut - torch.from_numpy(ref['ws_psi05_cut4'])).abs().max() <= 1e-4
        img = G(z, c, truncation_psi=1, noise_mode='const')
        assert (img - torch.from_numpy(ref['img_psi1_const'])).abs().max() <= 1e-3
        img07 = G(z, c, truncation_psi=0.7, noise_mode='none')
        assert (img07 - torch.from_numpy(ref['img_psi07_none'])).abs().max() <= 1e-3
        mixed = G.synthesis(torch.from_numpy(ref['ws_mixed']), noise_mode='const')
        assert (mixed - torch.from_numpy(ref['img_mixed_const'])).abs().max() <= 1e-3
        logits = D(torch.from_numpy(ref['img_psi1_const']), c)
        assert (logits - torch.from_numpy(ref['d_logits_real'])).abs().max() <= 1e-3


def test_fixture_parity_batch_one_uses_fused_path(fixtures):
    # Batch 1 takes the fused (grouped) modulated convolution; both forms must agree with NVIDIA.
    G, _, ref = load_fixture_networks(fixtures)
    with torch.no_grad():
        for i in range(2):
            img = G(torch.from_numpy(ref['z'][i:i + 1]), torch.zeros([1, 0]), noise_mode='const')
            assert (img - torch.from_numpy(ref['img_psi1_const'][i:i + 1])).abs().max() <= 1e-3


@pytest.mark.parametrize('g_arch', ['orig', 'skip', 'resnet'])
@pytest.mark.parametrize('d_arch', ['orig', 'skip', 'resnet'])
def test_architectures_run_and_backprop(g_arch, d_arch):
    torch.manual_seed(0)
    G = tiny_G(synthesis_kwargs=dict(channel_base=256, channel_max=32, architecture=g_arch))
    D = Discriminator(c_dim=0, img_resolution=16, img_channels=3, architecture=d_arch, channel_base=256, channel_max=32)
    img = G(torch.randn(4, 16), torch.zeros(4, 0))
    assert img.shape == (4, 3, 16, 16) and torch.isfinite(img).all()
    logits = D(img, torch.zeros(4, 0))
    assert logits.shape == (4, 1)
    logits.sum().backward()
    grads = [p.grad for p in G.parameters() if p.requires_grad]
    assert all(g is not None for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0


@pytest.mark.parametrize('d_arch', ['orig', 'resnet'])
def test_networks_run_under_autocast(d_arch):
    """Users wrap G and D in torch.autocast: the mapping's and D's layers must take the autocast dtype of
    their matmuls and convolutions (a float32 bias beside a bf16 product was an error)."""
    torch.manual_seed(0)
    G = tiny_G(c_dim=3)
    D = Discriminator(c_dim=3, img_resolution=16, img_channels=3, architecture=d_arch, channel_base=256, channel_max=32)
    z, c = torch.randn(2, 16), torch.eye(3)[[0, 2]]
    with torch.autocast('cpu', dtype=torch.bfloat16):
        img = G(z, c, noise_mode='const')
        logits = D(img, c)
    assert logits.shape == (2, 1) and torch.isfinite(logits.float()).all()
    logits.float().sum().backward()
    assert G.mapping.fc0.weight.grad is not None and D.b16.conv0.weight.grad is not None
    with torch.no_grad():
        ref = G(z, c, noise_mode='const')
    # bf16 rounding, not a different network: relative to the image's scale, since emulated bf16 (CPUs
    # without AVX-512 BF16) rounds differently from native bf16 and the max error grows with |img|.
    err = (img.float() - ref).abs()
    assert err.mean() < 0.03 * ref.abs().mean() and err.max() < 0.15 * ref.abs().max()


def test_conditional_networks_use_labels():
    torch.manual_seed(0)
    G = tiny_G(c_dim=5)
    D = Discriminator(c_dim=5, img_resolution=16, img_channels=3, channel_base=256, channel_max=32)
    assert 'mapping.embed.weight' in G.state_dict() and 'mapping.embed.weight' in D.state_dict()
    z = torch.randn(2, 16)
    c0, c1 = torch.eye(5)[[0, 0]], torch.eye(5)[[3, 3]]
    G.eval()
    with torch.no_grad():
        assert not torch.allclose(G(z, c0, noise_mode='const'), G(z, c1, noise_mode='const'))
        img = G(z, c0, noise_mode='const')
        assert not torch.allclose(D(img, c0), D(img, c1))


def test_init_kwargs_rebuild_identical_network():
    G = tiny_G(c_dim=3)
    json.dumps(G.init_kwargs)  # serialisable as our checkpoint config
    G2 = type(G)(**G.init_kwargs)
    G2.load_state_dict(G.state_dict())
    z, c = torch.randn(2, 16), torch.eye(3)[:2]
    with torch.no_grad():
        assert torch.equal(G.eval()(z, c, noise_mode='const'), G2.eval()(z, c, noise_mode='const'))
    assert G.init_kwargs['mapping_kwargs'] == dict(num_layers=2)


def test_flat_synthesis_kwargs_as_stylegan3_writes_them():
    G = Generator(z_dim=8, c_dim=0, w_dim=8, img_resolution=8, img_channels=3, channel_base=128, channel_max=16)
    assert G.synthesis.channels_dict == {4: 16, 8: 16}


def test_explicit_channel_table():
    G = tiny_G(synthesis_kwargs=dict(channels_dict={4: 24, 8: 20, 16: 12}))
    assert G.synthesis.b16.conv1.weight.shape == (12, 12, 3, 3)
    with pytest.raises(ValueError, match='no entry for resolutions'):
        tiny_G(synthesis_kwargs=dict(channels_dict={4: 24, 8: 20}))
    with pytest.raises(ValueError, match='raise channel_base'):
        tiny_G(synthesis_kwargs=dict(channel_base=8))


def test_batch_size_independence_and_noise_modes():
    torch.manual_seed(0)
    G = tiny_G().eval()
    for block in [G.synthesis.b4, G.synthesis.b8, G.synthesis.b16]:
        for layer in [getattr(block, n) for n in ('conv0', 'conv1') if hasattr(block, n)]:
            layer.noise_strength.data.fill_(0.3)
    z = torch.randn(5, 16)
    c = torch.zeros(5, 0)
    with torch.no_grad():
        full = G(z, c, noise_mode='const')
        single = torch.cat([G(z[i:i + 1], c[:1], noise_mode='const') for i in range(5)])
        assert (full - single).abs().max() < 1e-4
        assert not torch.allclose(G(z, c, noise_mode='const'), G(z, c, noise_mode='none'))
        assert not torch.allclose(G(z, c, noise_mode='random'), G(z, c, noise_mode='random'))


def test_truncation_and_w_avg_tracking():
    G = tiny_G()
    G.mapping.w_avg.fill_(0.5)
    z, c = torch.randn(3, 16), torch.zeros(3, 0)
    with torch.no_grad():
        ws = G.eval().mapping(z, c, truncation_psi=0)
        assert torch.allclose(ws, torch.full_like(ws, 0.5))
        G.train().mapping(z, c)
    assert not torch.allclose(G.mapping.w_avg, torch.full([16], 0.5))


def test_bad_shapes_are_reported():
    G = tiny_G()
    with pytest.raises(AssertionError, match='dimension 1'):
        G.mapping(torch.randn(2, 15), torch.zeros(2, 0))
    with pytest.raises(AssertionError, match='dimension 1'):
        G.synthesis(torch.randn(2, G.num_ws + 1, 16))
    with pytest.raises(AssertionError, match='power of two'):
        tiny_G(img_resolution=24)


def test_bf16_path_close_to_fp32():
    torch.manual_seed(0)
    G = tiny_G().eval()
    ws = G.mapping(torch.randn(4, 16), torch.zeros(4, 0))
    with torch.no_grad():
        ref = G.synthesis(ws, noise_mode='const')
        low = G.synthesis(ws, noise_mode='const', dtype=torch.bfloat16)
    assert low.dtype == torch.float32
    mse = float((ref - low).square().mean())
    psnr = 10 * np.log10(4.0 / mse)  # peak-to-peak range 2 -> peak^2 = 4
    assert psnr > 30, psnr


def test_wplus_table_1024_layout():
    G = Generator(z_dim=8, c_dim=0, w_dim=8, img_resolution=1024, img_channels=3,
                  mapping_kwargs=dict(num_layers=1), synthesis_kwargs=dict(channels_dict={2 ** i: 4 for i in range(2, 11)}))
    table = wplus.layer_table(G)
    assert G.num_ws == 18 == len(table)
    assert [row.resolution for row in table] == [4, 8, 8, 16, 16, 32, 32, 64, 64, 128, 128, 256, 256, 512, 512, 1024, 1024, 1024]
    assert table[0].layers == ('synthesis.b4.conv1',)
    assert table[1].layers == ('synthesis.b8.conv0', 'synthesis.b4.torgb')
    assert table[17].layers == ('synthesis.b1024.torgb',)
    assert 'synthesis.b4.torgb.affine.weight' in table[1].params
    assert wplus.indices_up_to(G, 32) == list(range(7))
    # Every modulated layer is addressed exactly once.
    consumers = [layer for row in table for layer in row.layers]
    assert len(consumers) == len(set(consumers)) == 1 + 2 * 8 + 9
    assert 'index' in wplus.format_table(G)


def test_wplus_table_matches_what_synthesis_reads():
    # Perturbing row i must change exactly the layers the table names (checked via their styles).
    torch.manual_seed(0)
    G = tiny_G().eval()
    ws = G.mapping(torch.randn(1, 16), torch.zeros(1, 0)).detach()
    for row in wplus.layer_table(G):
        seen = set()
        hooks = []
        for name, module in G.synthesis.named_modules():
            if name.endswith('affine'):
                hooks.append(module.register_forward_hook(
                    lambda m, inp, out, name=name: seen.add(name[:-len('.affine')]) if float(inp[0].abs().max()) > 50 else None))
        bumped = ws.clone()
        bumped[:, row.index] = 100.0
        with torch.no_grad():
            G.synthesis(bumped, noise_mode='const')
        for h in hooks:
            h.remove()
        assert {f'synthesis.{n}' for n in seen} == set(row.layers)


@pytest.mark.parametrize('arch', ['skip', 'resnet'])
def test_inference_fast_path_matches_autograd_path(arch):
    # The no-grad CPU path (matmul demodulation, folded epilogue) must equal the differentiable one.
    torch.manual_seed(0)
    G = tiny_G(synthesis_kwargs=dict(channel_base=256, channel_max=32, architecture=arch, conv_clamp=0.5)).eval()
    for name, p in G.named_parameters():
        if name.endswith('noise_strength') or name.endswith('.bias'):
            p.data.normal_(0, 0.3)
    ws = G.mapping(torch.randn(3, 16), torch.zeros(3, 0)).detach()
    for channels_last in [False, True]:
        slow = G.synthesis(ws, noise_mode='const', fused_modconv=False, channels_last=channels_last)
        with torch.no_grad():
            fast = G.synthesis(ws, noise_mode='const', fused_modconv=False, channels_last=channels_last)
            fused = G.synthesis(ws, noise_mode='const', fused_modconv=True, channels_last=channels_last)
        assert (fast - slow).abs().max() < 1e-5
        assert (fused - slow).abs().max() < 1e-5
