"""upfirdn2d, filter2d, upsample2d, downsample2d, setup_filter: ref vs float64 naive loops, gradients,
CUDA vs ref (GPU only), and the errors users can hit."""

import itertools
import random

import pytest
import torch
import torch.nn.functional as F

from pstyle.torch_utils.ops import upfirdn2d

import pstyle_tests_ops_naive as naive  # registered by tests/torch_utils/conftest.py

TOLS = naive.TOLS



def _filters():
    """Filters with distinct taps, so a flip or an off-by-one shows; separable and 2-D."""
    g = torch.Generator().manual_seed(1)
    return {
        'none': None,
        'box2': upfirdn2d.setup_filter([1, 1]),
        'bilinear4': upfirdn2d.setup_filter([1, 3, 3, 1]),
        'asym2d_3x5': torch.rand([3, 5], generator=g) + 0.1,
        'asym1d_3': torch.rand([3], generator=g) + 0.1,
        'sep8': upfirdn2d.setup_filter([1, 2, 3, 4, 4.5, 3, 2, 1]),
    }


FILTERS = _filters()
PADDINGS = [0, 1, [2, 1], [1, 2, 0, 3], [-1, 2, 3, -2], [3, -2, -1, 4]]
SCALES = [(1, 1), (2, 1), (1, 2), (4, 1), (1, 4), (2, 2), ([2, 1], [1, 2])]


def _cases():
    for (name, pad, (up, down)) in itertools.product(FILTERS, PADDINGS, SCALES):
        yield pytest.param(name, pad, up, down, id=f'{name}-p{pad}-u{up}-d{down}')


def _random_x(shape, dtype=torch.float64, seed=0):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).to(dtype)


@pytest.mark.parametrize('fname,pad,up,down', list(_cases()))
def test_upfirdn2d_matches_naive(fname, pad, up, down):
    f = FILTERS[fname]
    f64 = None if f is None else f.double()  # The gain is applied in the filter's dtype.
    x = _random_x([2, 2, 9, 10])
    for flip_filter, gain in [(False, 1), (True, 2.5)]:
        expected = naive.naive_upfirdn2d(x, f, up=up, down=down, padding=pad, flip_filter=flip_filter, gain=gain)
        got = upfirdn2d.upfirdn2d(x, f64, up=up, down=down, padding=pad, flip_filter=flip_filter, gain=gain, impl='ref')
        assert got.shape == expected.shape
        torch.testing.assert_close(got, expected, **TOLS[torch.float64])
        got32 = upfirdn2d.upfirdn2d(x.float(), f, up=up, down=down, padding=pad, flip_filter=flip_filter, gain=gain)
        torch.testing.assert_close(got32.double(), expected, **TOLS[torch.float32])


def test_upfirdn2d_random_configs_match_naive():
    """Random sizes, factors 1-4 and pads -6..5 per side (crops larger than the input plus padding on
    the other side, up and down together), 2-D filters of 1-5 taps per axis."""
    rng = random.Random(0)
    checked = 0
    while checked < 60:
        h, w, fh, fw = rng.randint(1, 6), rng.randint(1, 6), rng.randint(1, 5), rng.randint(1, 5)
        up, down = [rng.randint(1, 4), rng.randint(1, 4)], [rng.randint(1, 4), rng.randint(1, 4)]
        pad = [rng.randint(-6, 5) for _ in range(4)]
        if w * up[0] + pad[0] + pad[1] < fw or h * up[1] + pad[2] + pad[3] < fh:
            continue  # Empty output: covered by test_bad_arguments.
        x = _random_x([1, 2, h, w], seed=checked)
        f = torch.rand([fh, fw], generator=torch.Generator().manual_seed(checked), dtype=torch.float64)
        flip = rng.random() < 0.5
        expected = naive.naive_upfirdn2d(x, f, up=up, down=down, padding=pad, flip_filter=flip, gain=1.3)
        got = upfirdn2d.upfirdn2d(x, f, up=up, down=down, padding=pad, flip_filter=flip, gain=1.3)
        torch.testing.assert_close(got, expected, **TOLS[torch.float64], msg=f'{h}x{w} f{fh}x{fw} {up} {down} {pad}')
        checked += 1


