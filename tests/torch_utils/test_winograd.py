"""Winograd convolutions (torch_utils/winograd.py): the transform algebra, the C++ plugin and the PyTorch reference
against F.conv2d, and when the module falls back to the original convolution."""

import warnings

import pytest
import torch
import torch.nn as nn

from pstyle.torch_utils import winograd as W
from pstyle.torch_utils.ops import _impl


@pytest.mark.parametrize('m,r', [(2, 3), (4, 3), (6, 3), (2, 2), (4, 2), (3, 1)])
def test_transform_matrices_compute_the_correlation_exactly(m, r):
    """AT ((G g) * (BT d)) is the m-output correlation of d with g, in float64 to rounding."""
    bt, g, at = W.winograd_matrices(m, r)
    assert bt.shape == (m + r - 1, m + r - 1) and g.shape == (m + r - 1, r) and at.shape == (m, m + r - 1)
    assert torch.equal(bt, bt.round()), 'the activation transform has integer entries'
    torch.manual_seed(0)
    for _ in range(5):
        d, k = torch.randn(m + r - 1, dtype=torch.float64), torch.randn(r, dtype=torch.float64)
        expected = torch.stack([(d[i:i + r] * k).sum() for i in range(m)])
        torch.testing.assert_close(at @ ((g @ k) * (bt @ d)), expected, rtol=1e-12, atol=1e-12)


def test_too_many_points_are_refused():
    with pytest.raises(ValueError, match=r'F\(9, 3\) needs 10 interpolation points'):
        W.winograd_matrices(9, 3)


def test_the_plugin_builds_on_this_machine():
    """The C++ plugin must build where the tests run (a compiler and ninja are installed by the README's steps):
    without it the encoders silently lose their fast path."""
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')      # torch's "no CUDA runtime" notice while building.
        plugin = _impl.get_plugin('winograd')
    assert plugin is not None, 'torch_utils/ops/winograd.cpp did not build: PSTYLE_VERBOSE_BUILD=1 shows why'
    x = torch.zeros(1, 4, 4, 3, dtype=torch.float64)
    with pytest.raises(RuntimeError, match='contiguous fp32 CPU tensor'):
        plugin.input_transform(x, torch.eye(2), torch.eye(2), 2, 1, 0, 0, 2, 2, torch.zeros(4, 4, 3))


@pytest.mark.parametrize('impl', ['auto', 'ref'])
@pytest.mark.parametrize('stride,m', [(1, 2), (1, 4), (1, 6), (2, 2), (2, 4)])
@pytest.mark.parametrize('size', [(9, 9), (16, 16), (7, 12), (5, 3)])
def test_matches_conv2d(impl, stride, m, size):
    """Odd and even sizes (partial tiles, stride-2 overhang), with and without bias, NCHW and channels_last input."""
    torch.manual_seed(stride * 100 + m * 10 + size[0])
    for bias in (True, False):
        conv = nn.Conv2d(20, 24, 3, stride, 1, bias=bias).eval()
        if bias:
            nn.init.normal_(conv.bias)
        x = torch.randn(2, 20, *size)
        module = W.WinogradConv2d(conv, m, impl, min_tiles=1)
        with torch.no_grad():
            expected = conv(x)
            for inp in (x, x.contiguous(memory_format=torch.channels_last)):
                y = module(inp)
                assert y.shape == expected.shape
                assert y.is_contiguous(memory_format=torch.channels_last)
                err = (y - expected).abs().max() / expected.abs().max()
                assert err < 3e-5, (impl, stride, m, size, bias, float(err))
        assert module.filters is not None, 'the Winograd path ran'


