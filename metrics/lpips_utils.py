"""LPIPS (Zhang et al. 2018) through the `lpips` package, for metrics and as a loss for projection/stylization.

The package ships its linear calibration layers; its VGG/AlexNet/SqueezeNet backbones come from
torchvision's ImageNet weights, which torchvision downloads into `$TORCH_HOME/hub/checkpoints/`.
Without them (offline), `load_lpips` raises an error naming the file instead of failing in urllib,
unless `allow_random_backbone=True` (tests: a random backbone gives a meaningless distance).
"""

import contextlib
import importlib.metadata
import io
import os

import torch

from . import weights as W

# torchvision backbone file per LPIPS net (torchvision's IMAGENET1K_V1 weights).
BACKBONE_FILES = {
    'vgg': ('vgg16-397923af.pth', 'https://download.pytorch.org/models/vgg16-397923af.pth'),
    'alex': ('alexnet-owt-7be5be79.pth', 'https://download.pytorch.org/models/alexnet-owt-7be5be79.pth'),
    'squeeze': ('squeezenet1_1-b8a52dc0.pth', 'https://download.pytorch.org/models/squeezenet1_1-b8a52dc0.pth'),
}


class LPIPSWeightsError(W.WeightsNotFoundError):
    """The torchvision backbone file is missing; the message names it and where to put it."""


def backbone_path(net: str):
    filename, _ = BACKBONE_FILES[net]
    return W.hub_checkpoints_dir() / filename


def load_lpips(net: str = 'vgg', device='cpu', allow_random_backbone: bool = False, version: str = '0.1'):
    """An eval-mode, frozen `lpips.LPIPS`; `model.pstyle_info` records net, version and backbone state."""
    import lpips
    if net not in BACKBONE_FILES:
        raise ValueError(f'unknown LPIPS net {net!r}; choose one of {", ".join(BACKBONE_FILES)}')
    path = backbone_path(net)
    have_backbone = path.is_file()
    if not have_backbone and not allow_random_backbone:
        filename, url = BACKBONE_FILES[net]
        raise LPIPSWeightsError(
            f'LPIPS-{net} needs torchvision\'s ImageNet backbone {filename}, not found at {path}. Download it from '
            f'{url} and put it in {path.parent}/ (that is $TORCH_HOME/hub/checkpoints/; TORCH_HOME defaults to '
            f'~/.cache/torch).')
    with contextlib.redirect_stdout(io.StringIO()):  # lpips prints its setup and torchvision warns on `pretrained`
        import warnings
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            model = lpips.LPIPS(net=net, version=version, pretrained=True, pnet_rand=not have_backbone,
                                verbose=False)
    model = model.eval().requires_grad_(False).to(device)
    model.pstyle_info = dict(lpips_net=net, lpips_version=version,
                             lpips_package=importlib.metadata.version('lpips'),
                             lpips_backbone=os.path.basename(path) if have_backbone else 'random (no weights)',
                             lpips_backbone_sha256=W.file_sha256(path) if have_backbone else None)
    return model


def to_lpips_range(images: torch.Tensor, check_range: bool = True) -> torch.Tensor:
    """uint8 [N,3,H,W] -> float in [-1,1]; float input must already be in [-1,1] (asserted)."""
    if images.dtype == torch.uint8:
        return images.float() / 127.5 - 1
    assert images.is_floating_point(), f'LPIPS input must be uint8 or float; got {images.dtype}'
    if not check_range:
        return images
    lo, hi = images.min().item(), images.max().item()
    if lo < -1 - 1e-3 or hi > 1 + 1e-3:
        raise ValueError(f'LPIPS expects float images in [-1,1]; got values in [{lo:.3g}, {hi:.3g}] '
                         '(pass uint8 images, or scale with img / 127.5 - 1)')
    return images


def lpips_distance(model, img0: torch.Tensor, img1: torch.Tensor, check_range: bool = True) -> torch.Tensor:
    """Per-pair LPIPS [N] between [N,3,H,W] batches (uint8, or float in [-1,1]); differentiable in the inputs.

    check_range=False skips the range check (a GPU sync), e.g. inside an optimization loop.
    """
    assert img0.shape == img1.shape and img0.ndim == 4 and img0.shape[1] == 3, (img0.shape, img1.shape)
    dev = next(model.parameters()).device
    x0, x1 = to_lpips_range(img0, check_range).to(dev), to_lpips_range(img1, check_range).to(dev)
    return model(x0, x1, normalize=False).reshape(-1)