def test_flip_filter_matters():
    """An asymmetric filter gives different results flipped; flip_filter=True equals a pre-flipped filter."""
    f = FILTERS['asym2d_3x5']
    x = _random_x([1, 2, 6, 7])
    a = upfirdn2d.upfirdn2d(x, f, padding=[2, 2, 1, 1])
    b = upfirdn2d.upfirdn2d(x, f, padding=[2, 2, 1, 1], flip_filter=True)
    c = upfirdn2d.upfirdn2d(x, f.flip([0, 1]), padding=[2, 2, 1, 1])
    assert (a - b).abs().max() > 1e-3
    torch.testing.assert_close(b, c)


def test_channels_last_input():
    x = _random_x([2, 3, 6, 5]).to(memory_format=torch.channels_last)
    f = FILTERS['bilinear4']
    expected = naive.naive_upfirdn2d(x, f, up=2, padding=[2, 1, 2, 1])
    torch.testing.assert_close(upfirdn2d.upfirdn2d(x, f, up=2, padding=[2, 1, 2, 1]), expected, **TOLS[torch.float64])


# --------------------------------------------------------------------------------------------------
# setup_filter and the wrappers.

def test_setup_filter_bilinear_is_normalised_outer_product():
    f = upfirdn2d.setup_filter([1, 3, 3, 1])
    assert f.dtype == torch.float32 and f.shape == (4, 4)
    expected = torch.tensor([1., 3, 3, 1])[:, None] * torch.tensor([1., 3, 3, 1])[None, :] / 64
    torch.testing.assert_close(f, expected, rtol=0, atol=0)


def test_setup_filter_options():
    assert upfirdn2d.setup_filter(None).tolist() == [[1.0]]
    assert upfirdn2d.setup_filter([1] * 8).shape == (8,)  # >= 8 taps: separable by default.
    torch.testing.assert_close(upfirdn2d.setup_filter([1, 2], separable=True), torch.tensor([1 / 3, 2 / 3]))
    assert upfirdn2d.setup_filter([1] * 8, separable=False).shape == (8, 8)
    assert upfirdn2d.setup_filter([1, 2], normalize=False, separable=True, flip_filter=True).tolist() == [2, 1]
    torch.testing.assert_close(upfirdn2d.setup_filter([1, 1], gain=4).sum(), torch.tensor(4.0))  # gain ** (2/2)
    torch.testing.assert_close(upfirdn2d.setup_filter([1, 1], gain=4, separable=True).sum(), torch.tensor(2.0))


def test_upsample2d_box_is_nearest_and_downsample2d_box_is_average_pool():
    x = _random_x([2, 3, 4, 5])
    box = upfirdn2d.setup_filter([1, 1])
    up = upfirdn2d.upsample2d(x, box)
    torch.testing.assert_close(up, x.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3))
    down = upfirdn2d.downsample2d(_random_x([2, 3, 6, 8]), box)
    torch.testing.assert_close(down, F.avg_pool2d(_random_x([2, 3, 6, 8]), 2))


