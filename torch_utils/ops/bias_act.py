"""Fused bias + activation + gain + clamp, with a pure-PyTorch `ref` path and a CUDA path.

Same signature and semantics as NVIDIA stylegan2-ada-pytorch `torch_utils/ops/bias_act.py`:
y = clamp(act(x + b) * gain, -clamp, clamp), where b is broadcast along `dim`.
"""

import dataclasses
import math

import torch
import torch.nn.functional as F
from pstyle.torch_utils.ops import _impl


@dataclasses.dataclass(frozen=True)
class ActivationSpec:
    func: object            # Reference implementation: func(x, alpha) -> y.
    def_alpha: float        # Default alpha (only lrelu uses it).
    def_gain: float         # Default gain: sqrt(2) for the ReLU family (He et al. 2015), else 1.
    cuda_idx: int           # Activation index understood by bias_act.cu.
    has_2nd_grad: bool      # False where the second derivative is zero almost everywhere.


# NVIDIA's table: same names, default alphas and gains.
activation_funcs = {
    'linear':   ActivationSpec(lambda x, alpha: x,                            0.0, 1.0,          1, False),
    'relu':     ActivationSpec(lambda x, alpha: F.relu(x),                    0.0, math.sqrt(2), 2, False),
    'lrelu':    ActivationSpec(lambda x, alpha: F.leaky_relu(x, alpha),       0.2, math.sqrt(2), 3, False),
    'tanh':     ActivationSpec(lambda x, alpha: torch.tanh(x),                0.0, 1.0,          4, True),
    'sigmoid':  ActivationSpec(lambda x, alpha: torch.sigmoid(x),             0.0, 1.0,          5, True),
    'elu':      ActivationSpec(lambda x, alpha: F.elu(x),                     0.0, 1.0,          6, True),
    'selu':     ActivationSpec(lambda x, alpha: F.selu(x),                    0.0, 1.0,          7, True),
    'softplus': ActivationSpec(lambda x, alpha: F.softplus(x),                0.0, 1.0,          8, True),
    'swish':    ActivationSpec(lambda x, alpha: torch.sigmoid(x) * x,         0.0, math.sqrt(2), 9, True),
}


def _resolve_args(act, alpha, gain, clamp):
    """Fill NVIDIA's per-activation defaults; clamp < 0 means no clamping."""
    if act not in activation_funcs:
        raise ValueError(f"bias_act: unknown activation {act!r}; expected one of {sorted(activation_funcs)}")
    spec = activation_funcs[act]
    alpha = float(alpha if alpha is not None else spec.def_alpha)
    gain = float(gain if gain is not None else spec.def_gain)
    clamp = float(clamp if clamp is not None else -1)
    return spec, alpha, gain, clamp


def _check_inputs(x, b, dim):
    if not isinstance(x, torch.Tensor):
        raise TypeError(f'bias_act: x must be a torch.Tensor, got {type(x).__name__}')
    if x.ndim > 0 and not 0 <= dim < x.ndim:
        raise ValueError(f'bias_act: dim={dim} is out of range for x with {x.ndim} dimensions')
    if b is not None and x.ndim == 0:
        raise ValueError('bias_act: b cannot be used with a 0-dimensional x')
    if b is not None:
        if not isinstance(b, torch.Tensor) or b.ndim != 1 or b.shape[0] != x.shape[dim]:
            shape = tuple(b.shape) if isinstance(b, torch.Tensor) else type(b).__name__
            raise ValueError(f'bias_act: b must be a 1-D tensor of size x.shape[{dim}]={x.shape[dim]}, got {shape}')
        if b.dtype != x.dtype or b.device != x.device:
            raise ValueError(f'bias_act: b must match x in dtype and device '
                             f'({b.dtype}/{b.device} vs {x.dtype}/{x.device})')


def bias_act(x, b=None, dim=1, act='linear', alpha=None, gain=None, clamp=None, impl=None):
    """Fused bias, activation, gain and clamp (NVIDIA `bias_act`); differentiable twice.

    x: tensor of any shape; b: [x.shape[dim]] or None; act: a key of `activation_funcs`;
    alpha: lrelu slope (default 0.2); gain: scale after the activation (default per `act`);
    clamp: clamp the result to [-clamp, clamp] after the gain (None = no clamping);
    impl: 'cuda', 'ref' or None (CUDA when x is on a GPU and the plugin builds).
    """
    _check_inputs(x, b, dim)
    spec, alpha, gain, clamp = _resolve_args(act, alpha, gain, clamp)
    if _impl.use_cuda(impl, x):
        plugin = _plugin()
        if plugin is not None:
            return _bias_act_cuda(plugin, x, b, dim, spec, alpha, gain, clamp)
    return _bias_act_ref(x, b, dim, spec, alpha, gain, clamp)


