"""modulated_conv2d (StyleGAN2 Eq. 1-3): fused and non-fused vs a float64 per-sample naive loop,
the fp16 pre-normalisation, gradients, CUDA vs CPU, errors."""

import itertools

import pytest
import torch

from pstyle.torch_utils.ops import upfirdn2d
from pstyle.torch_utils.ops.modulated_conv2d import modulated_conv2d

import pstyle_tests_ops_naive as naive  # registered by tests/torch_utils/conftest.py

TOLS = naive.TOLS
F_BILINEAR = upfirdn2d.setup_filter([1, 3, 3, 1])


def _randn(shape, seed, dtype=torch.float64):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).to(dtype)


def _inputs(k=3, n=3, i=4, o=5, res=6, dtype=torch.float64):
    x = _randn([n, i, res, res], 0, dtype)
    weight = _randn([o, i, k, k], 1, dtype)
    styles = _randn([n, i], 2, dtype) + 1  # Like the affine layer's bias_init=1.
    return x, weight, styles


# (k, up, down, padding) as the networks use them: 3x3 conv, 3x3 up (flip_weight False), 1x1 toRGB, 3x3 down.
LAYERS = [(3, 1, 1, 1), (3, 2, 1, 1), (1, 1, 1, 0), (3, 1, 2, 1)]


@pytest.mark.parametrize('fused,demodulate,with_noise', list(itertools.product([True, False], repeat=3)))
@pytest.mark.parametrize('k,up,down,pad', LAYERS)
def test_matches_naive(k, up, down, pad, fused, demodulate, with_noise):
    x, weight, styles = _inputs(k)
    out_res = x.shape[2] * up // down
    noise = _randn([x.shape[0], 1, out_res, out_res], 3) if with_noise else None
    kwargs = dict(up=up, down=down, padding=pad, resample_filter=F_BILINEAR, demodulate=demodulate,
                  flip_weight=(up == 1))
    expected = naive.naive_modulated_conv2d(x, weight, styles, noise, **kwargs)
    got = modulated_conv2d(x, weight, styles, noise, fused_modconv=fused, **kwargs)
    assert got.shape == (3, 5, out_res, out_res)
    torch.testing.assert_close(got, expected, **TOLS[torch.float64])
    got32 = modulated_conv2d(x.float(), weight.float(), styles.float(), None if noise is None else noise.float(),
                             fused_modconv=fused, **kwargs)
    torch.testing.assert_close(got32.double(), expected, **TOLS[torch.float32])


@pytest.mark.parametrize('fused', [True, False])
def test_demodulation_removes_style_scale(fused):
    """Eq. 3 divides by the modulated weight's norm: scaling the styles changes nothing when demodulating,
    and scales the output linearly when not."""
    x, weight, styles = _inputs(k=3)
    base = modulated_conv2d(x, weight, styles, padding=1, fused_modconv=fused)
    torch.testing.assert_close(modulated_conv2d(x, weight, styles * 7.5, padding=1, fused_modconv=fused), base)
    plain = modulated_conv2d(x, weight, styles, padding=1, demodulate=False, fused_modconv=fused)
    torch.testing.assert_close(modulated_conv2d(x, weight, styles * 7.5, padding=1, demodulate=False,
                                                fused_modconv=fused), plain * 7.5)
    assert (plain - base).abs().max() > 1e-3


@pytest.mark.parametrize('fused', [True, False])
def test_fp16_prenormalisation_cancels(fused):
    """The fp16 branch rescales weight and styles; demodulation removes the scale (result ~ fp32 result)."""
    x, weight, styles = _inputs(k=3, dtype=torch.float32)
    styles = styles * 1000  # Would overflow fp16 products without the pre-normalisation.
    ref = modulated_conv2d(x, weight, styles, padding=1, fused_modconv=fused)
    half = modulated_conv2d(x.half(), weight, styles, padding=1, fused_modconv=fused)
    assert half.dtype == torch.float16 and torch.isfinite(half).all()
    torch.testing.assert_close(half.float(), ref, **TOLS[torch.float16])


@pytest.mark.parametrize('fused', [True, False])
@pytest.mark.parametrize('k,up,down,pad', [(3, 2, 1, 1), (3, 1, 2, 1)])
def test_gradcheck_and_gradgradcheck(k, up, down, pad, fused):
    x, weight, styles = _inputs(k, n=2, i=2, o=2, res=4)
    noise = _randn([2, 1, 4 * up // down, 4 * up // down], 4)
    args = [t.requires_grad_(True) for t in (x, weight, styles, noise)]
    fn = lambda *a: modulated_conv2d(*a, up=up, down=down, padding=pad, resample_filter=F_BILINEAR,  # noqa: E731
                                     flip_weight=(up == 1), fused_modconv=fused)
    assert torch.autograd.gradcheck(fn, args, fast_mode=True)
    assert torch.autograd.gradgradcheck(fn, args, fast_mode=True)


@pytest.mark.parametrize('args,match', [
    (dict(styles=torch.zeros(2, 3)), r'styles must be \[2, 4\]'),
    (dict(x=torch.zeros(2, 3, 6, 6)), r'x must be \[N, 4, H, W\]'),
    (dict(weight=torch.zeros(5, 4, 3)), r'weight must be \[O, I, kh, kw\]'),
    (dict(noise=3.0), 'noise must be a tensor or None'),
])
def test_bad_arguments(args, match):
    kwargs = dict(x=torch.zeros(2, 4, 6, 6), weight=torch.zeros(5, 4, 3, 3), styles=torch.zeros(2, 4))
    kwargs.update(args)
    with pytest.raises(ValueError, match=match):
        modulated_conv2d(**kwargs, padding=1)


@pytest.mark.cuda
@pytest.mark.parametrize('dtype', [torch.float32, torch.float16])
@pytest.mark.parametrize('memory_format', [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize('fused', [True, False])
@pytest.mark.parametrize('k,up,down,pad', LAYERS)
def test_cuda_matches_cpu(k, up, down, pad, fused, dtype, memory_format):
    x, weight, styles = _inputs(k)
    expected = naive.naive_modulated_conv2d(x, weight, styles, up=up, down=down, padding=pad,
                                            resample_filter=F_BILINEAR, flip_weight=(up == 1))
    xc = x.to('cuda', dtype).to(memory_format=memory_format)
    got = modulated_conv2d(xc, weight.cuda().float(), styles.cuda().float(), up=up, down=down, padding=pad,
                           resample_filter=F_BILINEAR.cuda(), flip_weight=(up == 1), fused_modconv=fused)
    assert got.dtype == dtype
    torch.testing.assert_close(got.cpu().double(), expected, **TOLS[dtype])
