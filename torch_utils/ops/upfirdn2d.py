"""Upsample, FIR-filter and downsample 2-D images, with a pure-PyTorch `ref` path and a CUDA path.

Same signatures and semantics as NVIDIA stylegan2-ada-pytorch `torch_utils/ops/upfirdn2d.py`:
1. upsample by inserting up-1 zeros after every pixel, 2. pad (negative padding crops),
3. convolve with the FIR filter (a true convolution, so the filter is flipped for `conv2d`
   unless flip_filter=True), scaled by gain**(f.ndim/2) per pass, 4. keep every down-th pixel.
"""

import torch
import torch.nn.functional as F
from pstyle.torch_utils.ops import _impl


def _parse_scaling(scaling, what):
    """int or [sx, sy] -> (sx, sy), each >= 1."""
    if isinstance(scaling, int):
        scaling = [scaling, scaling]
    if not (isinstance(scaling, (list, tuple)) and len(scaling) == 2 and all(isinstance(s, int) for s in scaling)):
        raise ValueError(f'upfirdn2d: {what} must be an int or a pair of ints, got {scaling!r}')
    sx, sy = scaling
    if sx < 1 or sy < 1:
        raise ValueError(f'upfirdn2d: {what} must be >= 1, got {scaling!r}')
    return sx, sy


def _parse_padding(padding):
    """int, [px, py] or [x0, x1, y0, y1] -> (x0, x1, y0, y1); negative values crop."""
    if isinstance(padding, int):
        padding = [padding, padding]
    if not (isinstance(padding, (list, tuple)) and len(padding) in (2, 4) and all(isinstance(p, int) for p in padding)):
        raise ValueError(f'upfirdn2d: padding must be an int, [px, py] or [x0, x1, y0, y1] of ints, got {padding!r}')
    if len(padding) == 2:
        padx, pady = padding
        padding = [padx, padx, pady, pady]
    return tuple(padding)


def _get_filter_size(f):
    """(fw, fh) of a 1-D (separable) or 2-D [fh, fw] filter; (1, 1) for None."""
    if f is None:
        return 1, 1
    if not isinstance(f, torch.Tensor) or f.ndim not in (1, 2) or f.numel() == 0:
        raise ValueError(f'upfirdn2d: f must be None or a non-empty 1-D or 2-D tensor, got {getattr(f, "shape", f)!r}')
    return int(f.shape[-1]), int(f.shape[0])


def setup_filter(f, device=torch.device('cpu'), normalize=True, flip_filter=False, gain=1, separable=None):
    """Convenience: turn a list of taps into the float32 filter tensor the ops take (NVIDIA `setup_filter`).

    A 1-D list stays separable when `separable` is True (default: when it has >= 8 taps), else
    it becomes its outer product; `normalize` divides by the sum, `gain` is spread as gain**(ndim/2).
    """
    f = torch.as_tensor(1 if f is None else f, dtype=torch.float32, device='cpu')  # Real even under torch.device('meta').
    if f.ndim not in (0, 1, 2) or f.numel() == 0:
        raise ValueError(f'setup_filter: f must be a scalar, 1-D or 2-D and non-empty, got shape {tuple(f.shape)}')
    if f.ndim == 0:
        f = f[None]
    if separable is None:
        separable = (f.ndim == 1 and f.numel() >= 8)
    if f.ndim == 1 and not separable:
        f = torch.outer(f, f)  # [1,3,3,1] -> 4x4, as NVIDIA.
    if f.ndim != (1 if separable else 2):
        raise ValueError('setup_filter: a 2-D filter cannot be separable')
    if normalize:
        f = f / f.sum()
    if flip_filter:
        f = f.flip(list(range(f.ndim)))
    f = f * (gain ** (f.ndim / 2))
    return f.to(device=device)


def _check_inputs(x, f):
    if not isinstance(x, torch.Tensor) or x.ndim != 4:
        got = getattr(x, 'shape', type(x).__name__)
        raise ValueError(f'upfirdn2d: x must be a 4-D [N, C, H, W] tensor, got {got!r}')
    _get_filter_size(f)
    if f is not None and (not f.is_floating_point() or f.requires_grad):
        raise ValueError('upfirdn2d: f must be a floating-point tensor without requires_grad '
                         '(gradients flow to x only)')


def _out_size(size, up, pad0, pad1, taps, down):
    """Output length along one axis; same formula as the CUDA kernel."""
    return (size * up + pad0 + pad1 - taps + down) // down


