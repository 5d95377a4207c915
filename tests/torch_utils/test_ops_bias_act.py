"""bias_act: ref vs float64 naive formulas, NVIDIA's defaults, gradients, CUDA vs ref (GPU only), errors."""

import math

import pytest
import torch

from pstyle.torch_utils.ops import bias_act

import pstyle_tests_ops_naive as naive  # registered by tests/torch_utils/conftest.py

TOLS = naive.TOLS
ACTS = ['linear', 'relu', 'lrelu', 'tanh', 'sigmoid', 'elu', 'selu', 'softplus', 'swish']


def _away_from_kinks(shape, seed=0, dtype=torch.float64, scale=2.0):
    """Random values at least 0.05 away from 0 (the ReLU kinks), so finite differences are smooth."""
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(shape, generator=g, dtype=torch.float64) * scale
    return (v + 0.05 * v.sign()).to(dtype)


@pytest.mark.parametrize('act', ACTS)
@pytest.mark.parametrize('dim,shape', [(1, [2, 5, 3, 4]), (0, [6, 3]), (2, [2, 3, 4]), (3, [1, 2, 3, 7])])
def test_bias_act_matches_naive(act, dim, shape):
    x = _away_from_kinks(shape, seed=1, scale=4.0)
    b = _away_from_kinks([shape[dim]], seed=2)
    for kwargs in [dict(), dict(alpha=0.3, gain=0.7), dict(clamp=1.5), dict(gain=3.0, clamp=2.0)]:
        expected = naive.naive_bias_act(x, b, dim=dim, act=act, **kwargs)
        got = bias_act.bias_act(x, b, dim=dim, act=act, impl='ref', **kwargs)
        torch.testing.assert_close(got, expected, **TOLS[torch.float64])
        got32 = bias_act.bias_act(x.float(), b.float(), dim=dim, act=act, **kwargs)
        torch.testing.assert_close(got32.double(), expected, **TOLS[torch.float32])
    torch.testing.assert_close(bias_act.bias_act(x, None, dim=dim, act=act), naive.naive_bias_act(x, None, act=act))


def test_nvidia_defaults():
    """lrelu: alpha 0.2 and gain sqrt(2); relu and swish gain sqrt(2); the rest gain 1."""
    x = torch.tensor([-2.0, 3.0], dtype=torch.float64)
    expected = torch.tensor([-0.4, 3.0], dtype=torch.float64) * math.sqrt(2)
    torch.testing.assert_close(bias_act.bias_act(x, dim=0, act='lrelu'), expected)
    expected = torch.tensor([0.0, 3.0], dtype=torch.float64) * math.sqrt(2)
    torch.testing.assert_close(bias_act.bias_act(x, dim=0, act='relu'), expected)
    torch.testing.assert_close(bias_act.bias_act(x, dim=0), x)
    torch.testing.assert_close(bias_act.bias_act(x, dim=0, act='tanh'), torch.tanh(x))
    for name, gain in [('linear', 1), ('relu', math.sqrt(2)), ('lrelu', math.sqrt(2)), ('swish', math.sqrt(2)),
                       ('tanh', 1), ('sigmoid', 1), ('elu', 1), ('selu', 1), ('softplus', 1)]:
        assert bias_act.activation_funcs[name].def_gain == pytest.approx(gain)
    assert bias_act.activation_funcs['lrelu'].def_alpha == pytest.approx(0.2)


def test_clamp_is_applied_after_gain():
    x = torch.tensor([[1.0, -1.0]])
    y = bias_act.bias_act(x, torch.tensor([2.0]), dim=0, act='linear', gain=10, clamp=25)
    assert y.tolist() == [[25.0, 10.0]]
    assert bias_act.bias_act(torch.tensor([-3.0, 3.0]), dim=0, clamp=0).tolist() == [0.0, 0.0]


def test_channels_last_and_noncontiguous():
    x = _away_from_kinks([2, 3, 4, 5]).to(memory_format=torch.channels_last)
    b = _away_from_kinks([3], seed=3)
    torch.testing.assert_close(bias_act.bias_act(x, b, act='lrelu'), naive.naive_bias_act(x, b, act='lrelu'))
    xt = _away_from_kinks([5, 3]).t()
    torch.testing.assert_close(bias_act.bias_act(xt, b, dim=0, act='swish'),
                               naive.naive_bias_act(xt, b, dim=0, act='swish'))


