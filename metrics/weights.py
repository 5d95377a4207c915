"""Third-party weight files: where they come from, where they are looked for, how they are checked and loaded.

Every external weight file (FID Inception in both layouts, torchvision VGG16/AlexNet/SqueezeNet, the LPIPS
linear heads, ArcFace, dlib's models) is read through this module, never through torch.hub:
- tensor files go through `load_tensors`: the sha256 is checked where one is published (torchvision's
  names carry its first 8 hex digits), then `torch.load(weights_only=True)` or safetensors; nothing in
  the file is executed;
- formats that other code parses (TorchScript archives, dlib `.dat`) go through `load_torchscript` /
  `trusted_path`, which refuse any file whose full sha256 is not a published one (or one the user
  vouches for in `$PSTYLE_TRUSTED_SHA256`).

A file is resolved in this order: an explicit path, an environment variable, the cache folder
(`$PSTYLE_CACHE_DIR/weights`, default `~/.cache/portrait-stylegan/weights`), the torch hub folder
(`$TORCH_HOME/hub/checkpoints`, where torchvision, pytorch-fid and lpips look), and finally a
verified download into the cache. Offline, the error names the file, its URL and where to put it.
"""

import dataclasses
import hashlib
import io
import os
import pickle
import re
import shutil
import urllib.request
import zipfile
from pathlib import Path

import torch
from pstyle.torch_utils.fileio import atomic_path, sha256_file


class WeightsNotFoundError(FileNotFoundError):
    """A weight file is neither on disk nor downloadable; the message says how to provide it."""


class WeightsHashError(ValueError):
    """A weight file's sha256 differs from the published one; the message names the file and the expected hash."""


class WeightsFormatError(ValueError):
    """A weight file is not plain tensors (e.g. a pickle that would run code); it was not loaded."""


@dataclasses.dataclass(frozen=True)
class WeightSpec:
    name: str                       # what the file is, for messages
    filename: str                   # canonical file name
    url: str | None                 # public download location; None for user-supplied files
    env_var: str                    # environment variable holding a local path
    sha256: str | None = None       # full digest when it is published; never guessed
    sha256_prefix: str | None = None  # torch hub convention: the file name carries the digest's first 8 hex digits
    size: int | None = None         # bytes, when published

    def where(self) -> str:
        return (f'pass its path explicitly, set ${self.env_var}, or put it at {cache_dir() / self.filename} '
                f'(or {hub_checkpoints_dir() / self.filename})')


# The TF Inception graph (2015-12-05) ported to PyTorch by pytorch-fid; torch-fidelity ships the same file
# under another name. The hex suffix is the sha256 prefix (torch.hub's check_hash convention).
INCEPTION_PTH = WeightSpec(
    name='FID Inception-v3 (pytorch-fid port of the TF 2015-12-05 graph)',
    filename='pt_inception-2015-12-05-6726825d.pth',
    url='https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth',
    env_var='PSTYLE_INCEPTION_WEIGHTS', sha256_prefix='6726825d')

# NVIDIA's TorchScript translation of the same graph, used by stylegan2-ada-pytorch / stylegan3 metrics.
INCEPTION_TS = WeightSpec(
    name="NVIDIA's TorchScript FID Inception",
    filename='inception-2015-12-05.pt',
    url='https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/inception-2015-12-05.pt',
    env_var='PSTYLE_INCEPTION_WEIGHTS')

# torchvision's ImageNet VGG16 (also the LPIPS-VGG backbone).
VGG16_TV = WeightSpec(
    name="torchvision VGG16 (ImageNet)",
    filename='vgg16-397923af.pth',
    url='https://download.pytorch.org/models/vgg16-397923af.pth',
    env_var='PSTYLE_VGG16_WEIGHTS', sha256_prefix='397923af')

# ArcFace IR-SE50 as used by pSp / e4e / restyle (TreB1eN's InsightFace_Pytorch port); no stable public URL.
ARCFACE_IRSE50 = WeightSpec(
    name='ArcFace IR-SE50 (model_ir_se50.pth, as distributed with pSp/e4e)',
    filename='model_ir_se50.pth', url=None, env_var='PSTYLE_ARCFACE_WEIGHTS')