def upfirdn2d(x, f, up=1, down=1, padding=0, flip_filter=False, gain=1, impl=None):
    """Pad, upsample, FIR-filter and downsample a batch of 2-D images (NVIDIA `upfirdn2d`).

    x: [N, C, H, W]; f: float32 [fh, fw], separable [fw] or None (identity);
    up/down: int or [x, y]; padding: int, [px, py] or [x0, x1, y0, y1] (negative crops);
    returns [N, C, (H*upy + py0 + py1 - fh + downy) // downy, (same along x)].
    """
    _check_inputs(x, f)
    upx, upy = _parse_scaling(up, 'up')
    downx, downy = _parse_scaling(down, 'down')
    pad = _parse_padding(padding)
    fw, fh = _get_filter_size(f)
    out_w = _out_size(x.shape[3], upx, pad[0], pad[1], fw, downx)
    out_h = _out_size(x.shape[2], upy, pad[2], pad[3], fh, downy)
    if out_w < 1 or out_h < 1:
        raise ValueError(f'upfirdn2d: empty output ({out_h}x{out_w}) for input {tuple(x.shape)}, '
                         f'filter {fh}x{fw}, up={up}, down={down}, padding={padding}')
    if f is None:
        f = torch.ones([1, 1], dtype=torch.float32, device=x.device)
    if _impl.use_cuda(impl, x):
        plugin = _impl.get_plugin('upfirdn2d')
        if plugin is not None:
            return _upfirdn2d_cuda(plugin, x, f, (upx, upy), (downx, downy), pad, flip_filter, gain)
    return _upfirdn2d_ref(x, f, (upx, upy), (downx, downy), pad, flip_filter, gain)


def _upfirdn2d_ref(x, f, up, down, pad, flip_filter, gain):
    """Pure-PyTorch path with NVIDIA's `_upfirdn2d_ref` semantics, arranged to be fast on the CPU.

    A separable filter runs as two 1-D passes (x, then y) with gain**0.5 each, as NVIDIA's.
    """
    f = (f * (gain ** (f.ndim / 2))).to(device=x.device, dtype=x.dtype)
    if f.ndim == 2:
        return _upfirdn_pass(x, f, up, down, pad, flip_filter)
    (upx, upy), (downx, downy), (px0, px1, py0, py1) = up, down, pad
    x = _upfirdn_pass(x, f[None, :], (upx, 1), (downx, 1), (px0, px1, 0, 0), flip_filter)
    return _upfirdn_pass(x, f[:, None], (1, upy), (1, downy), (0, 0, py0, py1), flip_filter)


def _upfirdn_pass(x, f, up, down, pad, flip_filter):
    """One 2-D filter f [fh, fw] (gain applied): zero-insert by up, pad, convolve, keep every down-th pixel."""
    (upx, upy), (downx, downy) = up, down
    px0, px1, py0, py1 = pad
    num_channels = x.shape[1]
    fh, fw = f.shape
    if upx == 1 and upy == 1:
        # conv2d correlates, so flip the filter to convolve (NVIDIA: flip unless flip_filter).
        w = (f if flip_filter else f.flip([0, 1]))[None, None].expand(num_channels, 1, fh, fw).contiguous()
        # The symmetric part of the padding goes to conv2d (no copy); the stride decimates.
        cx, cy = max(min(px0, px1), 0), max(min(py0, py1), 0)
        x = _pad(x, [px0 - cx, px1 - cx, py0 - cy, py1 - cy])
        return F.conv2d(x, w, stride=(downy, downx), padding=(cy, cx), groups=num_channels)
    # conv_transpose2d(x, f, stride=up) is the full true convolution of the zero-inserted x with f,
    # i.e. NVIDIA's zero insertion + conv without multiplying by the inserted zeros. Its output
    # starts fw-1 pixels before the padded signal's valid convolution and ends fw-up pixels before it.
    w = (f.flip([0, 1]) if flip_filter else f)[None, None].expand(num_channels, 1, fh, fw).contiguous()
    ax0, ax1, ay0, ay1 = px0 - (fw - 1), px1 - (fw - upx), py0 - (fh - 1), py1 - (fh - upy)
    cx, cy = max(min(-ax0, -ax1), 0), max(min(-ay0, -ay1), 0)  # Common crop, done by the padding argument.
    x = F.conv_transpose2d(x, w, stride=(upy, upx), padding=(cy, cx), groups=num_channels)
    x = _pad(x, [ax0 + cx, ax1 + cx, ay0 + cy, ay1 + cy])
    return x[:, :, ::downy, ::downx] if (downx > 1 or downy > 1) else x


def _pad(x, pad):
    """Pad with zeros by [x0, x1, y0, y1], then crop where negative (NVIDIA's order, so a crop may
    reach into the new zeros); no copy when all are zero."""
    if any(p > 0 for p in pad):
        x = F.pad(x, [max(p, 0) for p in pad])
    x0, x1, y0, y1 = (max(-p, 0) for p in pad)
    return x[:, :, y0:x.shape[2] - y1, x0:x.shape[3] - x1] if (x0 or x1 or y0 or y1) else x


# --------------------------------------------------------------------------------------------------
# CUDA path: the kernel takes one 2-D filter; a separable filter runs as two passes (x, then y).