@pytest.mark.parametrize('act', ACTS)
def test_gradcheck_and_gradgradcheck(act):
    x = _away_from_kinks([2, 3, 2, 2], seed=4).requires_grad_(True)
    b = _away_from_kinks([3], seed=5, scale=0.01).requires_grad_(True)  # Small: x + b stays off the kinks.
    fn = lambda x_, b_: bias_act.bias_act(x_, b_, act=act, gain=1.3, clamp=2.5, impl='ref')  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, b))
    assert torch.autograd.gradgradcheck(fn, (x, b))


@pytest.mark.parametrize('kwargs,error,match', [
    (dict(act='gelu'), ValueError, "unknown activation 'gelu'"),
    (dict(dim=4), ValueError, 'dim=4 is out of range'),
    (dict(b=torch.zeros(5)), ValueError, r'b must be a 1-D tensor of size x.shape\[1\]=3'),
    (dict(b=torch.zeros(3, dtype=torch.float64)), ValueError, 'b must match x in dtype and device'),
    (dict(impl='fast'), ValueError, "impl must be None, 'ref' or 'cuda'"),
])
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        bias_act.bias_act(torch.zeros([2, 3, 4, 4]), **kwargs)


def test_x_must_be_a_tensor():
    with pytest.raises(TypeError, match='x must be a torch.Tensor'):
        bias_act.bias_act([1.0, 2.0])


# --------------------------------------------------------------------------------------------------
# The CUDA path's autograd Functions and derivative formulas, run on the CPU with a line-by-line
# Python transcription of bias_act.cu's kernel behind the plugin's call signature.

def _emulated_act(act, order, v, alpha):
    """bias_act.cu act_eval(): order 0 value, 1 first derivative, 2 second derivative."""
    one, zero = torch.ones_like(v), torch.zeros_like(v)
    pos = v > 0
    if act == 1:
        return v if order == 0 else (one if order == 1 else zero)
    if act == 2:
        return torch.where(pos, v, zero) if order == 0 else (torch.where(pos, one, zero) if order == 1 else zero)
    if act == 3:
        if order == 0:
            return torch.where(pos, v, v * alpha)
        return torch.where(pos, one, one * alpha) if order == 1 else zero
    if act == 4:
        t = torch.tanh(v)
        d = 1 - t * t
        return t if order == 0 else (d if order == 1 else -2 * t * d)
    if act == 5:
        s = 1 / (1 + torch.exp(-v))
        d = s * (1 - s)
        return s if order == 0 else (d if order == 1 else d * (1 - 2 * s))
    if act == 6:
        neg = torch.expm1(v) if order == 0 else torch.exp(v)
        return torch.where(pos, v if order == 0 else (one if order == 1 else zero), neg)
    if act == 7:
        scale, alpha_s = naive.SELU_SCALE, naive.SELU_ALPHA
        neg = scale * alpha_s * (torch.expm1(v) if order == 0 else torch.exp(v))
        return torch.where(pos, scale * v if order == 0 else (scale * one if order == 1 else zero), neg)
    if act == 8:
        s = 1 / (1 + torch.exp(-v))
        inner = torch.log1p(torch.exp(v)) if order == 0 else (s if order == 1 else s * (1 - s))
        return torch.where(v > 20, v if order == 0 else (one if order == 1 else zero), inner)
    if act == 9:
        s = 1 / (1 + torch.exp(-v))
        return v * s if order == 0 else (s * (1 + v * (1 - s)) if order == 1 else s * (1 - s) * (2 + v * (1 - 2 * s)))
    raise KeyError(act)


class EmulatedPlugin:
    """Same arguments and output as `bias_act.cpp`'s `bias_act` (modes 0, 1, 2)."""

    @staticmethod
    def bias_act(x, b, dy, dim, act, mode, alpha, gain, clamp):
        with torch.no_grad():  # A kernel records no autograd history.
            v = x + b.reshape([-1 if i == dim else 1 for i in range(x.ndim)]) if b.numel() else x
            y = _emulated_act(act, 0, v, alpha) * gain
            clamped = (y > clamp) | (y < -clamp) if clamp >= 0 else torch.zeros_like(y, dtype=torch.bool)
            if mode == 0:
                return torch.where(clamped, torch.where(y > 0, clamp, -clamp).to(y.dtype), y)
            return torch.where(clamped, torch.zeros_like(y), dy * gain * _emulated_act(act, mode, v, alpha))