def test_falls_back_to_the_original_convolution():
    """Autograd, autocast, fp64 and maps smaller than min_tiles run `conv` itself (bit-identical)."""
    torch.manual_seed(0)
    conv = nn.Conv2d(8, 8, 3, 1, 1)
    module = W.WinogradConv2d(conv, 4, min_tiles=5)
    x = torch.randn(1, 8, 16, 16)
    y = module(x)                                           # Grad enabled and conv.weight requires grad.
    assert torch.equal(y, conv(x)) and y.requires_grad
    y.sum().backward()
    assert conv.weight.grad is not None
    with torch.no_grad():
        with torch.autocast('cpu', dtype=torch.bfloat16):
            assert torch.equal(module(x), conv(x))
        assert torch.equal(module(x[:, :, :7, :7]), conv(x[:, :, :7, :7]))   # 2 x 2 tiles < min_tiles 5
        assert module.filters is None, 'nothing built the Winograd filters yet'
        assert not torch.equal(module(x), conv(x))                          # 16 tiles: the Winograd path
        assert module.filters is not None
    conv64 = nn.Conv2d(8, 8, 3, 1, 1).double()
    with torch.no_grad():
        x64 = torch.randn(1, 8, 16, 16, dtype=torch.float64)
        assert torch.equal(W.WinogradConv2d(conv64, 4, min_tiles=1)(x64), conv64(x64))


def test_ref_forced_runs_the_original_convolution(monkeypatch):
    monkeypatch.setenv('PSTYLE_OPS_REF', '1')
    conv = nn.Conv2d(8, 8, 3, 1, 1)
    x = torch.randn(1, 8, 16, 16)
    with torch.no_grad():
        assert torch.equal(W.WinogradConv2d(conv, 4, min_tiles=1)(x), conv(x))


def test_use_winograd_replaces_only_supported_wide_convolutions():
    net = nn.Sequential(nn.Conv2d(128, 128, 3, 1, 1), nn.Conv2d(128, 128, 3, 2, 1), nn.Conv2d(64, 128, 3, 1, 1),
                        nn.Conv2d(128, 128, 1), nn.Conv2d(128, 128, 3, 1, 2, dilation=2),
                        nn.Sequential(nn.Conv2d(256, 256, 3, 1, 1, groups=2), nn.Conv2d(256, 256, 3, 1, 1)))
    assert W.use_winograd(net) == 3
    kinds = [type(m).__name__ for m in (net[0], net[1], net[2], net[3], net[4], net[5][0], net[5][1])]
    assert kinds == ['WinogradConv2d', 'WinogradConv2d', 'Conv2d', 'Conv2d', 'Conv2d', 'Conv2d', 'WinogradConv2d']
    assert (net[0].m, net[1].m, net[0].min_tiles, net[1].min_tiles) == (4, 2, 16, 64)
    assert W.use_winograd(net, tiles=(4, 0)) == 0, 'already replaced'
    net2 = nn.Sequential(nn.Conv2d(128, 128, 3, 1, 1), nn.Conv2d(128, 128, 3, 2, 1))
    assert W.use_winograd(net2, tiles=(4, 0)) == 1 and isinstance(net2[1], nn.Conv2d)


def test_unsupported_convolutions_are_refused():
    with pytest.raises(ValueError, match='3x3 conv with padding 1, stride 1 or 2'):
        W.WinogradConv2d(nn.Conv2d(4, 4, 3, 1, 0))
    with pytest.raises(ValueError, match="impl must be 'auto' or 'ref'"):
        W.WinogradConv2d(nn.Conv2d(4, 4, 3, 1, 1), impl='cuda')


def test_winograd_path_is_deterministic_and_batch_consistent():
    """The same image gives the same output on every call, and inside a batch to fp32 rounding."""
    torch.manual_seed(1)
    conv = nn.Conv2d(16, 16, 3, 1, 1)
    module = W.WinogradConv2d(conv, 4, min_tiles=1)
    x = torch.randn(3, 16, 12, 12)
    with torch.no_grad():
        alone = module(x[1:2])
        batch = module(x)
        assert torch.equal(module(x[1:2]), alone)
        torch.testing.assert_close(batch[1:2], alone, rtol=0, atol=1e-6)