# torchvision's ImageNet AlexNet and SqueezeNet 1.1, the other two LPIPS backbones.
ALEXNET_TV = WeightSpec(
    name='torchvision AlexNet (ImageNet)', filename='alexnet-owt-7be5be79.pth',
    url='https://download.pytorch.org/models/alexnet-owt-7be5be79.pth',
    env_var='PSTYLE_ALEXNET_WEIGHTS', sha256_prefix='7be5be79')
SQUEEZENET_TV = WeightSpec(
    name='torchvision SqueezeNet 1.1 (ImageNet)', filename='squeezenet1_1-b8a52dc0.pth',
    url='https://download.pytorch.org/models/squeezenet1_1-b8a52dc0.pth',
    env_var='PSTYLE_SQUEEZENET_WEIGHTS', sha256_prefix='b8a52dc0')
LPIPS_BACKBONES = {'vgg': VGG16_TV, 'alex': ALEXNET_TV, 'squeeze': SQUEEZENET_TV}


def _lpips_heads(net, sha256):
    return WeightSpec(name=f'LPIPS v0.1 linear heads for {net}', filename=f'{net}.pth',
                      url=f'https://github.com/richzhang/PerceptualSimilarity/raw/master/lpips/weights/v0.1/{net}.pth',
                      env_var='PSTYLE_LPIPS_HEADS', sha256=sha256)


# The calibrated linear layers of Zhang et al. 2018, as shipped in the `lpips` package (0.1.4, identical to the
# files in the authors' repository); digests computed from those files.
LPIPS_HEADS = {
    ('0.1', 'vgg'): _lpips_heads('vgg', 'a78928a0af1e5f0fcb1f3b9e8f8c3a2a5a3de244d830ad5c1feddc79b8432868'),
    ('0.1', 'alex'): _lpips_heads('alex', 'df73285e35b22355a2df87cdb6b70b343713b667eddbda73e1977e0c860835c0'),
    ('0.1', 'squeeze'): _lpips_heads('squeeze', '4a5350f23600cb79923ce65bb07cbf57dca461329894153e05a1346bd531cf76'),
}


def _dlib_model(filename, sha256, what):
    return WeightSpec(name=f"dlib's {what} ({filename}, as shipped in face-recognition-models 0.3.0)",
                      filename=filename, url=None, env_var='PSTYLE_DLIB_LANDMARKS', sha256=sha256)


# dlib's models (dlib.net/files, bz2-compressed there) as shipped by `face-recognition-models`; digests of the
# decompressed files, computed from that package.
DLIB_LANDMARKS_68 = _dlib_model('shape_predictor_68_face_landmarks.dat',
                                'fbdc2cb80eb9aa7a758672cbfdda32ba6300efe9b6e6c7a299ff7e736b11b92f', '68-point landmarks')
DLIB_LANDMARKS_5 = _dlib_model('shape_predictor_5_face_landmarks.dat',
                               'c4b1e9804792707d3a405c2c16a80a20269e6675021f64a41d30fffafbc41888', '5-point landmarks')
DLIB_FACE_RESNET = _dlib_model('dlib_face_recognition_resnet_model_v1.dat',
                               '55533b28a95800a551ba546ba62fe69625c7e95a7061c338adffead08719da30', 'face descriptor')

# Files that other code parses (TorchScript, dlib) may only be loaded with one of these full digests.
TRUST_ENV = 'PSTYLE_TRUSTED_SHA256'


def cache_dir() -> Path:
    """Weight cache; outside site-packages so that upgrades never lose or reuse it."""
    root = os.environ.get('PSTYLE_CACHE_DIR') or os.path.join(os.path.expanduser('~'), '.cache', 'portrait-stylegan')
    return Path(root) / 'weights'


def hub_checkpoints_dir() -> Path:
    return Path(torch.hub.get_dir()) / 'checkpoints'


_sha_memo: dict = {}