def _bias_act_ref(x, b, dim, spec, alpha, gain, clamp):
    """Pure-PyTorch path, operation for operation as NVIDIA's `_bias_act_ref`."""
    if b is not None:
        x = x + b.reshape([-1 if i == dim else 1 for i in range(x.ndim)])
    x = spec.func(x, alpha)
    if gain != 1:
        x = x * gain
    if clamp >= 0:
        x = x.clamp(-clamp, clamp)  # Clamp after the gain, as NVIDIA (conv_clamp in the networks).
    return x


# --------------------------------------------------------------------------------------------------
# CUDA path. The kernel evaluates, per element with v = x + b:
#   mode 0: clamp(act(v) * gain);  mode 1: dy * gain * act'(v);  mode 2: dy * gain * act''(v),
# modes 1-2 zeroed where the clamp was active (|act(v) * gain| > clamp), as torch.clamp's gradient.

_FORWARD, _GRAD1, _GRAD2 = 0, 1, 2


class _Config:
    """Non-tensor arguments shared by the forward and both backward passes."""

    def __init__(self, plugin, dim, spec, alpha, gain, clamp):
        self.plugin, self.dim, self.spec = plugin, dim, spec
        self.alpha, self.gain, self.clamp = alpha, gain, clamp

    def run(self, mode, x, b, dy=None):
        empty = x.new_empty([0])
        return self.plugin.bias_act(x, empty if b is None else b, empty if dy is None else dy, self.dim,
                                    self.spec.cuda_idx, mode, self.alpha, self.gain, self.clamp)

    def reduce_to_bias(self, t):
        """Sum a full-size gradient over every axis but `dim` (the bias gradient)."""
        return t.sum([i for i in range(t.ndim) if i != self.dim])


class _BiasActCuda(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, b, cfg):  # pylint: disable=arguments-differ
        ctx.cfg = cfg
        ctx.save_for_backward(x, b)
        return cfg.run(_FORWARD, x, b)

    @staticmethod
    def backward(ctx, dy):  # pylint: disable=arguments-differ
        x, b = ctx.saved_tensors
        dx = _BiasActCudaGrad.apply(dy, x, b, ctx.cfg)
        db = ctx.cfg.reduce_to_bias(dx) if ctx.needs_input_grad[1] else None
        return dx, db, None


class _BiasActCudaGrad(torch.autograd.Function):
    """dx = dy * d/dx[bias_act]; itself differentiable, so R1 / path-length penalties work."""

    @staticmethod
    def forward(ctx, dy, x, b, cfg):  # pylint: disable=arguments-differ
        ctx.cfg = cfg
        ctx.save_for_backward(dy, x, b)
        return cfg.run(_GRAD1, x, b, dy)

    @staticmethod
    def backward(ctx, d_dx):  # pylint: disable=arguments-differ
        dy, x, b = ctx.saved_tensors
        cfg = ctx.cfg
        d_dy = d_x = d_b = None
        if ctx.needs_input_grad[0]:
            d_dy = _BiasActCudaGrad.apply(d_dx, x, b, cfg)  # dx is linear in dy.
        if cfg.spec.has_2nd_grad and (ctx.needs_input_grad[1] or ctx.needs_input_grad[2]):
            d_x = cfg.run(_GRAD2, x, b, d_dx * dy)  # Third derivatives are not supported (like NVIDIA's).
            d_b = cfg.reduce_to_bias(d_x) if ctx.needs_input_grad[2] else None
        return d_dy, d_x, d_b, None


def _bias_act_cuda(plugin, x, b, dim, spec, alpha, gain, clamp):
    if x.numel() == 0 or x.ndim == 0:
        return _bias_act_ref(x, b, dim, spec, alpha, gain, clamp)  # Nothing worth a kernel launch.
    return _BiasActCuda.apply(x, b, _Config(plugin, dim, spec, alpha, gain, clamp))


def _plugin():
    """The compiled bias_act extension, or None (built on first CUDA use, never at import)."""
    return _impl.get_plugin('bias_act')
