"""Feature extractors: uint8 images in, float32 features out, each with a name and the sha256 of its weights.

- `inception`: the FID Inception (pool3 [N,2048], logits_unbiased [N,1008]) from a `.pth` state_dict
  (pytorch-fid / torch-fidelity file) or NVIDIA's TorchScript `inception-2015-12-05.pt`.
- `vgg16`: torchvision VGG16 fc2 after ReLU [N,4096] (improved precision/recall; torch-fidelity's 'fc2_relu').
"""

import copy
import os

import numpy as np
import torch
import torch.nn as nn
from pstyle.torch_utils import misc

from . import weights as W
from .inception import InceptionV3FID, load_inception_pth
from .resize import DEFAULT_PROTOCOL, check_protocol, preprocess


def _device(device):
    return torch.device(device if device is not None else misc.default_device())


class FeatureExtractor:
    """Callable: uint8 [N,3,H,W] -> {feature name: float32 [N,D]}. `info()` is stamped into results."""

    def __init__(self, name, sha256, protocol, device, features):
        self.name, self.sha256, self.protocol = name, sha256, protocol
        self.device, self.features = device, tuple(features)

    def info(self):
        return dict(extractor=self.name, extractor_sha256=self.sha256, protocol=self.protocol)

    def __call__(self, images: torch.Tensor, features=None) -> dict:
        raise NotImplementedError


class InceptionExtractor(FeatureExtractor):
    """Our port of the TF graph; `exact=True` skips BatchNorm folding (bit-exact with torch-fidelity on CPU)."""

    def __init__(self, net: InceptionV3FID, sha256, protocol=DEFAULT_PROTOCOL, device=None, exact=False):
        device = _device(device)
        super().__init__('inception_v3_fid', sha256, check_protocol(protocol), device, ('pool3', 'logits_unbiased'))
        net = copy.deepcopy(net).eval().requires_grad_(False)
        if not exact:
            net.fuse()
        # channels_last lets oneDNN / cuDNN pick their fastest convolutions; numerics are unchanged.
        self.net = net.to(device).to(memory_format=torch.channels_last)

    @torch.inference_mode()
    def __call__(self, images, features=('pool3',)):
        x = preprocess(images.to(self.device), self.protocol, 299, 'inception')
        out = self.net(x.contiguous(memory_format=torch.channels_last), logits='logits_unbiased' in features)
        return {k: out[k].float() for k in features}


class TorchScriptInceptionExtractor(FeatureExtractor):
    """NVIDIA's TorchScript Inception, called as NVIDIA's metrics call it.

    legacy_tf: net(uint8 [N,3,H,W], return_features=True) (the module resizes internally);
    other protocols: resized here, then `net.layers(x in [-1,1])` as clean-fid does.
    'probs' (softmax without output bias) comes from net(images, no_output_bias=True), NVIDIA's IS input.
    """

    def __init__(self, path, protocol=DEFAULT_PROTOCOL, device=None):
        device = _device(device)
        super().__init__('inception_v3_fid_torchscript', W.file_sha256(path), check_protocol(protocol), device,
                         ('pool3', 'probs'))
        self.net = W.load_torchscript(path, W.INCEPTION_TS, map_location=device).eval()  # Published files only.

    @torch.inference_mode()
    def __call__(self, images, features=('pool3',)):
        assert images.dtype == torch.uint8 and images.ndim == 4 and images.shape[1] == 3, \
            f'expected uint8 [N,3,H,W], got {images.dtype} {list(images.shape)}'
        images = images.to(self.device)
        out = {}
        if 'pool3' in features:
            if self.protocol == 'legacy_tf':
                f = self.net(images, return_features=True)
            else:
                f = self.net.layers(preprocess(images, self.protocol, 299, 'inception'))
            out['pool3'] = f.reshape(images.shape[0], -1).float()
        if 'probs' in features:
            if self.protocol != 'legacy_tf':
                raise ValueError('the TorchScript Inception gives class probabilities only under protocol legacy_tf')
            out['probs'] = self.net(images, no_output_bias=True).float()
        return out


