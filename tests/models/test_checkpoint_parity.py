"""Exact parity with the original implementations on the reference fixtures (tests/fixtures: the original code's outputs, kept in the repo)."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from pstyle.models.checkpoint import load_network
from pstyle.models.convert_rosinality import export_rosinality, generator_to_rosinality

WS_TOL = 1e-4
IMG_TOL = 1e-3


def _max_err(a, b):
    a = a.detach().numpy() if isinstance(a, torch.Tensor) else a
    return float(np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)).max())


# ----------------------------------------------------------------------------
# NVIDIA stylegan2-ada-pytorch snapshot.

@pytest.fixture(scope='module')
def nvlabs(fixtures):
    return load_network(fixtures / 'nvlabs_uncond32.pkl'), np.load(fixtures / 'nvlabs_uncond32.npz')


def test_nvlabs_format_and_networks(nvlabs):
    nets, _ = nvlabs
    assert nets['format'] == 'nvidia-pickle'
    assert {'G', 'D', 'G_ema'} <= set(nets)
    G = nets['G_ema']
    assert (G.z_dim, G.w_dim, G.c_dim, G.img_resolution, G.num_ws) == (32, 32, 0, 32, 8)
    pipe = nets['augment_pipe']  # Our AugmentPipe, or its config when training/augment.py cannot build it.
    assert (pipe['p'] if isinstance(pipe, dict) else float(pipe.p)) == 1.0
    assert (pipe['init_kwargs'] if isinstance(pipe, dict) else pipe.init_kwargs)['xflip'] == 1


def test_nvlabs_state_dict_keys_and_shapes(nvlabs, fixtures):
    nets, _ = nvlabs
    ref = json.loads((fixtures / 'nvlabs_uncond32_keys.json').read_text())['state_dict_shapes']
    ours = {f'{name}.{k}': list(v.shape) for name in ('G_ema', 'D') for k, v in nets[name].state_dict().items()}
    assert list(ours) == list(ref)  # Same names in the same order.
    assert ours == ref


def test_nvlabs_every_param_equal(nvlabs):
    nets, ref = nvlabs
    keys = [k for k in ref.files if k.startswith('param/')]
    assert len(keys) > 100
    for key in keys:
        name, _, tensor_name = key[len('param/'):].partition('.')
        ours = nets[name].state_dict()[tensor_name]
        assert np.array_equal(ours.numpy(), ref[key]), key


@torch.no_grad()
def test_nvlabs_mapping(nvlabs):
    nets, ref = nvlabs
    G = nets['G_ema']
    z, c = torch.from_numpy(ref['z']), torch.from_numpy(ref['c'])
    assert _max_err(G.mapping(z, c, truncation_psi=1), ref['ws_psi1']) <= WS_TOL
    assert _max_err(G.mapping(z, c, truncation_psi=0.5, truncation_cutoff=4), ref['ws_psi05_cut4']) <= WS_TOL


@torch.no_grad()
def test_nvlabs_images_and_logits(nvlabs):
    nets, ref = nvlabs
    G, D = nets['G_ema'], nets['D']
    z, c = torch.from_numpy(ref['z']), torch.from_numpy(ref['c'])
    assert _max_err(G(z, c, truncation_psi=1, noise_mode='const'), ref['img_psi1_const']) <= IMG_TOL
    assert _max_err(G(z, c, truncation_psi=0.7, noise_mode='none'), ref['img_psi07_none']) <= IMG_TOL
    assert _max_err(G.synthesis(torch.from_numpy(ref['ws_mixed']), noise_mode='const'), ref['img_mixed_const']) <= IMG_TOL
    assert _max_err(D(torch.from_numpy(ref['img_psi1_const']), c), ref['d_logits_real']) <= IMG_TOL


# ----------------------------------------------------------------------------
# TensorFlow StyleGAN2 pickle.

@pytest.fixture(scope='module')
def tf16(fixtures):
    return load_network(fixtures / 'tf_uncond16.pkl'), np.load(fixtures / 'tf_uncond16_ref.npz')


def test_tf_config_from_shapes(tf16):
    nets, _ = tf16
    assert nets['format'] == 'tf-pickle'
    G, D = nets['G_ema'], nets['D']
    # fmap_base 512 in TF (nf = 2 * fmap_base / res) is channel_base 1024 here (channels = base / res).
    assert G.init_kwargs['synthesis_kwargs']['channel_base'] == 1024
    assert G.synthesis.channels_dict == {4: 96, 8: 96, 16: 64}
    assert (G.img_resolution, G.num_ws, G.mapping.num_layers) == (16, 6, 2)
    assert D.b4.mbstd.group_size == 2


@torch.no_grad()
def test_tf_images_and_logits(tf16):
    nets, ref = tf16
    z = torch.from_numpy(ref['z'])
    for key in ('G_ema', 'G'):  # The fixture's G and Gs hold the same weights.
        G = nets[key]
        assert _max_err(G(z, None, noise_mode='const'), ref['img_const']) <= IMG_TOL
        assert _max_err(G(z, None, truncation_psi=0.6, noise_mode='const'), ref['img_psi06_const']) <= IMG_TOL
    assert _max_err(nets['D'](torch.from_numpy(ref['img_const']), None), ref['d_logits']) <= IMG_TOL


# ----------------------------------------------------------------------------
# rosinality stylegan2-pytorch checkpoint.

@pytest.fixture(scope='module')
def ros32(fixtures):
    return load_network(fixtures / 'rosinality_32.pt'), np.load(fixtures / 'rosinality_32_ref.npz')


def test_rosinality_custom_channel_table(ros32):
    nets, ref = ros32
    G = nets['G_ema']
    assert nets['format'] == 'rosinality'
    assert G.synthesis.channels_dict == {4: 64, 8: 64, 16: 48, 32: 32}
    assert G.mapping.num_layers == 3
    assert np.array_equal(G.mapping.w_avg.numpy(), ref['mean_latent'][0])


@torch.no_grad()
def test_rosinality_mapping_and_images(ros32):
    nets, ref = ros32
    G = nets['G_ema']
    z, z2 = torch.from_numpy(ref['z']), torch.from_numpy(ref['z2'])
    ws = G.mapping(z, None)
    assert _max_err(ws, np.repeat(ref['w'][:, None], G.num_ws, axis=1)) <= WS_TOL
    assert _max_err(G.synthesis(ws, noise_mode='const'), ref['img']) <= IMG_TOL
    # rosinality truncates every layer toward latent_avg: psi with cutoff None, w_avg = latent_avg.
    ws_t = G.mapping(z, None, truncation_psi=0.6)
    assert _max_err(ws_t, ref['latents_trunc06']) <= WS_TOL
    assert _max_err(G.synthesis(ws_t, noise_mode='const'), ref['img_trunc06']) <= IMG_TOL
    # inject_index=3: rows [0, 3) from z, the rest from z2.
    ws_mix = torch.cat([ws[:, :3], G.mapping(z2, None)[:, 3:]], dim=1)
    assert _max_err(G.synthesis(ws_mix, noise_mode='const'), ref['img_mix_inject3']) <= IMG_TOL


def test_rosinality_round_trip_identical(ros32, fixtures, tmp_path):
    nets, _ = ros32
    original = torch.load(fixtures / 'rosinality_32.pt', weights_only=True)
    exported = generator_to_rosinality(nets['G_ema'])
    assert set(exported) == set(original['g_ema'])
    for key, value in original['g_ema'].items():
        assert exported[key].shape == value.shape and torch.equal(exported[key], value), key
    path = export_rosinality(tmp_path / 'ros.pt', nets['G_ema'])
    saved = torch.load(path, weights_only=True)
    assert torch.equal(saved['latent_avg'], original['latent_avg'])
    assert all(torch.equal(saved['g_ema'][k], v) for k, v in original['g_ema'].items())


@pytest.mark.parametrize('layout', ['psp', 'e4e', 'bare'])
@torch.no_grad()
def test_rosinality_generator_in_psp_e4e_and_bare_layouts(ros32, fixtures, tmp_path, layout):
    """The same generator as published by pSp/e4e (decoder.* inside state_dict, latent_avg [w_dim] or
    [num_ws, w_dim]) or as a bare state dict gives the fixture's pixels."""
    _, ref = ros32
    original = torch.load(fixtures / 'rosinality_32.pt', weights_only=True)
    g_ema, latent_avg = original['g_ema'], original['latent_avg'].reshape(-1)
    encoder = {'encoder.input_layer.0.weight': torch.randn(8, 3, 3, 3)}
    payload = {
        'psp': dict(state_dict={**encoder, **{f'decoder.{k}': v for k, v in g_ema.items()}}, latent_avg=latent_avg,
                    opts=dict(encoder_type='GradualStyleEncoder', stylegan_size=32)),
        'e4e': dict(state_dict={**encoder, **{f'decoder.{k}': v for k, v in g_ema.items()}},
                    latent_avg=latent_avg.repeat(8, 1), opts=dict(encoder_type='Encoder4Editing')),
        'bare': g_ema,
    }[layout]
    torch.save(payload, tmp_path / f'{layout}.pt')
    nets = load_network(tmp_path / f'{layout}.pt')
    G = nets['G_ema']
    assert nets['format'] == 'rosinality' and 'D' not in nets
    if layout != 'bare':
        assert np.array_equal(G.mapping.w_avg.numpy(), ref['mean_latent'][0])
    z = torch.from_numpy(ref['z'])
    assert _max_err(G.synthesis(G.mapping(z, None), noise_mode='const'), ref['img']) <= IMG_TOL


def test_missing_fixture_fails_the_run(monkeypatch, tmp_path):
    """The parity promise travels with the repository: a missing fixture is a failure, never a skip."""
    import importlib.util
    spec = importlib.util.spec_from_file_location('root_conftest', Path(__file__).parents[1] / 'conftest.py')
    conf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(conf)
    monkeypatch.setattr(conf, 'FIXTURES', tmp_path)
    with pytest.raises(pytest.fail.Exception, match='reference fixtures missing from .*nvlabs_uncond32.pkl'):
        conf.fixtures.__wrapped__()
