"""2-D convolution with optional up/down-sampling (NVIDIA stylegan2-ada-pytorch `conv2d_resample`).

Semantics: upsample by `up` (zero insertion, then the FIR filter f with gain up**2), pad, convolve
with w, then filter with f and keep every `down`-th pixel. The fast paths below reorder these steps
(strided and transposed convolutions) exactly as NVIDIA does, so results agree to rounding.
"""

import torch
import torch.nn.functional as F
from pstyle.torch_utils.ops import upfirdn2d as _up


def _conv2d_wrapper(x, w, stride=1, padding=0, groups=1, transpose=False, flip_weight=True):
    """conv2d / conv_transpose2d; conv2d correlates (flip_weight=True), flipping w makes it convolve."""
    kh, kw = w.shape[2:]
    if not flip_weight and (kw > 1 or kh > 1):
        w = w.flip([2, 3])
    if transpose:
        return F.conv_transpose2d(x, w, stride=stride, padding=padding, groups=groups)
    return F.conv2d(x, w, stride=stride, padding=padding, groups=groups)


def _check_inputs(x, w, f, up, down, groups):
    if not isinstance(x, torch.Tensor) or x.ndim != 4:
        raise ValueError(f'conv2d_resample: x must be a 4-D [N, C, H, W] tensor, got {getattr(x, "shape", x)!r}')
    if not isinstance(w, torch.Tensor) or w.ndim != 4 or w.dtype != x.dtype:
        raise ValueError(f'conv2d_resample: w must be a 4-D [O, I/groups, kh, kw] tensor of x.dtype={x.dtype}, '
                         f'got {getattr(w, "shape", w)!r} {getattr(w, "dtype", "")}')
    if f is not None and (not isinstance(f, torch.Tensor) or f.ndim not in (1, 2) or f.dtype != torch.float32):
        raise ValueError('conv2d_resample: f must be None or a float32 1-D or 2-D filter from setup_filter()')
    for name, value in (('up', up), ('down', down), ('groups', groups)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f'conv2d_resample: {name} must be an int >= 1, got {value!r}')
    if x.shape[1] != w.shape[1] * groups or w.shape[0] % groups != 0:
        raise ValueError(f'conv2d_resample: x has {x.shape[1]} channels but w {tuple(w.shape)} with groups={groups} '
                         f'expects {w.shape[1] * groups}')


def _transposed_weight(w, groups):
    """[O, I/g, kh, kw] -> [I, O/g, kh, kw], the layout conv_transpose2d expects for the same mapping."""
    out_channels, in_per_group, kh, kw = w.shape
    if groups == 1:
        return w.transpose(0, 1)
    w = w.reshape(groups, out_channels // groups, in_per_group, kh, kw)  # [g, O/g, I/g, kh, kw]
    w = w.transpose(1, 2)
    return w.reshape(groups * in_per_group, out_channels // groups, kh, kw)


def conv2d_resample(x, w, f=None, up=1, down=1, padding=0, groups=1, flip_weight=True, flip_filter=False):
    """Convolve x [N, C, H, W] with w [O, C/groups, kh, kw], upsampling/downsampling with filter f.

    padding: int, [px, py] or [x0, x1, y0, y1], applied to the (upsampled) input of the convolution;
    flip_weight=True is a correlation (like conv2d), False a true convolution;
    returns [N, O, H', W'] with H' = (H*up + py0 + py1 - kh + 1) // down for the usual filters.
    """
    _check_inputs(x, w, f, up, down, groups)
    out_channels, in_per_group, kh, kw = w.shape
    fw, fh = _up._get_filter_size(f)
    px0, px1, py0, py1 = _up._parse_padding(padding)

    # Same padding adjustment as upsample2d() / downsample2d() so the filter stays centred.
    if up > 1:
        px0 += (fw + up - 1) // 2
        px1 += (fw - up) // 2
        py0 += (fh + up - 1) // 2
        py1 += (fh - up) // 2
    if down > 1:
        px0 += (fw - down + 1) // 2
        px1 += (fw - down) // 2
        py0 += (fh - down + 1) // 2
        py1 += (fh - down) // 2

    # 1x1 kernel, downsampling only: downsample first (fewer pixels to convolve).
    if kw == 1 and kh == 1 and (down > 1 and up == 1):
        x = _up.upfirdn2d(x, f, down=down, padding=[px0, px1, py0, py1], flip_filter=flip_filter)
        return _conv2d_wrapper(x, w, groups=groups, flip_weight=flip_weight)

    # 1x1 kernel, upsampling only: convolve first, then upsample.
    if kw == 1 and kh == 1 and (up > 1 and down == 1):
        x = _conv2d_wrapper(x, w, groups=groups, flip_weight=flip_weight)
        return _up.upfirdn2d(x, f, up=up, padding=[px0, px1, py0, py1], gain=up ** 2, flip_filter=flip_filter)

    # Downsampling only: filter, then a strided convolution does the decimation.
    if down > 1 and up == 1:
        x = _up.upfirdn2d(x, f, padding=[px0, px1, py0, py1], flip_filter=flip_filter)
        return _conv2d_wrapper(x, w, stride=down, groups=groups, flip_weight=flip_weight)

    if up > 1:
        return _conv2d_resample_up(x, w, f, up, down, (px0, px1, py0, py1), groups, flip_weight, flip_filter)

    # No resampling and symmetric non-negative padding: plain conv2d.
    if px0 == px1 and py0 == py1 and px0 >= 0 and py0 >= 0:
        return _conv2d_wrapper(x, w, padding=[py0, px0], groups=groups, flip_weight=flip_weight)

    # Generic fallback (asymmetric or negative padding without resampling).
    x = _up.upfirdn2d(x, None, padding=[px0, px1, py0, py1])
    return _conv2d_wrapper(x, w, groups=groups, flip_weight=flip_weight)


def _conv2d_resample_up(x, w, f, up, down, pad, groups, flip_weight, flip_filter):
    """Upsampling via conv_transpose2d(stride=up), then the FIR filter (and optional downsampling).

    conv_transpose2d(x, v, stride=up) is the full *convolution* of the zero-inserted x with v, so
    correlating with w needs v = flip(w) (passed as flip_weight=not flip_weight). Relative to padding
    the zero-inserted x by (p0, p1) and correlating, its output starts kw-1 pixels early and ends
    kw-up pixels early, hence the shifted pads; a common crop goes to conv_transpose2d's padding.
    """
    kh, kw = w.shape[2:]
    px0, px1, py0, py1 = pad
    w = _transposed_weight(w, groups)
    px0 -= kw - 1
    px1 -= kw - up
    py0 -= kh - 1
    py1 -= kh - up
    pxt = max(min(-px0, -px1), 0)
    pyt = max(min(-py0, -py1), 0)
    x = _conv2d_wrapper(x, w, stride=up, padding=[pyt, pxt], groups=groups, transpose=True,
                        flip_weight=(not flip_weight))
    x = _up.upfirdn2d(x, f, padding=[px0 + pxt, px1 + pxt, py0 + pyt, py1 + pyt], gain=up ** 2,
                      flip_filter=flip_filter)
    if down > 1:
        x = _up.upfirdn2d(x, f, down=down, flip_filter=flip_filter)
    return x
