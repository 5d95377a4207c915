"""rosinality checkpoints on tiny random networks: export/import round trips, the discriminator
against an independent functional re-implementation of rosinality's forward pass, and bad input."""

import argparse

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pstyle.models.checkpoint import CheckpointError, load_network
from pstyle.models.convert_rosinality import (discriminator_from_rosinality, discriminator_to_rosinality,
                                        export_rosinality, generator_from_rosinality, generator_to_rosinality)
from pstyle.models.networks import Discriminator, Generator


def tiny_networks(seed=0):
    torch.manual_seed(seed)
    G = Generator(z_dim=8, c_dim=0, w_dim=8, img_resolution=16, img_channels=3,
                  mapping_kwargs=dict(num_layers=3), synthesis_kwargs=dict(channels_dict={4: 16, 8: 12, 16: 8}))
    D = Discriminator(c_dim=0, img_resolution=16, img_channels=3, channels_dict={16: 8, 8: 12, 4: 16})
    with torch.no_grad():
        for net in (G, D):
            for key, tensor in net.state_dict().items():
                if tensor.is_floating_point() and not key.endswith('resample_filter'):
                    tensor.add_(0.1 * torch.randn_like(tensor))
    return G.eval(), D.eval()


def assert_same_state(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


def test_generator_round_trip():
    G, _ = tiny_networks()
    sd = generator_to_rosinality(G)
    assert sd['input.input'].shape == (1, 16, 4, 4)
    assert sd['convs.2.conv.weight'].shape == (1, 8, 12, 3, 3)      # b16.conv0: 12 -> 8 channels.
    assert sd['to_rgbs.1.bias'].shape == (1, 3, 1, 1)
    assert sd['conv1.noise.weight'].shape == (1,)
    G2 = generator_from_rosinality(sd, latent_avg=G.mapping.w_avg[None])
    assert_same_state(G2, G)
    assert set(generator_to_rosinality(G2)) == set(sd)


def test_discriminator_round_trip_and_shapes():
    _, D = tiny_networks()
    sd = discriminator_to_rosinality(D)
    assert sd['convs.0.0.weight'].shape == (8, 3, 1, 1)               # FromRGB at 16x16.
    assert sd['convs.1.conv2.1.weight'].shape == (12, 8, 3, 3)        # b16.conv1 (down).
    assert sd['convs.2.skip.1.weight'].shape == (16, 12, 1, 1)        # b8.skip.
    assert sd['final_conv.0.weight'].shape == (16, 17, 3, 3)          # + 1 minibatch-std channel.
    assert sd['final_linear.0.weight'].shape == (16, 16 * 4 * 4)
    assert_same_state(discriminator_from_rosinality(sd), D)


def _blur(x, kernel, pad):
    # upfirdn2d with up = down = 1: zero-pad, then a true (flipped) depthwise convolution.
    C = x.shape[1]
    x = F.pad(x, [pad[0], pad[1], pad[0], pad[1]])
    return F.conv2d(x, kernel.flip([0, 1])[None, None].repeat(C, 1, 1, 1), groups=C)


def _equal_conv(x, w, stride=1, padding=0):
    return F.conv2d(x, w / np.sqrt(w[0].numel()), stride=stride, padding=padding)


def _fused_lrelu(x, b):
    shape = [1, -1] + [1] * (x.ndim - 2)
    return F.leaky_relu(x + b.reshape(shape), 0.2) * np.sqrt(2)


def rosinality_d_forward(sd, img):
    """rosinality's Discriminator forward, written from its architecture (ResBlocks, stddev group 4)."""
    x = _fused_lrelu(_equal_conv(img, sd['convs.0.0.weight']), sd['convs.0.1.bias'])
    i = 1
    while f'convs.{i}.conv1.0.weight' in sd:
        kernel = sd[f'convs.{i}.conv2.0.kernel']
        out = _fused_lrelu(_equal_conv(x, sd[f'convs.{i}.conv1.0.weight'], padding=1), sd[f'convs.{i}.conv1.1.bias'])
        out = _blur(out, kernel, (2, 2))     # 3x3 stride-2 conv: pad ((4-2)+(3-1)) // 2 each side.
        out = _fused_lrelu(_equal_conv(out, sd[f'convs.{i}.conv2.1.weight'], stride=2), sd[f'convs.{i}.conv2.2.bias'])
        skip = _equal_conv(_blur(x, sd[f'convs.{i}.skip.0.kernel'], (1, 1)), sd[f'convs.{i}.skip.1.weight'], stride=2)
        x = (out + skip) / np.sqrt(2)
        i += 1
    N, C, H, W = x.shape
    group = min(N, 4)
    std = torch.sqrt(x.view(group, -1, 1, C, H, W).var(0, unbiased=False) + 1e-8)
    std = std.mean([2, 3, 4], keepdim=True).squeeze(2).repeat(group, 1, H, W)
    x = torch.cat([x, std], 1)
    x = _fused_lrelu(_equal_conv(x, sd['final_conv.0.weight'], padding=1), sd['final_conv.1.bias'])
    x = x.reshape(N, -1)
    w0, w1 = sd['final_linear.0.weight'], sd['final_linear.1.weight']
    x = _fused_lrelu(F.linear(x, w0 / np.sqrt(w0.shape[1])), sd['final_linear.0.bias'])
    return F.linear(x, w1 / np.sqrt(w1.shape[1])) + sd['final_linear.1.bias']


@torch.no_grad()
def test_discriminator_matches_rosinality_forward():
    _, D = tiny_networks()
    sd = discriminator_to_rosinality(D)
    img = torch.randn([8, 3, 16, 16], generator=torch.Generator().manual_seed(3))
    expected = rosinality_d_forward(sd, img)
    assert torch.allclose(discriminator_from_rosinality(sd)(img, None), expected, atol=1e-5)


def test_training_checkpoint_with_args_g_and_d(tmp_path):
    G, D = tiny_networks()
    G_ema, _ = tiny_networks(seed=1)
    path = tmp_path / '010000.pt'
    torch.save(dict(g=generator_to_rosinality(G), d=discriminator_to_rosinality(D), g_ema=generator_to_rosinality(G_ema),
                    args=argparse.Namespace(size=16, channel_multiplier=2), latent_avg=G_ema.mapping.w_avg), path)
    nets = load_network(path)
    assert nets['format'] == 'rosinality'
    assert nets['rosinality_args'] == dict(size=16, channel_multiplier=2)
    assert_same_state(nets['G_ema'], G_ema)
    assert_same_state(nets['D'], D)
    for key, value in G.state_dict().items():
        if key != 'mapping.w_avg':  # g shares g_ema's latent_avg.
            assert torch.equal(nets['G'].state_dict()[key], value), key


def test_export_all_networks(tmp_path):
    G, D = tiny_networks()
    path = export_rosinality(tmp_path / 'out.pt', G, G=G, D=D)
    payload = torch.load(path, weights_only=True)
    assert set(payload) == {'g_ema', 'g', 'd', 'latent_avg'}
    assert payload['latent_avg'].shape == (1, 8)
    nets = load_network(path)
    assert_same_state(nets['D'], D)
    assert_same_state(nets['G_ema'], G)


def test_missing_latent_avg_is_estimated():
    G, _ = tiny_networks()
    G2 = generator_from_rosinality(generator_to_rosinality(G))
    z = torch.randn([4096, 8], generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = G.mapping(z, None)[:, 0].mean(0)
    assert torch.allclose(G2.mapping.w_avg, expected, atol=1e-6)
    assert not torch.equal(G2.mapping.w_avg, torch.zeros(8))


def test_missing_tensor_named():
    G, _ = tiny_networks()
    sd = generator_to_rosinality(G)
    del sd['convs.1.conv.modulation.bias']
    with pytest.raises(CheckpointError, match=r'missing rosinality tensors convs\.1\.conv\.modulation\.bias'):
        generator_from_rosinality(sd)


def test_unknown_tensor_named():
    _, D = tiny_networks()
    sd = discriminator_to_rosinality(D)
    sd['convs.1.attention.weight'] = torch.zeros(1)
    with pytest.raises(CheckpointError, match=r'rosinality tensors with no counterpart: convs\.1\.attention\.weight'):
        discriminator_from_rosinality(sd)


def test_wrong_shape_named():
    G, _ = tiny_networks()
    sd = generator_to_rosinality(G)
    sd['to_rgb1.conv.modulation.weight'] = torch.zeros([5, 8])
    with pytest.raises(CheckpointError, match=r'wrong shapes: synthesis\.b4\.torgb\.affine\.weight \[5, 8\] '
                                              r'\(expected \[16, 8\]\)'):
        generator_from_rosinality(sd)


def test_bad_latent_avg():
    G, _ = tiny_networks()
    with pytest.raises(CheckpointError, match=r'latent_avg has shape \[7\]; expected \[8\] or \[1, 8\]'):
        generator_from_rosinality(generator_to_rosinality(G), latent_avg=torch.zeros(7))


def test_not_exportable():
    G = Generator(z_dim=8, c_dim=0, w_dim=8, img_resolution=8, img_channels=3,
                  synthesis_kwargs=dict(channel_base=64, channel_max=8, architecture='resnet'))
    with pytest.raises(CheckpointError, match="architecture 'resnet' \\(rosinality has only skip\\)"):
        generator_to_rosinality(G)
    D = Discriminator(c_dim=0, img_resolution=8, img_channels=3, channel_base=64, channel_max=8,
                      epilogue_kwargs=dict(mbstd_group_size=2))
    with pytest.raises(CheckpointError, match='minibatch-std is not group 4'):
        discriminator_to_rosinality(D)
