"""ADA: adaptive discriminator augmentation (Karras et al. 2020, "Training Generative Adversarial
Networks with Limited Data", Section 2-3 and Appendix B).

`AugmentPipe` takes NVIDIA's constructor arguments and keeps NVIDIA's buffers (`p`, `Hz_geom`,
`Hz_fbank`), so the `augment_pipe` of a stylegan2-ada-pytorch snapshot rebuilds from its init
kwargs and loads its state_dict. Every augmentation is applied per sample with probability
p * multiplier, the same pipeline runs on real and generated images, and everything is
differentiable (twice, for R1) with respect to the images. `AdaptiveP` is the p heuristic.
"""

import math

import numpy as np
import torch
import torch.nn.functional as F
from pstyle.torch_utils.grid_sample_gradfix import grid_sample
from pstyle.torch_utils.ops import conv2d_resample, upfirdn2d

# Low-pass decomposition filters of the Daubechies symlets (published coefficients, as PyWavelets).
SYM2 = [-0.12940952255092145, 0.22414386804185735, 0.836516303737469, 0.48296291314469025]
SYM6 = [0.015404109327027373, 0.0034907120842174702, -0.11799011114819057, -0.048311742585633,
        0.4910559419267466, 0.787641141030194, 0.3379294217276218, -0.07263752278646252,
        -0.021060292512300564, 0.04472490177066578, 0.0017677118642428036, -0.007800708325034148]

# Presets of NVIDIA's train.py `--augpipe`: multipliers of p per augmentation.
_BLIT = dict(xflip=1, rotate90=1, xint=1)
_GEOM = dict(scale=1, rotate=1, aniso=1, xfrac=1)
_COLOR = dict(brightness=1, contrast=1, lumaflip=1, hue=1, saturation=1)
augpipe_specs = {
    'blit':   dict(_BLIT),
    'geom':   dict(_GEOM),
    'color':  dict(_COLOR),
    'filter': dict(imgfilter=1),
    'noise':  dict(noise=1),
    'cutout': dict(cutout=1),
    'bg':     dict(**_BLIT, **_GEOM),
    'bgc':    dict(**_BLIT, **_GEOM, **_COLOR),
    'bgcf':   dict(**_BLIT, **_GEOM, **_COLOR, imgfilter=1),
    'bgcfn':  dict(**_BLIT, **_GEOM, **_COLOR, imgfilter=1, noise=1),
    'bgcfnc': dict(**_BLIT, **_GEOM, **_COLOR, imgfilter=1, noise=1, cutout=1),
}

#----------------------------------------------------------------------------
# Batched homogeneous matrices. Each entry is a python number or an [N] tensor.

def _matrix(*rows, device):
    if device is None:  # follow the tensor entries (python numbers would otherwise land on the CPU)
        device = next((x.device for row in rows for x in row if isinstance(x, torch.Tensor)), None)
    entries = [torch.as_tensor(x, dtype=torch.float32, device=device) for row in rows for x in row]
    shape = torch.broadcast_shapes(*(e.shape for e in entries))
    m = torch.stack([e.expand(shape) for e in entries], dim=-1)
    return m.reshape(*shape, len(rows), len(rows[0]))  # [N, rows, cols] or [rows, cols]


def translate2d(tx, ty, device=None):
    return _matrix([1, 0, tx], [0, 1, ty], [0, 0, 1], device=device)


def scale2d(sx, sy, device=None):
    return _matrix([sx, 0, 0], [0, sy, 0], [0, 0, 1], device=device)


def rotate2d(theta, device=None):
    c, s = torch.cos(torch.as_tensor(theta)), torch.sin(torch.as_tensor(theta))
    return _matrix([c, -s, 0], [s, c, 0], [0, 0, 1], device=device)


def translate3d(tx, ty, tz, device=None):
    return _matrix([1, 0, 0, tx], [0, 1, 0, ty], [0, 0, 1, tz], [0, 0, 0, 1], device=device)


def scale3d(sx, sy, sz, device=None):
    return _matrix([sx, 0, 0, 0], [0, sy, 0, 0], [0, 0, sz, 0], [0, 0, 0, 1], device=device)