def file_sha256(path) -> str:
    """`torch_utils.fileio.sha256_file`, memoized on (path, size, mtime): the same file is hashed once per process."""
    st = os.stat(path)
    key = (os.path.abspath(path), st.st_size, st.st_mtime_ns)
    if key not in _sha_memo:
        _sha_memo[key] = sha256_file(path)
    return _sha_memo[key]


def verify_file(path, spec: WeightSpec) -> str:
    """Check size and digest against what is published; returns the sha256."""
    size = os.path.getsize(path)
    if spec.size is not None and size != spec.size:
        raise WeightsHashError(f'{path}: size {size} bytes, expected {spec.size} for {spec.filename}; the file is damaged')
    digest = file_sha256(path)
    if spec.sha256 is not None and digest != spec.sha256:
        raise WeightsHashError(f'{path}: sha256 {digest} does not match {spec.sha256} published for {spec.filename}')
    if spec.sha256_prefix is not None and not digest.startswith(spec.sha256_prefix):
        raise WeightsHashError(f'{path}: sha256 {digest[:16]}... does not start with {spec.sha256_prefix} '
                         f'as the name {spec.filename} says; the file is damaged or a different file')
    return digest


def _download(spec: WeightSpec, dst: Path, timeout: float = 30.0) -> None:
    """Download into a temporary file beside `dst`, verify it, then rename atomically."""
    with atomic_path(dst) as tmp:
        with open(tmp, 'wb') as f, urllib.request.urlopen(spec.url, timeout=timeout) as r:
            shutil.copyfileobj(r, f)
        verify_file(tmp, spec)


def resolve_weights(spec: WeightSpec, path=None, download: bool | None = None) -> Path:
    """Return a local, verified path for `spec`; see the module docstring for the search order.

    download=None means: download unless $PSTYLE_OFFLINE is set.
    """
    if path is not None:
        if not os.path.isfile(path):
            raise WeightsNotFoundError(f'{spec.name}: {path} does not exist. Expected {spec.filename}'
                                       + (f' from {spec.url}' if spec.url else ''))
        return Path(path)
    env = os.environ.get(spec.env_var)
    if env:
        if not os.path.isfile(env):
            raise WeightsNotFoundError(f'{spec.name}: ${spec.env_var}={env} does not exist')
        return Path(env)
    for folder in (cache_dir(), hub_checkpoints_dir()):
        if (folder / spec.filename).is_file():
            verify_file(folder / spec.filename, spec)
            return folder / spec.filename
    if download is None:
        download = not os.environ.get('PSTYLE_OFFLINE')
    if download and spec.url is not None:
        try:
            _download(spec, cache_dir() / spec.filename)
            return cache_dir() / spec.filename
        except OSError as e:  # URLError and socket timeouts are OSErrors
            raise WeightsNotFoundError(missing_message(spec, reason=f'download failed: {e}')) from e
    raise WeightsNotFoundError(missing_message(spec))


def missing_message(spec: WeightSpec, reason: str | None = None) -> str:
    src = f'download it from {spec.url}' if spec.url else 'this file has no public URL; obtain it from its authors'
    msg = f'{spec.name}: weight file {spec.filename} not found'
    if reason:
        msg += f' ({reason})'
    return f'{msg}. {src} and {spec.where()}.'


def load_checked_state_dict(model, state_dict, name, source=None):
    """Load `state_dict` into `model` after checking every key and shape; errors name `name` (and `source`).

    Strict, except that BatchNorm `num_batches_tracked` counters (absent from older files) may be missing.
    """
    prefix = f'{source}: ' if source else ''
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict and not k.endswith('num_batches_tracked')]
    unexpected = [k for k in state_dict if k not in expected]
    if missing or unexpected:
        raise ValueError(f'{prefix}not an {name} state_dict: {len(missing)} missing keys (e.g. {missing[:3]}), '
                         f'{len(unexpected)} unexpected keys (e.g. {unexpected[:3]})')
    for k, v in state_dict.items():
        if tuple(v.shape) != tuple(expected[k].shape):
            raise ValueError(f'{prefix}{name} weight {k}: shape {list(v.shape)}, expected {list(expected[k].shape)}')
    model.load_state_dict(state_dict, strict=False)
    return model


