"""conv2d_resample: every fast path vs the float64 naive generic definition; gradients; CUDA vs CPU; errors."""

import itertools

import pytest
import torch

from pstyle.torch_utils.ops import conv2d_resample as cr
from pstyle.torch_utils.ops import upfirdn2d

import pstyle_tests_ops_naive as naive  # registered by tests/torch_utils/conftest.py

TOLS = naive.TOLS


FILTERS = {
    'bilinear4': upfirdn2d.setup_filter([1, 3, 3, 1]),
    'asym3': upfirdn2d.setup_filter([1, 2, 4]),  # Asymmetric 3x3: a flip or an off-by-one shows.
    'sep8': upfirdn2d.setup_filter([1, 2, 3, 4, 4.5, 3, 2, 1]),
}


def _randn(shape, seed, dtype=torch.float64):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).to(dtype)


def _cases():
    """(kernel, up, down, padding, groups): covers the 1x1-down, 1x1-up, strided, transposed, plain and
    generic paths, with symmetric, asymmetric and negative padding."""
    for k, (up, down), pad, groups in itertools.product(
            [1, 3, 2], [(1, 1), (2, 1), (1, 2), (2, 2), (4, 1), (1, 4)], [0, 1, [1, 0, 2, 1], [-1, 0, 1, -1]], [1, 2]):
        yield pytest.param(k, up, down, pad, groups, id=f'k{k}-u{up}-d{down}-p{pad}-g{groups}')


@pytest.mark.parametrize('k,up,down,pad,groups', list(_cases()))
def test_conv2d_resample_matches_naive(k, up, down, pad, groups):
    x = _randn([2, 4, 8, 7], seed=0)
    w = _randn([6, 4 // groups, k, k], seed=1)
    for fname, flip_weight, flip_filter in [('bilinear4', True, False), ('asym3', False, True), ('sep8', True, True)]:
        f = FILTERS[fname]
        kwargs = dict(up=up, down=down, padding=pad, groups=groups, flip_weight=flip_weight, flip_filter=flip_filter)
        expected = naive.naive_conv2d_resample(x, w, f, **kwargs)
        got = cr.conv2d_resample(x, w, f, **kwargs)
        assert got.shape == expected.shape, (got.shape, expected.shape)
        torch.testing.assert_close(got, expected, **TOLS[torch.float64])
        got32 = cr.conv2d_resample(x.float(), w.float(), f, **kwargs)
        torch.testing.assert_close(got32.double(), expected, **TOLS[torch.float32])


def test_without_filter_and_resampling_is_conv2d():
    x, w = _randn([2, 3, 6, 6], 0), _randn([5, 3, 3, 3], 1)
    torch.testing.assert_close(cr.conv2d_resample(x, w, padding=1), torch.nn.functional.conv2d(x, w, padding=1))
    flipped = torch.nn.functional.conv2d(x, w.flip([2, 3]), padding=1)
    torch.testing.assert_close(cr.conv2d_resample(x, w, padding=1, flip_weight=False), flipped)


def test_stylegan_shapes():
    """The shapes the networks rely on: 3x3 up 2 keeps 2H with padding 1; 3x3 down 2 halves; 1x1 skip down."""
    f = FILTERS['bilinear4']
    x = _randn([2, 4, 8, 8], 0, torch.float32)
    assert cr.conv2d_resample(x, _randn([3, 4, 3, 3], 1, torch.float32), f, up=2, padding=1).shape == (2, 3, 16, 16)
    assert cr.conv2d_resample(x, _randn([3, 4, 3, 3], 1, torch.float32), f, down=2, padding=1).shape == (2, 3, 4, 4)
    assert cr.conv2d_resample(x, _randn([3, 4, 1, 1], 1, torch.float32), f, down=2).shape == (2, 3, 4, 4)


@pytest.mark.parametrize('k,up,down,pad,groups', [(3, 2, 1, 1, 1), (3, 1, 2, 1, 2), (1, 1, 2, 0, 1), (1, 2, 1, 0, 2),
                                                  (3, 1, 1, [1, 0, 2, 1], 1)])
def test_gradcheck_and_gradgradcheck(k, up, down, pad, groups):
    x = _randn([1, 2, 3, 4], 0).requires_grad_(True)
    w = _randn([2, 2 // groups, k, k], 1).requires_grad_(True)
    fn = lambda x_, w_: cr.conv2d_resample(x_, w_, FILTERS['asym3'], up=up, down=down, padding=pad,  # noqa: E731
                                           groups=groups, flip_weight=(up == 1))
    assert torch.autograd.gradcheck(fn, (x, w))
    assert torch.autograd.gradgradcheck(fn, (x, w), fast_mode=True)  # Random projections: same check, cheaper.


@pytest.mark.parametrize('kwargs,match', [
    (dict(up=0), 'up must be an int >= 1'),
    (dict(down=1.5), 'down must be an int >= 1'),
    (dict(groups=2), 'x has 3 channels but w'),
    (dict(f=torch.ones(2, 2, dtype=torch.float64)), 'f must be None or a float32'),
    (dict(w=torch.zeros(4, 3, 3, 3, dtype=torch.float64)), 'w must be a 4-D'),
])
def test_bad_arguments(kwargs, match):
    args = dict(x=torch.zeros(1, 3, 8, 8), w=torch.zeros(4, 3, 3, 3))
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        cr.conv2d_resample(**args)


@pytest.mark.cuda
@pytest.mark.parametrize('dtype', [torch.float32, torch.float16])
@pytest.mark.parametrize('memory_format', [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize('k,up,down,pad', [(3, 1, 1, 1), (3, 2, 1, 1), (3, 1, 2, 1), (1, 1, 2, 0), (1, 2, 1, 0)])
def test_cuda_matches_cpu(k, up, down, pad, dtype, memory_format):
    """conv2d_resample on the GPU (CUDA upfirdn2d inside) vs the same call in float64 on the CPU."""
    f = FILTERS['bilinear4']
    x, w = _randn([2, 4, 8, 8], 0), _randn([3, 4, k, k], 1) / 3
    expected = cr.conv2d_resample(x, w, f, up=up, down=down, padding=pad)
    xc = x.to('cuda', dtype).to(memory_format=memory_format)
    got = cr.conv2d_resample(xc, w.to('cuda', dtype), f.cuda(), up=up, down=down, padding=pad)
    torch.testing.assert_close(got.cpu().double(), expected, **TOLS[dtype])