@pytest.mark.parametrize('act', ACTS)
@pytest.mark.parametrize('with_bias', [True, False])
def test_cuda_autograd_with_emulated_kernel(act, with_bias):
    x = _away_from_kinks([2, 3, 2, 2], seed=4).requires_grad_(True)
    b = _away_from_kinks([3], seed=5, scale=0.01).requires_grad_(True) if with_bias else None
    spec, alpha, gain, clamp = bias_act._resolve_args(act, None, 1.3, 2.5)
    fn = lambda x_, b_=None: bias_act._bias_act_cuda(EmulatedPlugin, x_, b_, 1, spec, alpha, gain, clamp)  # noqa: E731
    ref = lambda x_, b_=None: bias_act._bias_act_ref(x_, b_, 1, spec, alpha, gain, clamp)  # noqa: E731
    inputs = (x, b) if with_bias else (x,)
    torch.testing.assert_close(fn(*inputs), ref(*inputs), **TOLS[torch.float64])
    assert torch.autograd.gradcheck(fn, inputs)
    assert torch.autograd.gradgradcheck(fn, inputs)
    # Second derivatives agree with autograd of the reference (a loss of the gradient, like R1's).
    gg = [torch.autograd.grad(torch.autograd.grad(f_(*inputs).square().sum(), x, create_graph=True)[0].sin().sum(),
                              inputs) for f_ in (fn, ref)]
    for g_emulated, g_ref in zip(*gg):
        torch.testing.assert_close(g_emulated, g_ref, **TOLS[torch.float64])


# --------------------------------------------------------------------------------------------------
# CUDA vs ref (skipped without a GPU).

def _cuda_plugin_or_fail():
    from pstyle.torch_utils.ops import _impl
    plugin = _impl.get_plugin('bias_act')
    assert plugin is not None, 'the bias_act CUDA plugin failed to build on a CUDA machine (see the warning)'


@pytest.mark.cuda
@pytest.mark.parametrize('dtype', [torch.float32, torch.float16])
@pytest.mark.parametrize('memory_format', [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize('act', ACTS)
@pytest.mark.parametrize('clamp', [None, 1.5])
def test_cuda_matches_ref(act, dtype, memory_format, clamp):
    _cuda_plugin_or_fail()
    x = _away_from_kinks([3, 6, 5, 7], dtype=dtype).cuda().to(memory_format=memory_format).requires_grad_(True)
    b = _away_from_kinks([6], seed=1, dtype=dtype, scale=0.01).cuda().requires_grad_(True)
    kwargs = dict(act=act, clamp=clamp, gain=(None if clamp is None else 1.2))
    y_cuda = bias_act.bias_act(x, b, impl='cuda', **kwargs)
    y_ref = bias_act.bias_act(x, b, impl='ref', **kwargs)
    assert y_cuda.dtype == dtype
    torch.testing.assert_close(y_cuda, y_ref, **TOLS[dtype])
    # First and second derivatives (through a loss that depends on the gradient, like R1).
    dy = torch.randn_like(y_ref).requires_grad_(True)
    grads_cuda = torch.autograd.grad(y_cuda, [x, b], dy, create_graph=True)
    grads_ref = torch.autograd.grad(y_ref, [x, b], dy, create_graph=True)
    for g_cuda, g_ref in zip(grads_cuda, grads_ref):
        torch.testing.assert_close(g_cuda, g_ref, **TOLS[dtype])
    gg_cuda = torch.autograd.grad(grads_cuda[0].square().sum(), [x, b, dy], allow_unused=True)
    gg_ref = torch.autograd.grad(grads_ref[0].square().sum(), [x, b, dy], allow_unused=True)
    for g_cuda, g_ref, wrt in zip(gg_cuda, gg_ref, [x, b, dy]):
        # None means zero (e.g. d2/dx2 of a piecewise-linear activation).
        g_cuda = torch.zeros_like(wrt) if g_cuda is None else g_cuda
        g_ref = torch.zeros_like(wrt) if g_ref is None else g_ref
        torch.testing.assert_close(g_cuda, g_ref, **TOLS[dtype])


@pytest.mark.cuda
@pytest.mark.parametrize('act', ACTS)
def test_cuda_gradcheck_float64(act):
    _cuda_plugin_or_fail()
    x = _away_from_kinks([2, 3, 2, 2], seed=4).cuda().requires_grad_(True)
    b = _away_from_kinks([3], seed=5, scale=0.01).cuda().requires_grad_(True)
    fn = lambda x_, b_: bias_act.bias_act(x_, b_, act=act, gain=1.3, clamp=2.5, impl='cuda')  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, b))
    assert torch.autograd.gradgradcheck(fn, (x, b))