class _Upfirdn2dCuda(torch.autograd.Function):
    """One upfirdn2d pass with a 2-D filter f [fh, fw] scaled by `scale` (the gain already exponentiated).

    The gradient is again an upfirdn2d (the adjoint): flipped filter, up and down swapped, and the
    padding that maps each input pixel back onto itself, so derivatives of any order work.
    """

    @staticmethod
    def forward(ctx, x, f, plugin, up, down, pad, flip_filter, scale):  # pylint: disable=arguments-differ
        ctx.save_for_backward(f)
        ctx.args = (plugin, up, down, pad, flip_filter, scale)
        ctx.in_size = x.shape[2:]
        y = plugin.upfirdn2d(x, f, up[0], up[1], down[0], down[1], *pad, flip_filter, scale)
        ctx.out_size = y.shape[2:]
        return y

    @staticmethod
    def backward(ctx, dy):  # pylint: disable=arguments-differ
        (f,) = ctx.saved_tensors
        plugin, (upx, upy), (downx, downy), (px0, px1, py0, py1), flip_filter, scale = ctx.args
        (in_h, in_w), (out_h, out_w) = ctx.in_size, ctx.out_size
        fh, fw = f.shape
        # y[o] = sum_i x[i] h[i*up + p0 - o*down]  =>  dx[i] = sum_o dy[o] h[i*up + p0 - o*down]:
        # an upfirdn2d of dy by (down, up) with the reversed filter, leading pad f-1-p0, and the
        # trailing pad that makes the result exactly H (resp. W) long.
        grad_pad = (
            fw - 1 - px0, in_w * upx - out_w * downx + px0 - upx + 1,
            fh - 1 - py0, in_h * upy - out_h * downy + py0 - upy + 1,
        )
        dx = None
        if ctx.needs_input_grad[0]:
            dx = _Upfirdn2dCuda.apply(dy, f, plugin, (downx, downy), (upx, upy), grad_pad, not flip_filter, scale)
        return dx, None, None, None, None, None, None, None


def _upfirdn2d_cuda(plugin, x, f, up, down, pad, flip_filter, gain):
    f = f.to(device=x.device, dtype=torch.float32)
    if f.ndim == 2:
        return _Upfirdn2dCuda.apply(x, f, plugin, up, down, pad, flip_filter, float(gain))
    (upx, upy), (downx, downy), (px0, px1, py0, py1) = up, down, pad
    scale = float(gain) ** 0.5  # gain ** (f.ndim / 2) per 1-D pass, as the reference.
    x = _Upfirdn2dCuda.apply(x, f[None, :], plugin, (upx, 1), (downx, 1), (px0, px1, 0, 0), flip_filter, scale)
    return _Upfirdn2dCuda.apply(x, f[:, None], plugin, (1, upy), (1, downy), (0, 0, py0, py1), flip_filter, scale)


def filter2d(x, f, padding=0, flip_filter=False, gain=1, impl=None):
    """Filter with f keeping the size (NVIDIA `filter2d`): padding is added around the centred filter."""
    padx0, padx1, pady0, pady1 = _parse_padding(padding)
    fw, fh = _get_filter_size(f)
    p = [padx0 + fw // 2, padx1 + (fw - 1) // 2, pady0 + fh // 2, pady1 + (fh - 1) // 2]
    return upfirdn2d(x, f, padding=p, flip_filter=flip_filter, gain=gain, impl=impl)


def upsample2d(x, f, up=2, padding=0, flip_filter=False, gain=1, impl=None):
    """Upsample by `up` then filter (NVIDIA `upsample2d`): output [N, C, H*upy, W*upx] plus padding.

    gain is multiplied by upx*upy to keep the mean (zero insertion divides it by that).
    """
    upx, upy = _parse_scaling(up, 'up')
    padx0, padx1, pady0, pady1 = _parse_padding(padding)
    fw, fh = _get_filter_size(f)
    p = [
        padx0 + (fw + upx - 1) // 2,
        padx1 + (fw - upx) // 2,
        pady0 + (fh + upy - 1) // 2,
        pady1 + (fh - upy) // 2,
    ]
    return upfirdn2d(x, f, up=up, padding=p, flip_filter=flip_filter, gain=gain * upx * upy, impl=impl)


def downsample2d(x, f, down=2, padding=0, flip_filter=False, gain=1, impl=None):
    """Filter then downsample by `down` (NVIDIA `downsample2d`): output [N, C, H//downy, W//downx] plus padding."""
    downx, downy = _parse_scaling(down, 'down')
    padx0, padx1, pady0, pady1 = _parse_padding(padding)
    fw, fh = _get_filter_size(f)
    p = [
        padx0 + (fw - downx + 1) // 2,
        padx1 + (fw - downx) // 2,
        pady0 + (fh - downy + 1) // 2,
        pady1 + (fh - downy) // 2,
    ]
    return upfirdn2d(x, f, down=down, padding=p, flip_filter=flip_filter, gain=gain, impl=impl)