@pytest.mark.parametrize('fname', ['bilinear4', 'asym2d_3x5', 'sep8', 'asym1d_3'])
def test_wrappers_match_naive_with_nvidia_padding(fname):
    """filter2d / upsample2d / downsample2d equal upfirdn2d with NVIDIA's centring pads (written out here)."""
    f = FILTERS[fname].double()  # float64 filter: the gain is applied in the filter's dtype.
    fh, fw = f.shape[0], f.shape[-1]
    x = _random_x([1, 2, 8, 8])
    want = naive.naive_upfirdn2d(x, f, padding=[fw // 2 + 1, (fw - 1) // 2 + 1, fh // 2, (fh - 1) // 2])
    torch.testing.assert_close(upfirdn2d.filter2d(x, f, padding=[1, 0]), want)
    want = naive.naive_upfirdn2d(x, f, up=2, gain=4 * 1.5,
                                 padding=[(fw + 1) // 2, (fw - 2) // 2, (fh + 1) // 2, (fh - 2) // 2])
    got = upfirdn2d.upsample2d(x, f, gain=1.5)
    assert got.shape[2:] == (16, 16)
    torch.testing.assert_close(got, want)
    want = naive.naive_upfirdn2d(x, f, down=2, padding=[(fw - 1) // 2, (fw - 2) // 2, (fh - 1) // 2, (fh - 2) // 2])
    torch.testing.assert_close(upfirdn2d.downsample2d(x, f), want)


def test_odd_filter2d_is_same_convolution():
    f = FILTERS['asym2d_3x5']
    x = _random_x([2, 3, 7, 6])
    expected = F.conv2d(x, f.double().flip([0, 1])[None, None].repeat(3, 1, 1, 1), padding=(1, 2), groups=3)
    torch.testing.assert_close(upfirdn2d.filter2d(x, f), expected)


# --------------------------------------------------------------------------------------------------
# Gradients (float64, ref path): first and second order.

@pytest.mark.parametrize('fname,up,down,pad', [
    ('bilinear4', 2, 1, [2, 1, 2, 1]), ('bilinear4', 1, 2, [1, 1, 1, 1]), ('asym2d_3x5', 2, 2, [1, -1, 2, 0]),
    ('sep8', 1, 1, [3, 4, 3, 4]), ('asym1d_3', 4, 1, [-1, 2, 1, 0]),
])
def test_upfirdn2d_gradcheck(fname, up, down, pad):
    x = _random_x([1, 1, 3, 4]).requires_grad_(True)
    f = FILTERS[fname]
    fn = lambda t: upfirdn2d.upfirdn2d(t, f, up=up, down=down, padding=pad, gain=1.7, impl='ref')  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x,))
    assert torch.autograd.gradgradcheck(fn, (x,))


# --------------------------------------------------------------------------------------------------
# Bad inputs.

@pytest.mark.parametrize('kwargs,match', [
    (dict(up=0), 'up must be >= 1'),
    (dict(down=[2]), 'down must be an int or a pair'),
    (dict(padding=[1, 2, 3]), 'padding must be an int'),
    (dict(padding=-5), 'empty output'),
    (dict(impl='triton'), "impl must be None, 'ref' or 'cuda'"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        upfirdn2d.upfirdn2d(torch.zeros([1, 1, 4, 4]), FILTERS['bilinear4'], **kwargs)


def test_bad_tensors():
    with pytest.raises(ValueError, match=r'x must be a 4-D \[N, C, H, W\]'):
        upfirdn2d.upfirdn2d(torch.zeros([4, 4]), None)
    with pytest.raises(ValueError, match='f must be None or a non-empty 1-D or 2-D'):
        upfirdn2d.upfirdn2d(torch.zeros([1, 1, 4, 4]), torch.ones([1, 2, 2]))
    with pytest.raises(ValueError, match='without requires_grad'):
        upfirdn2d.upfirdn2d(torch.zeros([1, 1, 4, 4]), torch.ones([2, 2], requires_grad=True))
    with pytest.raises(ValueError, match='setup_filter: f must be a scalar, 1-D or 2-D'):
        upfirdn2d.setup_filter([[[1.0]]])


# --------------------------------------------------------------------------------------------------
# CUDA vs ref (skipped without a GPU).

def _cuda_plugin_or_fail():
    from pstyle.torch_utils.ops import _impl
    plugin = _impl.get_plugin('upfirdn2d')
    assert plugin is not None, 'the upfirdn2d CUDA plugin failed to build on a CUDA machine (see the warning)'
    return plugin
CUDA_CASES = [(fname, pad, up, down) for fname in ['none', 'bilinear4', 'asym2d_3x5', 'sep8', 'asym1d_3']
              for pad in [0, [1, 2, 0, 3], [-1, 2, 3, -2]] for up, down in [(1, 1), (2, 1), (1, 2), (4, 1), (2, 4)]]


@pytest.mark.cuda
@pytest.mark.parametrize('dtype', [torch.float32, torch.float16])
@pytest.mark.parametrize('memory_format', [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize('fname,pad,up,down', CUDA_CASES)
def test_cuda_matches_ref(fname, pad, up, down, dtype, memory_format):
    _cuda_plugin_or_fail()
    f = None if FILTERS[fname] is None else FILTERS[fname].cuda()
    x = _random_x([2, 5, 11, 10], dtype).cuda().to(memory_format=memory_format).requires_grad_(True)
    kwargs = dict(up=up, down=down, padding=pad, flip_filter=(fname == 'asym2d_3x5'), gain=1.3)
    y_cuda = upfirdn2d.upfirdn2d(x, f, impl='cuda', **kwargs)
    y_ref = upfirdn2d.upfirdn2d(x, f, impl='ref', **kwargs)
    assert y_cuda.dtype == dtype and y_cuda.shape == y_ref.shape
    torch.testing.assert_close(y_cuda, y_ref, **TOLS[dtype])
    # First order, and the double backward (the gradient of dx with respect to dy).
    dy = torch.randn_like(y_ref).requires_grad_(True)
    (gx_cuda,) = torch.autograd.grad(y_cuda, x, dy, create_graph=True)
    (gx_ref,) = torch.autograd.grad(y_ref, x, dy, create_graph=True)
    torch.testing.assert_close(gx_cuda, gx_ref, **TOLS[dtype])
    ddx = torch.randn_like(x)
    (ggdy_cuda,) = torch.autograd.grad(gx_cuda, dy, ddx)
    (ggdy_ref,) = torch.autograd.grad(gx_ref, dy, ddx)
    torch.testing.assert_close(ggdy_cuda, ggdy_ref, **TOLS[dtype])


@pytest.mark.cuda
def test_cuda_gradcheck_float64():
    _cuda_plugin_or_fail()
    x = _random_x([1, 2, 5, 6]).cuda().requires_grad_(True)
    for fname, up, down, pad in [('bilinear4', 2, 1, [2, 1, 2, 1]), ('asym2d_3x5', 1, 2, [1, -1, 2, 0]),
                                 ('sep8', 2, 2, [3, 4, 3, 4])]:
        f = FILTERS[fname].cuda()
        fn = lambda t: upfirdn2d.upfirdn2d(t, f, up=up, down=down, padding=pad, gain=1.7, impl='cuda')  # noqa: E731
        assert torch.autograd.gradcheck(fn, (x,))
        assert torch.autograd.gradgradcheck(fn, (x,))


# --------------------------------------------------------------------------------------------------
# The CUDA path's autograd (adjoint padding, filter flip, swapped up/down, double backward), run on
# the CPU with a stand-in kernel: the ref forward behind the plugin's exact call signature.

class EmulatedPlugin:
    """Same arguments and output as `upfirdn2d.cu` (one 2-D filter, gain multiplies the output)."""

    calls = 0

    @classmethod
    def upfirdn2d(cls, x, f, up_x, up_y, down_x, down_y, pad_x0, pad_x1, pad_y0, pad_y1, flip_filter, gain):
        assert f.ndim == 2 and f.dtype == torch.float32
        cls.calls += 1
        with torch.no_grad():  # A kernel records no autograd history.
            return upfirdn2d._upfirdn2d_ref(x, f, (up_x, up_y), (down_x, down_y), (pad_x0, pad_x1, pad_y0, pad_y1),
                                            flip_filter, gain)


@pytest.mark.parametrize('fname,up,down,pad', [
    ('bilinear4', 2, 1, [2, 1, 2, 1]), ('bilinear4', 1, 2, [1, 1, 1, 1]), ('asym2d_3x5', [2, 1], [1, 2], [1, -1, 2, 0]),
    ('sep8', 1, 1, [3, 4, 3, 4]), ('asym1d_3', 4, 2, [-1, 2, 1, 0]), ('asym2d_3x5', 1, 4, [0, 3, -1, 2]),
    ('none', 2, 2, [0, 1, 1, 0]),
])
def test_cuda_autograd_with_emulated_kernel(fname, up, down, pad):
    f = FILTERS[fname] if FILTERS[fname] is not None else torch.ones([1, 1])
    upx, upy = (up, up) if isinstance(up, int) else up
    downx, downy = (down, down) if isinstance(down, int) else down
    x = _random_x([1, 2, 5, 4]).requires_grad_(True)
    args = ((upx, upy), (downx, downy), tuple(pad), fname == 'asym2d_3x5', 1.7)
    fn = lambda t: upfirdn2d._upfirdn2d_cuda(EmulatedPlugin, t, f, *args)  # noqa: E731
    EmulatedPlugin.calls = 0
    torch.testing.assert_close(fn(x), upfirdn2d._upfirdn2d_ref(x, f, *args), **TOLS[torch.float64])
    assert EmulatedPlugin.calls == (2 if f.ndim == 1 else 1)
    assert torch.autograd.gradcheck(fn, (x,))
    assert torch.autograd.gradgradcheck(fn, (x,))