class VGG16Extractor(FeatureExtractor):
    """torchvision VGG16 up to fc2 + ReLU, input resized to 224 under the protocol (torch-fidelity's VGG16)."""

    def __init__(self, net: nn.Module, sha256, protocol=DEFAULT_PROTOCOL, device=None):
        device = _device(device)
        super().__init__('vgg16_fc2_relu', sha256, check_protocol(protocol), device, ('fc2',))
        net = copy.deepcopy(net).eval().requires_grad_(False)
        net.classifier = net.classifier[:4]          # Linear, ReLU, Dropout, Linear(4096->4096) = fc2
        self.net = net.to(device).to(memory_format=torch.channels_last)

    @torch.inference_mode()
    def __call__(self, images, features=('fc2',)):
        x = preprocess(images.to(self.device), self.protocol, 224, 'imagenet')
        return {'fc2': torch.relu(self.net(x.contiguous(memory_format=torch.channels_last))).float()}


def build_inception(weights=None, protocol=DEFAULT_PROTOCOL, device=None, exact=False, download=None):
    """The FID Inception from a file: `.pt` TorchScript (NVIDIA) or `.pth` state_dict (pytorch-fid/torch-fidelity).

    weights=None looks for the files named in `metrics.weights` (env var, cache, torch hub folder, download).
    """
    if weights is None:
        env = os.environ.get(W.INCEPTION_PTH.env_var)
        if env and _is_torchscript(env):
            return TorchScriptInceptionExtractor(env, protocol, device)
        try:
            weights = W.resolve_weights(W.INCEPTION_PTH, download=download)
        except W.WeightsNotFoundError as e:
            try:
                weights = W.resolve_weights(W.INCEPTION_TS, download=False)
            except W.WeightsNotFoundError:
                raise e from None
    elif not os.path.isfile(weights):
        raise W.WeightsNotFoundError(f'Inception weights {weights} not found. Expected {W.INCEPTION_PTH.filename} '
                                     f'({W.INCEPTION_PTH.url}) or {W.INCEPTION_TS.filename} ({W.INCEPTION_TS.url})')
    if _is_torchscript(weights):
        return TorchScriptInceptionExtractor(weights, protocol, device)
    net = load_inception_pth(weights)
    return InceptionExtractor(net, W.file_sha256(weights), protocol, device, exact=exact)


def build_vgg16(weights=None, protocol=DEFAULT_PROTOCOL, device=None, download=None):
    """VGG16 for precision/recall from torchvision's `vgg16-397923af.pth` (or a compatible state_dict)."""
    import torchvision
    path = W.resolve_weights(W.VGG16_TV, path=weights, download=download)
    net = torchvision.models.vgg16(weights=None)  # Built here, never through torch.hub's unpickling.
    W.load_checked_state_dict(net, W.load_tensors(path, W.VGG16_TV), 'torchvision VGG16', source=path)
    return VGG16Extractor(net, W.file_sha256(path), protocol, device)


def _is_torchscript(path) -> bool:
    """TorchScript archives contain a `constants.pkl`/`code/` entry; plain state_dicts do not."""
    import zipfile
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        return any(n.endswith('/constants.pkl') or '/code/' in n for n in z.namelist())


def extract_features(images, protocol=DEFAULT_PROTOCOL, weights=None, batch_size=64, device=None,
                     extractor=None) -> np.ndarray:
    """pool3 features float32 [N,2048] of uint8 images (torch or numpy, [N,3,H,W] or [N,H,W,3]) under a protocol."""
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(images)
    if images.dtype != torch.uint8:
        raise ValueError(f'images must be uint8 in [0,255]; got {images.dtype} (quantize first: '
                         '(img * 127.5 + 128).clamp(0, 255).to(torch.uint8) for generator outputs in [-1,1])')
    if images.ndim != 4:
        raise ValueError(f'images must be [N,3,H,W] or [N,H,W,3]; got shape {list(images.shape)}')
    if images.shape[1] not in (1, 3) and images.shape[-1] in (1, 3):
        images = images.permute(0, 3, 1, 2)          # NHWC -> NCHW
    if images.shape[1] == 1:
        images = images.repeat(1, 3, 1, 1)           # grayscale: repeat the channel, as NVIDIA's metrics do
    ext = extractor or build_inception(weights, protocol, device)
    if ext.protocol != protocol:
        raise ValueError(f'extractor protocol {ext.protocol} differs from the requested {protocol}')
    feats = [ext(images[i:i + batch_size], ('pool3',))['pool3'].cpu() for i in range(0, len(images), batch_size)]
    return torch.cat(feats).numpy() if feats else np.zeros([0, 2048], np.float32)
