"""Float64 naive references (`expected_fn`) for the ops tests, written from the definitions in numpy
(explicit loops over filter and kernel taps), independently of torch_utils/ops. Not a test module:
loaded by path."""

import math

import numpy as np
import torch

# One per-dtype tolerance table for every ops comparison (ref vs naive, CUDA vs ref).
TOLS = {
    torch.float64: dict(atol=1e-10, rtol=1e-8),
    torch.float32: dict(atol=2e-5, rtol=1e-4),
    torch.float16: dict(atol=1e-2, rtol=1e-2),
}

SQRT2 = math.sqrt(2)
SELU_ALPHA, SELU_SCALE = 1.6732632423543772, 1.0507009873554805


def _np(t):
    return t.detach().cpu().double().numpy() if isinstance(t, torch.Tensor) else np.asarray(t, dtype=np.float64)


def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def _pad4(p):
    if isinstance(p, int):
        return p, p, p, p
    return (p[0], p[0], p[1], p[1]) if len(p) == 2 else tuple(p)


# --------------------------------------------------------------------------------------------------
# bias_act

def naive_act(v, act, alpha):
    if act == 'linear':
        return v
    if act == 'relu':
        return np.maximum(v, 0)
    if act == 'lrelu':
        return np.where(v > 0, v, v * alpha)
    if act == 'tanh':
        return np.tanh(v)
    if act == 'sigmoid':
        return 1 / (1 + np.exp(-v))
    if act == 'elu':
        return np.where(v > 0, v, np.expm1(np.minimum(v, 0)))
    if act == 'selu':
        return SELU_SCALE * np.where(v > 0, v, SELU_ALPHA * np.expm1(np.minimum(v, 0)))
    if act == 'softplus':
        return np.where(v > 20, v, np.log1p(np.exp(np.minimum(v, 20))))
    if act == 'swish':
        return v / (1 + np.exp(-v))
    raise KeyError(act)


NAIVE_GAINS = dict(linear=1, relu=SQRT2, lrelu=SQRT2, tanh=1, sigmoid=1, elu=1, selu=1, softplus=1, swish=SQRT2)


def naive_bias_act(x, b=None, dim=1, act='linear', alpha=None, gain=None, clamp=None):
    v = _np(x).copy()
    if b is not None:
        shape = [1] * v.ndim
        shape[dim] = -1
        v = v + _np(b).reshape(shape)
    v = naive_act(v, act, 0.2 if alpha is None else alpha)
    v = v * (NAIVE_GAINS[act] if gain is None else gain)
    if clamp is not None:
        v = np.clip(v, -clamp, clamp)
    return torch.from_numpy(v)


# --------------------------------------------------------------------------------------------------
# upfirdn2d: zero insertion, padding/cropping, true convolution, decimation -- each as a loop.

def naive_upfirdn2d(x, f, up=1, down=1, padding=0, flip_filter=False, gain=1):
    x = _np(x)
    upx, upy = _pair(up)
    downx, downy = _pair(down)
    px0, px1, py0, py1 = _pad4(padding)
    f = np.ones([1, 1]) if f is None else _np(f)
    f = np.outer(f, f) if f.ndim == 1 else f  # A separable filter runs along x then y: f[y] * f[x].
    f = f * gain
    n, c, h, w = x.shape
    upsampled = np.zeros([n, c, h * upy, w * upx])
    upsampled[:, :, ::upy, ::upx] = x  # Sample (i, j) goes to (i * upy, j * upx); the rest stay zero.
    hp, wp = h * upy + py0 + py1, w * upx + px0 + px1
    padded = np.zeros([n, c, hp, wp])
    # Padded pixel (i, j) holds upsampled pixel (i - py0, j - px0) when that exists (negative pads crop).
    src_y0, src_x0 = max(-py0, 0), max(-px0, 0)
    dst_y0, dst_x0 = max(py0, 0), max(px0, 0)
    rows = min(h * upy - src_y0, hp - dst_y0)
    cols = min(w * upx - src_x0, wp - dst_x0)
    if rows > 0 and cols > 0:
        padded[:, :, dst_y0:dst_y0 + rows, dst_x0:dst_x0 + cols] = \
            upsampled[:, :, src_y0:src_y0 + rows, src_x0:src_x0 + cols]
    fh, fw = f.shape
    hc, wc = hp - fh + 1, wp - fw + 1
    out = np.zeros([n, c, hc, wc])
    for ky in range(fh):
        for kx in range(fw):
            # True convolution: out[y] = sum_k in[y + fh-1 - k] f[k]; flip_filter makes it a correlation.
            fy, fx = (ky, kx) if not flip_filter else (fh - 1 - ky, fw - 1 - kx)
            out += padded[:, :, fh - 1 - ky:fh - 1 - ky + hc, fw - 1 - kx:fw - 1 - kx + wc] * f[fy, fx]
    return torch.from_numpy(np.ascontiguousarray(out[:, :, ::downy, ::downx]))