def rotate3d(v, theta, device=None):
    """Rotation by theta about the unit axis v (Rodrigues: cI + s[v]x + (1-c)vv^T), homogeneous 4x4."""
    vx, vy, vz = v
    c, s = torch.cos(torch.as_tensor(theta)), torch.sin(torch.as_tensor(theta))
    cc = 1 - c
    return _matrix([vx * vx * cc + c, vx * vy * cc - vz * s, vx * vz * cc + vy * s, 0],
                   [vy * vx * cc + vz * s, vy * vy * cc + c, vy * vz * cc - vx * s, 0],
                   [vz * vx * cc - vy * s, vz * vy * cc + vx * s, vz * vz * cc + c, 0],
                   [0, 0, 0, 1], device=device)


def _filter_bank():
    """Four bands of an undecimated sym2 wavelet decomposition as 43-tap filters (Appendix B.4).

    lo/hi are the zero-phase products H(z)H(1/z)/2 and H(-z)H(-1/z)/2 of sym2, so lo + hi = 1
    (perfect reconstruction) and the bands sum to the identity. From low to high frequency:
    [lo4*lo2*lo1, hi4*lo2*lo1, hi2*lo1, hi1], where fK = f(z^K) is f dilated by K.
    """
    h = np.asarray(SYM2)
    lo = np.convolve(h, h[::-1]) / 2
    hi_h = h * (-1.0) ** np.arange(h.size)
    hi = np.convolve(hi_h, hi_h[::-1]) / 2

    def dilate(f, k):  # f(z^k): insert k-1 zeros between taps
        out = np.zeros((f.size - 1) * k + 1)
        out[::k] = f
        return out

    bands = [np.convolve(np.convolve(dilate(lo, 4), dilate(lo, 2)), lo),
             np.convolve(np.convolve(dilate(hi, 4), dilate(lo, 2)), lo),
             np.convolve(dilate(hi, 2), lo), hi]
    taps = bands[0].size
    fbank = np.zeros([4, taps])
    for i, b in enumerate(bands):  # all bands are symmetric: center them in the common length
        fbank[i, (taps - b.size) // 2:(taps + b.size) // 2] = b
    return torch.as_tensor(fbank, dtype=torch.float32)


def _filter_phase(f):
    """Offset (in taps) of a 1-D filter's centroid from its middle: its group delay at DC."""
    taps = torch.arange(f.shape[0], dtype=torch.float64)
    f = f.double().cpu()
    return float((f.shape[0] - 1) / 2 - (taps * f).sum() / f.sum())


def _reflect_index(i, size):
    """Reflect out-of-range integer indices back into [0, size) like F.pad(mode='reflect')."""
    if size == 1:
        return torch.zeros_like(i)
    period = 2 * (size - 1)
    i = torch.remainder(i, period)
    return torch.where(i >= size, period - i, i)


def _blit(images, B_inv):
    """Exact pixel copy out[y, x] = in[B^-1 (x, y)] for integer matrices B^-1 [N, 3, 3] in centered
    coordinates, reflecting at the borders (the padding the paper uses for translations)."""
    n, c, h, w = images.shape
    cx, cy = (w - 1) / 2, (h - 1) / 2
    ys, xs = torch.meshgrid(torch.arange(h, device=images.device) - cy,
                            torch.arange(w, device=images.device) - cx, indexing='ij')
    pts = torch.stack([xs.flatten(), ys.flatten(), torch.ones(h * w, device=images.device)])  # [3, H*W]
    src = B_inv @ pts  # [N, 3, H*W]
    sx = _reflect_index(torch.round(src[:, 0] + cx).long(), w)
    sy = _reflect_index(torch.round(src[:, 1] + cy).long(), h)
    index = (sy * w + sx)[:, None, :].expand(n, c, h * w)
    return images.reshape(n, c, h * w).gather(2, index).reshape(n, c, h, w)

#----------------------------------------------------------------------------

class AugmentPipe(torch.nn.Module):
    """The ADA pipeline: images [N, C, H, W] (C = 1 or 3, any float dtype, ~[-1, 1]) -> same shape."""

    def __init__(self,
        xflip=0, rotate90=0, xint=0, xint_max=0.125,
        scale=0, rotate=0, aniso=0, xfrac=0, scale_std=0.2, rotate_max=1, aniso_std=0.2, xfrac_std=0.125,
        brightness=0, contrast=0, lumaflip=0, hue=0, saturation=0, brightness_std=0.2, contrast_std=0.5, hue_max=1, saturation_std=1,
        imgfilter=0, imgfilter_bands=[1, 1, 1, 1], imgfilter_std=1,
        noise=0, cutout=0, noise_std=0.1, cutout_size=0.5,
    ):
        super().__init__()
        self.init_kwargs = {k: (list(v) if isinstance(v, (list, tuple)) else v) for k, v in locals().items()
                            if k not in ('self', '__class__')}
        self.register_buffer('p', torch.ones([]))  # Overall augmentation probability, set by ADA.

        # Pixel blitting (B.1): multipliers of p, and the range of integer translation.
        self.xflip = float(xflip)               # x-flip.
        self.rotate90 = float(rotate90)         # Rotation by a multiple of 90 degrees.
        self.xint = float(xint)                 # Integer translation.
        self.xint_max = float(xint_max)         # ... range, as a fraction of the image size.

        # General geometric transforms (B.2).
        self.scale = float(scale)               # Isotropic scaling.
        self.rotate = float(rotate)             # Arbitrary rotation (applied before and after anisotropic scaling).
        self.aniso = float(aniso)               # Anisotropic scaling.
        self.xfrac = float(xfrac)               # Fractional translation.
        self.scale_std = float(scale_std)       # log2 std of isotropic scaling.
        self.rotate_max = float(rotate_max)     # Rotation range, in units of pi.
        self.aniso_std = float(aniso_std)       # log2 std of anisotropic scaling.
        self.xfrac_std = float(xfrac_std)       # Std of fractional translation, in image sizes.

        # Color transforms (B.3).
        self.brightness = float(brightness)         # Brightness offset.
        self.contrast = float(contrast)             # Contrast scaling.
        self.lumaflip = float(lumaflip)             # Luma flip (reflection about the gray axis).
        self.hue = float(hue)                       # Hue rotation about the luma axis.
        self.saturation = float(saturation)         # Saturation scaling.
        self.brightness_std = float(brightness_std) # Std of the brightness offset.
        self.contrast_std = float(contrast_std)     # log2 std of contrast.
        self.hue_max = float(hue_max)               # Hue rotation range, in units of pi.
        self.saturation_std = float(saturation_std) # log2 std of saturation.

        # Image-space filtering (B.4).
        self.imgfilter = float(imgfilter)               # Band amplification.
        self.imgfilter_bands = list(imgfilter_bands)    # Per-band multipliers of imgfilter.
        self.imgfilter_std = float(imgfilter_std)       # log2 std of a band's gain.

        # Image-space corruptions (B.5).
        self.noise = float(noise)               # Additive RGB noise.
        self.cutout = float(cutout)             # Cutout.
        self.noise_std = float(noise_std)       # Std of the noise's std (half-normal).
        self.cutout_size = float(cutout_size)   # Cutout square side, as a fraction of the image.

        # Wavelet filters: sym6 for the 2x oversampled geometric warp, sym2 bands for filtering.
        self.register_buffer('Hz_geom', upfirdn2d.setup_filter(SYM6))
        self.register_buffer('Hz_fbank', _filter_bank())
        self._geom_phase = _filter_phase(self.Hz_geom)  # a python float: no device sync per call

    # -- random draws: per sample, gated by the probability; debug_percentile makes them fixed --

    def _gate(self, value, multiplier, identity, dp, p=None):
        """value where rand < p * multiplier, else identity. With debug_percentile, value everywhere."""
        if dp is not None:
            return value
        prob = self.p * multiplier if p is None else p
        return torch.where(torch.rand(value.shape[0], device=value.device) < prob, value, identity)

    @staticmethod
    def _normal(n, std, dp, device):
        """N(0, std^2) draws; debug: NVIDIA's erfinv(2q-1) * std for percentile q."""
        if dp is not None:
            return torch.erfinv(dp * 2 - 1).expand(n) * std
        return torch.randn(n, device=device) * std

    @staticmethod
    def _uniform(n, dp, device):
        """U[0, 1) draws; debug: the percentile itself."""
        return dp.expand(n).clone() if dp is not None else torch.rand(n, device=device)

    @classmethod
    def _choice(cls, n, k, dp, device):
        """Uniform integers in {0, ..., k-1} as floats (debug percentile 1 maps to k-1)."""
        return torch.floor(cls._uniform(n, dp, device) * k).clamp(max=k - 1)

    # -- the pipeline ---------------------------------------------------------

    def forward(self, images, debug_percentile=None):
        """images: float [N, C, H, W]; debug_percentile: None or q in [0, 1] to apply every enabled
        augmentation to every sample with its q-th parameter value (visualization, tests)."""
        if not (isinstance(images, torch.Tensor) and images.ndim == 4 and images.is_floating_point()):
            raise ValueError(f'AugmentPipe: expected float images [N, C, H, W], got {getattr(images, "shape", images)}')
        dp = None
        if debug_percentile is not None:
            dp = torch.as_tensor(debug_percentile, dtype=torch.float32, device=images.device)
        if max(self.xflip, self.rotate90, self.xint, self.scale, self.rotate, self.aniso, self.xfrac) > 0:
            images = self._geometric(images, dp)
        if max(self.brightness, self.contrast, self.lumaflip, self.hue, self.saturation) > 0:
            images = self._color(images, dp)
        if self.imgfilter > 0 and any(b > 0 for b in self.imgfilter_bands):
            images = self._filter(images, dp)
        if self.noise > 0:
            images = self._add_noise(images, dp)
        if self.cutout > 0:
            images = self._cutout(images, dp)
        return images

    def _blit_matrix(self, n, width, height, dp, device):
        """B.1 pixel blitting as an inverse matrix [n, 3, 3] (output -> input pixel, centered
        coordinates) with integer-valued entries, so it can be applied as an exact pixel copy."""
        B_inv = torch.eye(3, device=device).expand(n, 3, 3)
        zero = torch.zeros(n, device=device)
        if self.xflip > 0:  # x-flip: scale x by 1 - 2i, i in {0, 1}.
            i = self._gate(self._choice(n, 2, dp, device), self.xflip, zero, dp)
            B_inv = B_inv @ scale2d(1 - 2 * i, 1)
        if self.rotate90 > 0:  # Rotation by i * 90 degrees, i in {0, 1, 2, 3}; cos/sin rounded to exact 0/+-1.
            i = self._gate(self._choice(n, 4, dp, device), self.rotate90, zero, dp)
            B_inv = B_inv @ rotate2d(-np.pi / 2 * i).round()
        if self.xint > 0:  # Integer translation, uniform in [-xint_max, xint_max] of the size.
            tx = self._gate((self._uniform(n, dp, device) * 2 - 1) * self.xint_max, self.xint, zero, dp)
            ty = self._gate((self._uniform(n, dp, device) * 2 - 1) * self.xint_max, self.xint, zero, dp)
            B_inv = B_inv @ translate2d(-torch.round(tx * width), -torch.round(ty * height))
        return B_inv

    def _general_matrix(self, n, width, height, dp, device):
        """B.2 general geometric transforms as G^-1 [n, 3, 3], each step right-multiplying the
        inverse of its transform, in the order of the paper."""
        G_inv = torch.eye(3, device=device).expand(n, 3, 3)
        zero, one = torch.zeros(n, device=device), torch.ones(n, device=device)
        if self.scale > 0:  # Isotropic scaling, log-normal.
            s = self._gate(torch.exp2(self._normal(n, self.scale_std, dp, device)), self.scale, one, dp)
            G_inv = G_inv @ scale2d(1 / s, 1 / s)
        # Two rotations with p_rot = 1 - sqrt(1 - p): at least one happens with probability p.
        p_rot = 1 - torch.sqrt((1 - self.rotate * self.p).clamp(0, 1))
        if self.rotate > 0:  # Pre-rotation, uniform in [-rotate_max * pi, rotate_max * pi].
            theta = self._gate((self._uniform(n, dp, device) * 2 - 1) * np.pi * self.rotate_max, 1, zero, dp, p=p_rot)
            G_inv = G_inv @ rotate2d(-theta)
        if self.aniso > 0:  # Anisotropic scaling: x by s, y by 1/s.
            s = self._gate(torch.exp2(self._normal(n, self.aniso_std, dp, device)), self.aniso, one, dp)
            G_inv = G_inv @ scale2d(1 / s, s)
        if self.rotate > 0:  # Post-rotation.
            theta = self._gate((self._uniform(n, dp, device) * 2 - 1) * np.pi * self.rotate_max, 1, zero, dp, p=p_rot)
            G_inv = G_inv @ rotate2d(-theta)
        if self.xfrac > 0:  # Fractional translation, normal with std xfrac_std of the size.
            tx = self._gate(self._normal(n, self.xfrac_std, dp, device), self.xfrac, zero, dp)
            ty = self._gate(self._normal(n, self.xfrac_std, dp, device), self.xfrac, zero, dp)
            G_inv = G_inv @ translate2d(-tx * width, -ty * height)
        return G_inv

    def _geometric(self, images, dp):
        n, c, h, w = images.shape
        B_inv = self._blit_matrix(n, w, h, dp, images.device)
        G_inv = self._general_matrix(n, w, h, dp, images.device)
        if max(self.xflip, self.rotate90, self.xint) > 0:
            images = _blit(images, B_inv)
        if max(self.scale, self.rotate, self.aniso, self.xfrac) > 0:
            images = self._warp(images, G_inv)
        return images

    def _warp(self, images, G_inv):
        """Apply G with the 2x-oversampled warp of Appendix B.2: reflect-pad, upsample with sym6,
        bilinear grid_sample, filter and decimate with the time-reversed sym6. Samples whose G is
        the identity are returned exactly."""
        n, c, h, w = images.shape
        device = images.device
        is_identity = (G_inv == torch.eye(3, device=device)).flatten(1).all(dim=1)  # [N]
        pad = self.Hz_geom.shape[0] // 4  # sym6: 3 input pixels of filter support per side

        # Reflect-pad enough that every sampled point (plus the filters' support) is inside.
        cx, cy = (w - 1) / 2, (h - 1) / 2
        corners = torch.tensor([[-cx, -cy, 1], [cx, -cy, 1], [cx, cy, 1], [-cx, cy, 1]], device=device)
        src = (G_inv @ corners.t())[:, :2, :]  # [N, xy, corner] in input pixels
        reach = torch.stack([-src[:, 0] - cx, -src[:, 1] - cy, src[:, 0] - cx, src[:, 1] - cy]).flatten(1).amax(1)
        limit = torch.tensor([w - 1, h - 1, w - 1, h - 1], dtype=torch.float32, device=device)
        margins = (reach + pad * 2).clamp(min=0).minimum(limit).ceil().int()
        # One device sync for both the pad sizes and the early exit (nothing to warp, e.g. p = 0).
        mx0, my0, mx1, my1, all_identity = torch.cat([margins, is_identity.all().int()[None]]).tolist()
        if all_identity:
            return images
        x = F.pad(images, [mx0, mx1, my0, my1], mode='reflect')
        G_inv = translate2d((mx0 - mx1) / 2, (my0 - my1) / 2, device=device) @ G_inv

        # 2x upsampling: in centered coordinates a point u moves to 2u. sym6 is not symmetric: its
        # centroid sits `phase` upsampled pixels off its middle, so the warp is conjugated by that
        # shift to rotate/scale about the true image center. The filter's own value (0.40) rather
        # than a rounded half pixel makes a 180-degree rotation of a smooth image ~10x closer.
        x = upfirdn2d.upsample2d(x, self.Hz_geom, up=2)
        G_inv = scale2d(2, 2, device=device) @ G_inv @ scale2d(0.5, 0.5, device=device)
        phase = self._geom_phase
        G_inv = translate2d(-phase, -phase, device=device) @ G_inv @ translate2d(phase, phase, device=device)

        # Resample into a canvas with `pad` extra input pixels per side for the decimation filter.
        out_h, out_w = (h + pad * 2) * 2, (w + pad * 2) * 2
        # Normalized [-1, 1] coordinates of align_corners=False: x_norm = u * 2 / size.
        theta = (scale2d(2 / x.shape[3], 2 / x.shape[2], device=device) @ G_inv
                 @ scale2d(out_w / 2, out_h / 2, device=device))
        grid = F.affine_grid(theta[:, :2, :].to(x.dtype), [n, c, out_h, out_w], align_corners=False)
        x = grid_sample(x, grid)

        # Decimate with the time-reversed filter (perfect reconstruction pair) and crop the margin.
        x = upfirdn2d.downsample2d(x, self.Hz_geom, down=2, padding=-pad * 2, flip_filter=True)
        return torch.where(is_identity[:, None, None, None], images, x)

    def _color_matrix(self, n, dp, device):
        """C [n, 4, 4] acting on homogeneous RGB, composed in the order of Appendix B.3."""
        C = torch.eye(4, device=device).expand(n, 4, 4)
        zero, one = torch.zeros(n, device=device), torch.ones(n, device=device)
        v = [1 / math.sqrt(3)] * 3  # Luma axis.
        vv = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 0], [1, 1, 1, 0], [0, 0, 0, 0]], device=device) / 3  # v v^T
        if self.brightness > 0:  # Brightness: add b to every channel.
            b = self._gate(self._normal(n, self.brightness_std, dp, device), self.brightness, zero, dp)
            C = translate3d(b, b, b) @ C
        if self.contrast > 0:  # Contrast: scale by a log-normal factor.
            s = self._gate(torch.exp2(self._normal(n, self.contrast_std, dp, device)), self.contrast, one, dp)
            C = scale3d(s, s, s) @ C
        if self.lumaflip > 0:  # Luma flip: Householder reflection I - 2vv^T, i in {0, 1}.
            i = self._gate(self._choice(n, 2, dp, device), self.lumaflip, zero, dp)
            C = (torch.eye(4, device=device) - 2 * vv * i[:, None, None]) @ C
        if self.hue > 0:  # Hue: rotation about the luma axis, uniform in [-hue_max * pi, hue_max * pi].
            theta = self._gate((self._uniform(n, dp, device) * 2 - 1) * np.pi * self.hue_max, self.hue, zero, dp)
            C = rotate3d(v, theta) @ C
        if self.saturation > 0:  # Saturation: scale the component orthogonal to the luma axis.
            s = self._gate(torch.exp2(self._normal(n, self.saturation_std, dp, device)), self.saturation, one, dp)
            C = (vv + (torch.eye(4, device=device) - vv) * s[:, None, None]) @ C
        return C

    def _color(self, images, dp):
        n, c, h, w = images.shape
        C = self._color_matrix(n, dp, images.device)
        is_identity = (C == torch.eye(4, device=images.device)).flatten(1).all(dim=1)
        C = C.to(images.dtype)
        flat = images.reshape(n, c, h * w)
        if c == 3:
            out = C[:, :3, :3] @ flat + C[:, :3, 3:]
        elif c == 1:  # Gray: the image is R=G=B; keep the mean of the transformed channels.
            C = C[:, :3, :].mean(dim=1, keepdim=True)  # [N, 1, 4]
            out = flat * C[:, :, :3].sum(dim=2, keepdim=True) + C[:, :, 3:]
        else:
            raise ValueError(f'AugmentPipe: color transforms need 1 or 3 channels, got {c}')
        out = out.reshape(n, c, h, w)
        return torch.where(is_identity[:, None, None, None], images, out)  # exact where untouched

    def _filter(self, images, dp):
        """Random per-band gains, renormalized to the expected power of each band (Appendix B.4)."""
        n, c, h, w = images.shape
        taps = self.Hz_fbank.shape[1]
        if min(h, w) <= taps // 2:
            raise ValueError(f'AugmentPipe: imgfilter needs images larger than {taps // 2} pixels, got {h}x{w}')
        num_bands = len(self.imgfilter_bands)
        expected_power = torch.tensor([10, 1, 1, 1], dtype=torch.float32, device=images.device) / 13  # ~1/f spectrum
        g = torch.ones([n, num_bands], device=images.device)
        for i, band_strength in enumerate(self.imgfilter_bands):
            t_i = torch.exp2(self._normal(n, self.imgfilter_std, dp, images.device))
            t_i = self._gate(t_i, self.imgfilter * band_strength, torch.ones_like(t_i), dp)
            t = torch.ones([n, num_bands], device=images.device)
            t[:, i] = t_i
            t = t / (expected_power * t.square()).sum(dim=-1, keepdim=True).sqrt()  # keep the total power
            g = g * t
        is_identity = (g == 1).all(dim=1)
        f = (g @ self.Hz_fbank).to(images.dtype)  # [N, taps]: one zero-phase filter per sample
        f = f[:, None, :].expand(n, c, taps).reshape(n * c, 1, 1, taps)  # [N*C, 1, 1, taps]
        x = F.pad(images.reshape(1, n * c, h, w), [taps // 2] * 4, mode='reflect')
        x = conv2d_resample.conv2d_resample(x, f, groups=n * c)                       # along x
        x = conv2d_resample.conv2d_resample(x, f.transpose(2, 3), groups=n * c)       # along y
        return torch.where(is_identity[:, None, None, None], images, x.reshape(n, c, h, w))

    def _add_noise(self, images, dp):
        """Additive Gaussian noise with a half-normal std per sample (Appendix B.5)."""
        n, c, h, w = images.shape
        zero = torch.zeros(n, device=images.device)
        if dp is not None:
            sigma = torch.erfinv(dp).expand(n) * self.noise_std
        else:
            sigma = self._gate(torch.randn(n, device=images.device).abs() * self.noise_std, self.noise, zero, dp)
        return images + torch.randn_like(images) * sigma.to(images.dtype)[:, None, None, None]

    def _cutout(self, images, dp):
        """Zero a square of side cutout_size (of the image) at a uniform random center (Appendix B.5)."""
        n, c, h, w = images.shape
        size = self._gate(torch.full([n], self.cutout_size, device=images.device), self.cutout,
                          torch.zeros(n, device=images.device), dp)
        cx, cy = self._uniform(n, dp, images.device), self._uniform(n, dp, images.device)
        xs = (torch.arange(w, device=images.device) + 0.5) / w  # pixel centers in [0, 1]
        ys = (torch.arange(h, device=images.device) + 0.5) / h
        out_x = (xs[None, :] - cx[:, None]).abs() >= size[:, None] / 2  # [N, W]
        out_y = (ys[None, :] - cy[:, None]).abs() >= size[:, None] / 2  # [N, H]
        keep = (out_x[:, None, :] | out_y[:, :, None]).to(images.dtype)  # [N, H, W]
        return images * keep[:, None]

#----------------------------------------------------------------------------

class AdaptiveP:
    """The ADA heuristic (Section 3): every `interval` minibatches, r_t = E[sign(D(real))] over
    them, and p += sign(r_t - target) * (images in the interval) / (kimg * 1000); p is clamped
    below at 0 and, as in NVIDIA's training loop, not above. fixed=True keeps p and reports r_t."""

    def __init__(self, target=0.6, interval=4, kimg=500, p=0.0, fixed=False):
        if interval < 1 or kimg <= 0:
            raise ValueError(f'AdaptiveP: interval must be >= 1 and kimg > 0, got {interval} and {kimg}')
        self.target, self.interval, self.kimg = float(target), int(interval), float(kimg)
        self.p, self.fixed = float(p), bool(fixed)
        self.rt = None              # r_t of the last completed interval
        self._reset()

    def _reset(self):
        self._num_batches = 0       # minibatches seen in the current interval
        self._sign_sum = 0.0        # sum of sign(D(real)); a device tensor between updates (no sync)
        self._num_logits = 0
        self._num_images = 0

    def step(self, real_logits, num_images=None):
        """Record one minibatch of D(real) logits; returns True when this call ended an interval
        (p moved unless fixed). num_images: images in the minibatch (default: number of logits)."""
        real_logits = torch.as_tensor(real_logits).detach()
        self._sign_sum = self._sign_sum + real_logits.sign().sum().double()
        self._num_logits += real_logits.numel()
        self._num_images += real_logits.numel() if num_images is None else int(num_images)
        self._num_batches += 1
        if self._num_batches < self.interval:
            return False
        self.rt = float(self._sign_sum) / max(self._num_logits, 1)  # the one sync per interval
        if not self.fixed:
            adjust = np.sign(self.rt - self.target) * self._num_images / (self.kimg * 1000)
            self.p = max(self.p + float(adjust), 0.0)
        self._reset()
        return True

    def apply(self, augment_pipe: AugmentPipe):
        """Copy p into the pipeline's `p` buffer."""
        augment_pipe.p.copy_(torch.as_tensor(self.p, dtype=augment_pipe.p.dtype))

    _FIELDS = ('target', 'interval', 'kimg', 'p', 'fixed', 'rt', '_num_batches', '_num_logits', '_num_images')

    def state_dict(self):
        """Plain JSON-serializable values, including the partly accumulated interval (exact resume)."""
        return dict({k.lstrip('_'): getattr(self, k) for k in self._FIELDS}, sign_sum=float(self._sign_sum))

    def load_state_dict(self, state):
        for k in self._FIELDS:
            setattr(self, k, state[k.lstrip('_')])
        self._sign_sum = float(state['sign_sum'])
