"""Modulated convolution of StyleGAN2 (Karras et al. 2020, "Analyzing and Improving the Image Quality
of StyleGAN", Sec. 2.2, Eq. 1-3), as NVIDIA stylegan2-ada-pytorch `training/networks.modulated_conv2d`."""

import numpy as np
import torch
from pstyle.torch_utils.ops import conv2d_resample as _cr
from pstyle.torch_utils.ops import fma as _fma


def _check_inputs(x, weight, styles, noise):
    if not isinstance(weight, torch.Tensor) or weight.ndim != 4:
        raise ValueError(f'modulated_conv2d: weight must be [O, I, kh, kw], got {getattr(weight, "shape", weight)!r}')
    in_channels = weight.shape[1]
    if not isinstance(x, torch.Tensor) or x.ndim != 4 or x.shape[1] != in_channels:
        raise ValueError(f'modulated_conv2d: x must be [N, {in_channels}, H, W], got {getattr(x, "shape", x)!r}')
    if not isinstance(styles, torch.Tensor) or tuple(styles.shape) != (x.shape[0], in_channels):
        raise ValueError(f'modulated_conv2d: styles must be [{x.shape[0]}, {in_channels}], '
                         f'got {getattr(styles, "shape", styles)!r}')
    if noise is not None and not isinstance(noise, torch.Tensor):
        raise ValueError(f'modulated_conv2d: noise must be a tensor or None, got {type(noise).__name__}')


def modulated_conv2d(x, weight, styles, noise=None, up=1, down=1, padding=0, resample_filter=None,
                     demodulate=True, flip_weight=True, fused_modconv=True):
    """x: [N, I, H, W]; weight: [O, I, kh, kw]; styles: [N, I]; noise: broadcastable to the output or None.

    fused_modconv=True: one grouped convolution with per-sample weights (groups=N);
    False: scale the activations instead and share the convolution (cheaper for large batches/training).
    Returns [N, O, H', W'] with the resampling of `conv2d_resample`.
    """
    _check_inputs(x, weight, styles, noise)
    batch_size = x.shape[0]
    out_channels, in_channels, kh, kw = weight.shape

    # Pre-normalize to avoid FP16 overflow; demodulation cancels the scale (NVIDIA).
    if x.dtype == torch.float16 and demodulate:
        weight_max = weight.norm(float('inf'), dim=[1, 2, 3], keepdim=True)  # max_Ikk |w|  [O111]
        weight = weight * (1 / np.sqrt(in_channels * kh * kw) / weight_max)
        styles = styles / styles.norm(float('inf'), dim=1, keepdim=True)  # max_I |s|  [N1]

    # Per-sample weights: Eq. 1, w'_ijk = s_i * w_ijk.  [NOIkk]
    w = None
    dcoefs = None
    if demodulate or fused_modconv:
        w = weight.unsqueeze(0) * styles.reshape(batch_size, 1, -1, 1, 1)
    # Demodulation: Eq. 3, 1 / sqrt(sum_ik w'_ijk^2 + eps) with eps = 1e-8.  [NO]
    if demodulate:
        dcoefs = (w.square().sum(dim=[2, 3, 4]) + 1e-8).rsqrt()
    if demodulate and fused_modconv:
        w = w * dcoefs.reshape(batch_size, -1, 1, 1, 1)  # [NOIkk]

    if not fused_modconv:
        return _modconv_unfused(x, weight, styles, dcoefs, noise, up, down, padding, resample_filter,
                                demodulate, flip_weight)

    # Fused: fold the batch into channels and run one grouped convolution.
    x = x.reshape(1, -1, *x.shape[2:])  # [1, N*I, H, W]
    w = w.reshape(-1, in_channels, kh, kw)  # [N*O, I, kh, kw]
    x = _cr.conv2d_resample(x, w.to(x.dtype), f=resample_filter, up=up, down=down, padding=padding,
                            groups=batch_size, flip_weight=flip_weight)
    x = x.reshape(batch_size, -1, *x.shape[2:])  # [N, O, H', W']
    if noise is not None:
        x = x.add_(noise)  # In place like NVIDIA: a float32 noise is added in float32, then rounded to x.dtype.
    return x


def _modconv_unfused(x, weight, styles, dcoefs, noise, up, down, padding, resample_filter, demodulate,
                     flip_weight):
    """Scale the input by the styles, convolve with the shared weight, scale the output by dcoefs."""
    batch_size = x.shape[0]
    x = x * styles.to(x.dtype).reshape(batch_size, -1, 1, 1)
    x = _cr.conv2d_resample(x, weight.to(x.dtype), f=resample_filter, up=up, down=down, padding=padding,
                            flip_weight=flip_weight)
    if demodulate and noise is not None:
        return _fma.fma(x, dcoefs.to(x.dtype).reshape(batch_size, -1, 1, 1), noise.to(x.dtype))
    if demodulate:
        return x * dcoefs.to(x.dtype).reshape(batch_size, -1, 1, 1)
    if noise is not None:
        return x.add_(noise.to(x.dtype))
    return x
