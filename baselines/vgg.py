"""VGG19 feature taps for the optimisation baseline (Gatys et al. 2016), on torchvision's ImageNet weights.

The layout is torchvision's `vgg19().features` (so its `vgg19-dcbb9e9d.pth` loads by name), with named
taps `conv1_1`, `relu1_1`, ..., `pool5`. The file is read by our code as tensors only
(`torch.load(weights_only=True)`), never through torchvision, and checked against the sha256 prefix its
name carries (torch.hub's convention).
"""

from pathlib import Path

import torch
from torch import nn

from pstyle.metrics.weights import WeightSpec, WeightsNotFoundError, resolve_weights, verify_file

VGG19_TV = WeightSpec(
    name='torchvision VGG19 (ImageNet)',
    filename='vgg19-dcbb9e9d.pth',
    url='https://download.pytorch.org/models/vgg19-dcbb9e9d.pth',
    env_var='PSTYLE_VGG19_WEIGHTS', sha256_prefix='dcbb9e9d')

# Channels per conv in each of the five blocks (torchvision's configuration 'E').
_BLOCKS = [[64, 64], [128, 128], [256, 256, 256, 256], [512, 512, 512, 512], [512, 512, 512, 512]]
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _layer_names():
    """['conv1_1', 'relu1_1', 'conv1_2', 'relu1_2', 'pool1', 'conv2_1', ...]: one name per features index."""
    names = []
    for b, convs in enumerate(_BLOCKS, start=1):
        for i in range(1, len(convs) + 1):
            names += [f'conv{b}_{i}', f'relu{b}_{i}']
        names.append(f'pool{b}')
    return names


LAYER_NAMES = _layer_names()                        # 37 names, index = position in `features`
LAYER_INDEX = {name: i for i, name in enumerate(LAYER_NAMES)}
CONV_INDICES = [i for i, name in enumerate(LAYER_NAMES) if name.startswith('conv')]


class VGG19(nn.Module):
    """`features` of torchvision's VGG19; forward(x, taps) returns {tap: activation}.

    x: float [N,3,H,W] RGB in [0,1]; ImageNet normalisation happens inside. pooling='avg' replaces the
    max-pools by average pools (Gatys et al. 2016, Sec. 2, prefer it for synthesis)."""

    def __init__(self, pooling='max'):
        super().__init__()
        if pooling not in ('max', 'avg'):
            raise ValueError(f"pooling must be 'max' or 'avg', got {pooling!r}")
        layers, in_ch = [], 3
        for convs in _BLOCKS:
            for out_ch in convs:
                layers += [nn.Conv2d(in_ch, out_ch, 3, padding=1), nn.ReLU(inplace=False)]
                in_ch = out_ch
            layers.append(nn.MaxPool2d(2, 2) if pooling == 'max' else nn.AvgPool2d(2, 2))
        self.features = nn.Sequential(*layers)
        self.pooling = pooling
        self.register_buffer('mean', torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer('std', torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, x, taps):
        unknown = [t for t in taps if t not in LAYER_INDEX]
        if unknown:
            raise ValueError(f'unknown VGG19 layer(s) {", ".join(unknown)}; known: {", ".join(LAYER_NAMES)}')
        last = max(LAYER_INDEX[t] for t in taps)
        x = (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)
        out = {}
        for i, layer in enumerate(self.features[:last + 1]):
            x = layer(x)
            if LAYER_NAMES[i] in taps:
                out[LAYER_NAMES[i]] = x
        return out


def read_state_dict(path, what):
    """torch.load(weights_only=True) with an error naming the file when it is not a tensor file."""
    try:
        state = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as e:  # a PNG, a truncated download, a pickle with code: all unreadable here
        raise ValueError(f'{path}: not a PyTorch state_dict file for {what} ({type(e).__name__}: '
                         f'{str(e).splitlines()[0] if str(e) else ""})') from e
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f'{path}: expected a state_dict (name -> tensor) for {what}, got {type(state).__name__}')
    return state


def vgg19_tensors(state, source):
    """`features.<i>.weight/bias` for every conv, checked by name and shape; other keys (classifier) ignored."""
    reference = VGG19().features.state_dict()
    out = {}
    for i in CONV_INDICES:
        for kind in ('weight', 'bias'):
            key = f'features.{i}.{kind}'
            expected = tuple(reference[f'{i}.{kind}'].shape)
            if key not in state:
                raise ValueError(f'{source}: tensor {key} ({LAYER_NAMES[i]} {kind}, shape {list(expected)}) is missing; '
                                 f'expected torchvision VGG19 weights ({VGG19_TV.filename})')
            if tuple(state[key].shape) != expected:
                raise ValueError(f'{source}: tensor {key} has shape {list(state[key].shape)}, expected {list(expected)} '
                                 f'(torchvision VGG19, {VGG19_TV.filename})')
            out[f'{i}.{kind}'] = state[key].float()
    return out


def vgg19_weights_path(path=None, download=None):
    """The local VGG19 file: an explicit path (checked against the sha256 prefix when it has the canonical
    name), else $PSTYLE_VGG19_WEIGHTS, the cache, torch hub's folder, or a verified download."""
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise WeightsNotFoundError(f'{VGG19_TV.name}: {path} does not exist. Expected {VGG19_TV.filename} '
                                       f'from {VGG19_TV.url}')
        if path.name == VGG19_TV.filename:
            verify_file(path, VGG19_TV)
        return path
    try:
        return resolve_weights(VGG19_TV, download=download)
    except WeightsNotFoundError as e:
        raise WeightsNotFoundError(f'{e} On the command line: --vgg-weights FILE.') from None


def load_vgg19(path=None, pooling='max', device='cpu', download=None):
    """VGG19 on torchvision's ImageNet weights, eval mode, no gradients for its parameters."""
    source = vgg19_weights_path(path, download)
    vgg = VGG19(pooling=pooling)
    vgg.features.load_state_dict(vgg19_tensors(read_state_dict(source, VGG19_TV.name), source))
    vgg.weights_path = str(source)
    return vgg.eval().requires_grad_(False).to(device)
