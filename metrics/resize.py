"""FID protocols: how uint8 images become the fixed-size input of a feature network.

The same "FID" differs by points between libraries mostly because of this step, so each protocol
reproduces one reference exactly and its name is stamped into every result:

| protocol         | reference                                       | resize                              | Inception scaling |
| ---------------- | ----------------------------------------------- | ----------------------------------- | ----------------- |
| `legacy_tf`      | TF FID code, NVIDIA metrics, torch-fidelity 0.4 | TF1 bilinear, no antialias          | (x - 128) / 128   |
| `clean`          | clean-fid 0.1.35 `mode='clean'`                 | PIL bicubic on float, per channel   | (x - 128) / 128   |
| `legacy_pytorch` | pytorch-fid 0.3.0                               | torch bilinear, align_corners=False | 2 * x / 255 - 1   |
"""

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

PROTOCOLS = ('legacy_tf', 'clean', 'legacy_pytorch')
DEFAULT_PROTOCOL = 'legacy_tf'
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def check_protocol(protocol: str) -> str:
    if protocol not in PROTOCOLS:
        raise ValueError(f'unknown protocol {protocol!r}; choose one of {", ".join(PROTOCOLS)}')
    return protocol


def _tf1_grid(in_size: int, out_size: int, device):
    """Source coordinates of TF1 resize_bilinear (align_corners=False, half_pixel_centers=False).

    TF1 maps output pixel i to input coordinate i * (in/out) computed in float32
    (tensorflow/core/kernels/image_resizer_state.h); torch-fidelity's 'slow' path does the same.
    """
    scale = torch.tensor(in_size / out_size, dtype=torch.float32)
    pos = torch.arange(out_size, dtype=torch.float32, device=device) * scale.to(device)
    lo = pos.long()                                  # floor, since pos >= 0
    hi = (lo + 1).clamp_max(in_size - 1)
    return lo, hi, pos - lo.float()


def resize_tf1_bilinear(x: torch.Tensor, size: int) -> torch.Tensor:
    """TF1 bilinear resize of float32 [N,C,H,W] to [N,C,size,size], bit-exact with torch-fidelity on CPU."""
    assert x.ndim == 4 and x.dtype == torch.float32, (x.shape, x.dtype)
    if x.shape[2] == size and x.shape[3] == size:
        return x                                     # scale 1: TF1 returns the input unchanged
    ylo, yhi, dy = _tf1_grid(x.shape[2], size, x.device)
    xlo, xhi, dx = _tf1_grid(x.shape[3], size, x.device)
    top, bot = x.index_select(2, ylo), x.index_select(2, yhi)
    # Same operation order as TF1 (lerp along x, then y) so the float32 rounding is identical.
    top_l, top_r = top.index_select(3, xlo), top.index_select(3, xhi)
    bot_l, bot_r = bot.index_select(3, xlo), bot.index_select(3, xhi)
    dx = dx.view(1, 1, 1, size)
    top = top_l + (top_r - top_l) * dx
    bot = bot_l + (bot_r - bot_l) * dx
    return top + (bot - top) * dy.view(1, 1, size, 1)


def resize_pil_bicubic_float(images: np.ndarray, size: int) -> np.ndarray:
    """clean-fid's 'clean' resize: PIL bicubic (antialiased) on each channel as a float32 'F' image.

    images: uint8 [N,H,W,C]; returns float32 [N,size,size,C] clipped to [0,255], not re-quantized.
    """
    assert images.ndim == 4 and images.dtype == np.uint8, (images.shape, images.dtype)
    out = np.empty((images.shape[0], size, size, images.shape[3]), dtype=np.float32)
    for n in range(images.shape[0]):
        for c in range(images.shape[3]):
            ch = Image.fromarray(images[n, :, :, c].astype(np.float32), mode='F')
            out[n, :, :, c] = np.asarray(ch.resize((size, size), resample=Image.BICUBIC))
    return np.clip(out, 0, 255, out=out)


def _check_images(images):
    assert isinstance(images, torch.Tensor) and images.dtype == torch.uint8, \
        f'expected a uint8 tensor in [0,255], got {getattr(images, "dtype", type(images))}'
    assert images.ndim == 4 and images.shape[1] == 3, f'expected [N,3,H,W], got {list(images.shape)}'


def preprocess(images: torch.Tensor, protocol: str = DEFAULT_PROTOCOL, size: int = 299,
               target: str = 'inception') -> torch.Tensor:
    """uint8 [N,3,H,W] in [0,255] -> float32 [N,3,size,size] in the range the network expects.

    target='inception': [-1,1] as the TF graph expects; target='imagenet': torchvision's mean/std.
    """
    check_protocol(protocol)
    _check_images(images)
    assert target in ('inception', 'imagenet'), target
    if protocol == 'legacy_pytorch':
        x = images.to(torch.float32) / 255           # torchvision ToTensor first, as pytorch-fid does
        if x.shape[2] != size or x.shape[3] != size:
            x = F.interpolate(x, size=(size, size), mode='bilinear', align_corners=False)
        if target == 'inception':
            return 2 * x - 1
        return _imagenet_normalize(x, 1.0)
    if protocol == 'legacy_tf':
        x = resize_tf1_bilinear(images.to(torch.float32), size)
    else:  # clean: resize on the CPU with PIL, as clean-fid does in its data loader
        hwc = images.permute(0, 2, 3, 1).cpu().numpy()
        x = torch.from_numpy(resize_pil_bicubic_float(hwc, size)).permute(0, 3, 1, 2).to(images.device)
    if target == 'inception':
        return (x - 128) / 128                       # the graph's Sub(128)/Mul(1/128); exact in float32
    return _imagenet_normalize(x, 255.0)


def _imagenet_normalize(x, scale):
    # Subtract then divide, like torchvision.transforms.functional.normalize (torch-fidelity's VGG16 input).
    # Scale in float64 before the float32 cast, as torch-fidelity passes (255 * 0.485, ...).
    mean = torch.tensor([m * scale for m in IMAGENET_MEAN], device=x.device).view(1, 3, 1, 1)
    std = torch.tensor([s * scale for s in IMAGENET_STD], device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std
