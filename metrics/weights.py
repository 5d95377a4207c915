"""Weight files for the metrics: where they come from, where they are looked for, how they are checked.

A file is resolved in this order: an explicit path, an environment variable, the cache folder
(`$PSTYLE_CACHE_DIR/weights`, default `~/.cache/portrait-stylegan/weights`), the torch hub folder
(`$TORCH_HOME/hub/checkpoints`, where torchvision, pytorch-fid and lpips look), and finally a
verified download into the cache. Offline, the error names the file, its URL and where to put it.
"""

import dataclasses
import hashlib
import os
import shutil
import tempfile
import urllib.request
from pathlib import Path

import torch


class WeightsNotFoundError(FileNotFoundError):
    """A weight file is neither on disk nor downloadable; the message says how to provide it."""


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


def cache_dir() -> Path:
    """Weight cache; outside site-packages so that upgrades never lose or reuse it."""
    root = os.environ.get('PSTYLE_CACHE_DIR') or os.path.join(os.path.expanduser('~'), '.cache', 'portrait-stylegan')
    return Path(root) / 'weights'


def hub_checkpoints_dir() -> Path:
    return Path(torch.hub.get_dir()) / 'checkpoints'


_sha_memo: dict = {}


def file_sha256(path) -> str:
    """sha256 of a file, memoized on (path, size, mtime) so the same file is hashed once per process."""
    st = os.stat(path)
    key = (os.path.abspath(path), st.st_size, st.st_mtime_ns)
    if key not in _sha_memo:
        h = hashlib.sha256()
        with open(path, 'rb') as f:
            for chunk in iter(lambda: f.read(1 << 20), b''):
                h.update(chunk)
        _sha_memo[key] = h.hexdigest()
    return _sha_memo[key]


def verify_file(path, spec: WeightSpec) -> str:
    """Check size and digest against what is published; returns the sha256."""
    size = os.path.getsize(path)
    if spec.size is not None and size != spec.size:
        raise ValueError(f'{path}: size {size} bytes, expected {spec.size} for {spec.filename}; the file is damaged')
    digest = file_sha256(path)
    if spec.sha256 is not None and digest != spec.sha256:
        raise ValueError(f'{path}: sha256 {digest} does not match {spec.sha256} published for {spec.filename}')
    if spec.sha256_prefix is not None and not digest.startswith(spec.sha256_prefix):
        raise ValueError(f'{path}: sha256 {digest[:16]}... does not start with {spec.sha256_prefix} '
                         f'as the name {spec.filename} says; the file is damaged or a different file')
    return digest


def _download(spec: WeightSpec, dst: Path, timeout: float = 30.0) -> None:
    """Download into a temporary file beside `dst`, verify it, then rename atomically."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dst.parent, prefix='.' + spec.filename + '.')
    try:
        with os.fdopen(fd, 'wb') as f, urllib.request.urlopen(spec.url, timeout=timeout) as r:
            shutil.copyfileobj(r, f)
        verify_file(tmp, spec)
        os.replace(tmp, dst)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


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
