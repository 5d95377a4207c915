"""LPIPS (Zhang et al. 2018) on the `lpips` package's networks, for metrics and as a loss for projection/stylization.

The weights are loaded here, never by the package or torch.hub (whose `torch.load` unpickles with
weights_only=False): the network is built with random weights (`pnet_rand=True`, `pretrained=False`), then
torchvision's ImageNet backbone (`vgg16-397923af.pth`, `alexnet-owt-7be5be79.pth`,
`squeezenet1_1-b8a52dc0.pth`) and the package's linear heads are read by `metrics.weights.load_tensors`,
digest-checked and as tensors only. Without the backbone (offline), `load_lpips` raises an error naming
the file, unless `allow_random_backbone=True` (tests: a random backbone gives a meaningless distance).
"""

import contextlib
import importlib.metadata
import importlib.util
import io
import os
import warnings
from pathlib import Path

import torch

from . import weights as W


class LPIPSWeightsError(W.WeightsNotFoundError):
    """The torchvision backbone file is missing; the message names it and where to put it."""


def backbone_path(net: str):
    return W.hub_checkpoints_dir() / W.LPIPS_BACKBONES[net].filename


def heads_path(net: str, version: str = '0.1') -> Path:
    """The linear heads file inside the installed `lpips` package (found without importing it)."""
    spec = importlib.util.find_spec('lpips')
    if spec is None or spec.origin is None:
        raise ImportError('LPIPS needs the lpips package (pip install lpips)')
    return Path(spec.origin).parent / 'weights' / f'v{version}' / f'{net}.pth'


def _find_backbone(net, path):
    spec = W.LPIPS_BACKBONES[net]
    try:
        return W.resolve_weights(spec, path=path, download=False)
    except W.WeightsNotFoundError:
        hub = backbone_path(net)
        raise LPIPSWeightsError(
            f'LPIPS-{net} needs torchvision\'s ImageNet backbone {spec.filename}, not found at {hub}. Download it '
            f'from {spec.url} and put it in {hub.parent}/ (that is $TORCH_HOME/hub/checkpoints/; TORCH_HOME '
            f'defaults to ~/.cache/torch), or set ${spec.env_var}.') from None


def load_backbone(pnet: torch.nn.Module, state_dict: dict, name: str, source=None):
    """torchvision's `features.<i>.*` tensors into lpips' `slice<k>.<i>.*` modules (same layer indices)."""
    features = {k.removeprefix('features.'): v for k, v in state_dict.items() if k.startswith('features.')}
    mapped = {k: features[k.split('.', 1)[1]] for k in pnet.state_dict() if k.split('.', 1)[1] in features}
    W.load_checked_state_dict(pnet, mapped, name, source=source)


def load_heads(model, net: str, version: str):
    """The calibrated linear layers `lin<k>.model.1.weight`, digest-checked against the published file."""
    key = (version, net)
    if key not in W.LPIPS_HEADS:
        raise ValueError(f'LPIPS version {version!r} has no published linear heads here; use 0.1')
    path = heads_path(net, version)
    heads = torch.nn.Module()
    for i, lin in enumerate(model.lins):  # The same modules as model.lin<i>: loading here fills the model.
        heads.add_module(f'lin{i}', lin)
    W.load_checked_state_dict(heads, W.load_tensors(path, W.LPIPS_HEADS[key]), f'LPIPS-{net} heads', source=path)


def load_lpips(net: str = 'vgg', device='cpu', allow_random_backbone: bool = False, version: str = '0.1',
               backbone=None):
    """An eval-mode, frozen `lpips.LPIPS`; `model.pstyle_info` records net, version and backbone state.

    backbone: an explicit path to the torchvision file (else ${PSTYLE_VGG16,ALEXNET,SQUEEZENET}_WEIGHTS,
    the cache, then `$TORCH_HOME/hub/checkpoints`).
    """
    import lpips
    if net not in W.LPIPS_BACKBONES:
        raise ValueError(f'unknown LPIPS net {net!r}; choose one of {", ".join(W.LPIPS_BACKBONES)}')
    try:
        path = _find_backbone(net, backbone)
    except LPIPSWeightsError:
        if not allow_random_backbone:
            raise
        path = None
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():  # lpips prints, torchvision warns
        warnings.simplefilter('ignore')
        # Random weights everywhere: nothing is read by the package (pretrained=False skips its heads file).
        model = lpips.LPIPS(net=net, version=version, pretrained=False, pnet_rand=True, verbose=False)
    if path is not None:
        load_backbone(model.net, W.load_tensors(path, W.LPIPS_BACKBONES[net]), f'torchvision {net}', source=path)
    load_heads(model, net, version)
    model = model.eval().requires_grad_(False).to(device)
    model.pstyle_info = dict(lpips_net=net, lpips_version=version,
                             lpips_package=importlib.metadata.version('lpips'),
                             lpips_backbone=os.path.basename(path) if path else 'random (no weights)',
                             lpips_backbone_sha256=W.file_sha256(path) if path else None)
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