# --------------------------------------------------------------------------------------------------
# conv2d_resample: upsample (filter, gain up^2) with padding, convolve, filter + decimate.

def naive_conv2d(x, w, groups=1, flip_weight=True):
    """Valid grouped 2-D correlation (flip_weight=True) or true convolution, by loops over taps."""
    x, w = _np(x), _np(w)
    n, c, h, wd = x.shape
    o, ipg, kh, kw = w.shape
    opg = o // groups
    out = np.zeros([n, o, h - kh + 1, wd - kw + 1])
    for g in range(groups):
        xg = x[:, g * ipg:(g + 1) * ipg]
        wg = w[g * opg:(g + 1) * opg]
        for ky in range(kh):
            for kx in range(kw):
                tap = wg[:, :, ky, kx] if flip_weight else wg[:, :, kh - 1 - ky, kw - 1 - kx]  # [O/g, I/g]
                patch = xg[:, :, ky:ky + out.shape[2], kx:kx + out.shape[3]]
                out[:, g * opg:(g + 1) * opg] += np.einsum('nihw,oi->nohw', patch, tap)
    return torch.from_numpy(out)


def naive_conv2d_resample(x, w, f=None, up=1, down=1, padding=0, groups=1, flip_weight=True, flip_filter=False):
    px0, px1, py0, py1 = _pad4(padding)
    fh, fw = (1, 1) if f is None else (f.shape[0], f.shape[-1])
    if up > 1:  # Centre the filter (documented NVIDIA padding of upsample2d / downsample2d).
        px0, px1 = px0 + (fw + up - 1) // 2, px1 + (fw - up) // 2
        py0, py1 = py0 + (fh + up - 1) // 2, py1 + (fh - up) // 2
    if down > 1:
        px0, px1 = px0 + (fw - down + 1) // 2, px1 + (fw - down) // 2
        py0, py1 = py0 + (fh - down + 1) // 2, py1 + (fh - down) // 2
    if up > 1:
        x = naive_upfirdn2d(x, f, up=up, padding=[px0, px1, py0, py1], gain=up ** 2, flip_filter=flip_filter)
    else:
        x = naive_upfirdn2d(x, None, padding=[px0, px1, py0, py1])
    x = naive_conv2d(x, w, groups=groups, flip_weight=flip_weight)
    if down > 1:
        x = naive_upfirdn2d(x, f, down=down, flip_filter=flip_filter)
    return x


# --------------------------------------------------------------------------------------------------
# modulated_conv2d: per-sample modulation / demodulation (StyleGAN2 Eq. 1-3), one sample at a time.

def naive_modulated_conv2d(x, weight, styles, noise=None, up=1, down=1, padding=0, resample_filter=None,
                           demodulate=True, flip_weight=True):
    xs, ws, ss = _np(x), _np(weight), _np(styles)
    outs = []
    for i in range(xs.shape[0]):
        wi = ws * ss[i][None, :, None, None]
        if demodulate:
            wi = wi / np.sqrt((wi ** 2).sum(axis=(1, 2, 3), keepdims=True) + 1e-8)
        outs.append(naive_conv2d_resample(xs[i:i + 1], wi, resample_filter, up=up, down=down, padding=padding,
                                          flip_weight=flip_weight))
    out = torch.cat(outs)
    return out if noise is None else out + torch.from_numpy(_np(noise))