def user_trusted_sha256() -> set:
    """Full sha256 digests the user vouches for in $PSTYLE_TRUSTED_SHA256 (comma or space separated)."""
    raw = os.environ.get(TRUST_ENV, '')
    return {d.strip().lower() for d in raw.replace(',', ' ').split() if d.strip()}


def trusted_path(path, *specs: WeightSpec) -> Path:
    """`path` if its full sha256 is one published for `specs` (or listed in $PSTYLE_TRUSTED_SHA256), else refuse.

    For formats that other code parses (TorchScript, dlib `.dat`): a prefix or a plausible name is not enough.
    """
    digest = file_sha256(path)
    published = {s.sha256 for s in specs if s.sha256}
    if digest in published or digest in user_trusted_sha256():
        return Path(path)
    expected = ' or '.join(s.sha256 for s in specs if s.sha256) or 'none recorded (no published digest is known)'
    raise WeightsHashError(
        f'refusing to load {path}: its sha256 {digest} is not the published sha256 of {specs[0].filename} '
        f'({specs[0].name}): expected {expected}. This format is parsed by code outside this project, so only '
        f'known files are loaded; if you trust this file, add its sha256 to ${TRUST_ENV}.')


def _check_named_file(path, spec):
    """A file carrying a spec's canonical name must carry its published digest (full or prefix)."""
    if spec is not None and os.path.basename(os.fspath(path)) == spec.filename:
        verify_file(path, spec)


def load_tensors(path, spec: WeightSpec | None = None) -> dict:
    """The one loader of tensor weight files: digest checked, then tensors only (no code from the file runs).

    `.safetensors` through safetensors; anything else through `torch.load(weights_only=True)`. A
    `{'state_dict': {...}}` wrapper is unwrapped. Returns {name: tensor} on the CPU.
    """
    _check_named_file(path, spec)
    what = spec.name if spec is not None else 'weight file'
    if os.fspath(path).endswith('.safetensors'):
        from safetensors.torch import load_file  # noqa: PLC0415 -- optional format
        return load_file(os.fspath(path), device='cpu')
    try:
        obj = torch.load(path, map_location='cpu', weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r'GLOBAL ([\w.]+)', str(e))
        detail = re.search(r'WeightsUnpickler error:\s*(\S[^\n]*)', str(e))
        reason = (f'it references the global {found[1]}, not a tensor type' if found else
                  f'unsupported pickle content ({detail[1].strip()})' if detail else 'not a tensor pickle')
        raise WeightsFormatError(f'refusing to load {path} ({what}): not a plain tensor file; torch.load('
                                 f'weights_only=True) rejected it: {reason} (nothing from the file was run)') from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as e:
        raise WeightsFormatError(f'{path} ({what}) is truncated or not a torch file ({type(e).__name__}: {e})') from None
    if isinstance(obj, dict) and isinstance(obj.get('state_dict'), dict):
        obj = obj['state_dict']
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsFormatError(f'{path} ({what}): expected a state_dict of tensors, got {type(obj).__name__}')
    return obj


def load_torchscript(path, spec: WeightSpec, map_location='cpu'):
    """A TorchScript archive, only when its sha256 is published (loading runs the archive's code)."""
    import warnings
    with open(path, 'rb') as f:
        data = f.read()  # Hash and load the same bytes: no swap between the check and the load.
    digest = hashlib.sha256(data).hexdigest()
    if digest not in ({spec.sha256} | user_trusted_sha256()):
        trusted_path(path, spec)  # Raises with the message (the file on disk hashes to what it held).
        raise WeightsHashError(f'refusing to load {path}: it changed while it was being checked')
    with warnings.catch_warnings():  # torch>=2.9 deprecates jit.load, but NVIDIA's file is TorchScript
        warnings.simplefilter('ignore', FutureWarning)
        return torch.jit.load(io.BytesIO(data), map_location=map_location)
