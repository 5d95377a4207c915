"""Loading and saving networks: our format, NVIDIA/TF/rosinality formats, URLs and short names.

`load_network` accepts a local file, an http(s) URL or a short name (`ffhq`, `metfaces`, ...), finds
the format from the file's bytes (never from its extension) and returns our `Generator` /
`Discriminator` objects. Nothing in a file is ever executed: pickles go through a restricted
unpickler (`training/convert_nvidia.py`), torch files through `torch.load(weights_only=True)`.

Our own format (`save_network`) holds tensors plus a JSON config naming each network's class (from a
fixed whitelist) and its `init_kwargs`, as a `.pt`/`.pth` torch file or a `.safetensors` file.
"""

import argparse
import contextlib
import copy
import hashlib
import json
import os
import pickle
import pickletools
import re
import struct
import urllib.error
import urllib.request
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch
from pstyle.models.convert_nvidia import NVIDIA_GLOBALS, load_nvidia_pickle
from pstyle.models.convert_rosinality import (
    export_rosinality,
    is_rosinality,
    load_rosinality,
)
from pstyle.models.convert_tf import load_tf_pickle
from pstyle.models import demo
from pstyle.models.export_nvidia import export_nvidia
from pstyle.models.formats import (  # noqa: F401 (re-exported API)
    CheckpointError,
    _listing,
    build_network,
    channel_kwargs,
    copy_state,
    memory_budget,
    network_classes,
)
from pstyle.torch_utils.fileio import atomic_path

NATIVE_FORMAT = 'portrait-stylegan'
NATIVE_VERSION = 1
NETWORK_KEYS = ('G', 'D', 'G_ema')
FORMATS = ('native', 'nvidia-pickle', 'tf-pickle', 'rosinality')
_TORCH_LEGACY_MAGIC = b'\x80\x02\x8a\nl\xfc\x9cF\xf9 j\xa8P\x19.'  # torch.save's pre-1.6 (non-zip) header


# ----------------------------------------------------------------------------
# Format detection.

def _looks_like_html(head):
    # '<!DOCTYPE html>', '<html>', '<?xml ...': no pickle, zip or safetensors file starts with '<'.
    return head.lstrip(b'\xef\xbb\xbf \t\r\n').startswith(b'<')


_IMAGE_MAGIC = {b'\x89PNG\r\n\x1a\n': 'PNG', b'\xff\xd8\xff': 'JPEG', b'GIF87a': 'GIF', b'GIF89a': 'GIF',
                b'II*\x00': 'TIFF', b'MM\x00*': 'TIFF', b'BM': 'BMP'}


def _image_kind(head):
    """'PNG', 'JPEG', ... when the bytes start like an image file, else None."""
    if head[:4] == b'RIFF' and head[8:12] == b'WEBP':
        return 'WebP'
    return next((kind for magic, kind in _IMAGE_MAGIC.items() if head.startswith(magic)), None)


def _safetensors_metadata(path):
    """The `__metadata__` dict of a safetensors file, or None when the file is not one."""
    with open(path, 'rb') as f:
        raw = f.read(8)
        if len(raw) < 8:
            return None
        (size,) = struct.unpack('<Q', raw)
        if size <= 1 or size > 100_000_000 or size > os.path.getsize(path) - 8:
            return None
        header = f.read(size)
    if not header.startswith(b'{'):
        return None
    try:
        meta = json.loads(header).get('__metadata__') or {}
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise CheckpointError(f'{path}: malformed safetensors header (__metadata__ must map names to strings)')
    return meta


# First global a pickle references -> its format. Scanning stops there; nothing is executed.
_PICKLE_MARKERS = {'torch_utils.persistence': 'nvidia-pickle', 'dnnlib.tflib.network': 'tf-pickle'}


def _scan_pickle(path, max_ops=1_000_000):
    """Walk the pickle's opcodes (pickletools, no execution) up to the first global that names a format."""
    recent = []  # The last two opcodes other than MEMOIZE/FRAME: STACK_GLOBAL's operands.
    with open(path, 'rb') as f:
        try:
            for count, (op, arg, _) in enumerate(pickletools.genops(f)):
                if op.name in ('GLOBAL', 'INST'):
                    module, name = arg.split(' ', 1)
                elif op.name == 'STACK_GLOBAL' and all(o.name.endswith('UNICODE') for o, _ in recent):
                    module, name = recent[0][1], recent[1][1]
                else:
                    module = name = None
                if op.name not in ('MEMOIZE', 'FRAME'):
                    recent = (recent + [(op, arg)])[-2:]
                if module in _PICKLE_MARKERS:
                    return _PICKLE_MARKERS[module]
                if module is not None and (module, name) not in NVIDIA_GLOBALS:
                    raise CheckpointError(
                        f'refusing to load {path}: the pickle references the global {module}.{name}, '
                        f'which is not on the whitelist of data-only types (nothing from the file was executed)')
                if count >= max_ops:
                    break
        except CheckpointError:
            raise  # A whitelist refusal says what was refused; it is not damage.
        except (ValueError, EOFError) as e:
            raise CheckpointError(f'{path} is truncated or not a valid pickle ({e})') from None
    raise CheckpointError(f'{path} is a pickle but neither an NVIDIA network snapshot '
                          f'(torch_utils.persistence) nor a TensorFlow StyleGAN2 pickle (dnnlib.tflib)')


def torch_load_checked(path):
    """`torch.load(weights_only=True)` (rosinality's `args` Namespace allowed), errors made clear."""
    # safe_globals arrived in torch 2.5; older versions simply refuse the Namespace.
    allow = getattr(torch.serialization, 'safe_globals', lambda _: contextlib.nullcontext())
    try:
        with allow([argparse.Namespace]):
            return torch.load(path, map_location='cpu', weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r'GLOBAL ([\w.]+)', str(e))
        what = f'it references the global {found[1]}, which is not a tensor/data type' if found else str(e)
        raise CheckpointError(f'refusing to load {path}: torch.load(weights_only=True) rejected it: {what} '
                              f'(nothing from the file was executed)') from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile, KeyError, IndexError, TypeError,
            AttributeError, AssertionError, OverflowError, UnicodeDecodeError) as e:  # A damaged pickle stream.
        raise CheckpointError(f'{path} is truncated or not a valid torch file ({type(e).__name__}: {e})') from None


def _torch_format(path, payload):
    if isinstance(payload, dict) and payload.get('format') == NATIVE_FORMAT:
        return 'native'
    if is_rosinality(payload):
        return 'rosinality'
    sd = payload.get('state_dict') if isinstance(payload, dict) else None
    if isinstance(sd, dict) and any(isinstance(k, str) and k.startswith('encoder.') for k in sd):
        raise CheckpointError(f'{path} is an e4e/pSp encoder without its decoder (no decoder.* tensors), not a '
                              f'generator: give it as --encoder, and the generator it was trained with as --network')
    keys = list(payload)[:10] if isinstance(payload, dict) else type(payload).__name__
    raise CheckpointError(f'{path} is a torch file but not a known network format (expected a {NATIVE_FORMAT} '
                          f'file, rosinality\'s g_ema/g/d, a pSp/e4e checkpoint or a bare generator state dict; '
                          f'found {keys})')


def _sniff(path):
    """(format, payload): payload is the loaded torch/safetensors content when detection needed it."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f'no such file: {path}')
    with open(path, 'rb') as f:
        head = f.read(512)
    if not head:
        raise CheckpointError(f'{path} is empty')
    if head.startswith(b'PK\x03\x04') or head.startswith(_TORCH_LEGACY_MAGIC):
        payload = torch_load_checked(path)
        return _torch_format(path, payload), payload
    meta = _safetensors_metadata(path)
    if meta is not None:
        if meta.get('format') == 'pstyle-encoder':
            raise CheckpointError(f'{path} is an encoder (written by pstyle train-encoder), not a generator: give it '
                                  f'as --encoder, and the generator it was trained for as --network')
        if meta.get('format') != NATIVE_FORMAT:
            raise CheckpointError(f'{path} is a safetensors file without {NATIVE_FORMAT} metadata '
                                  f'(only files written by save_network are supported)')
        return 'native', None
    if _image_kind(head):
        raise CheckpointError(f'{path} is an image ({_image_kind(head)}), not a network: give a network file '
                              f'(.pkl, .pt, .pth, .safetensors), a URL or a short name such as ffhq')
    if _looks_like_html(head):
        raise CheckpointError(f'{path} is an HTML/XML page, not a network file (a failed or blocked download?); '
                              f'delete it and download the file again')
    return _scan_pickle(path), None


def detect_format(path):
    """One of FORMATS, from the file's content; raises CheckpointError for anything else."""
    return _sniff(path)[0]


# ----------------------------------------------------------------------------
# Our format.

def _native_payload(networks, dtype=None):
    config, tensors = {}, {}
    for name, net in networks.items():
        if not re.fullmatch(r'[A-Za-z_][A-Za-z0-9_]*', name):
            raise CheckpointError(f'network name {name!r} must be an identifier')
        class_name = type(net).__name__
        if network_classes().get(class_name) is not type(net):
            raise CheckpointError(f'{name}: cannot save a {class_name}; expected one of {sorted(network_classes())}')
        try:
            kwargs = json.loads(json.dumps(net.init_kwargs))
        except (TypeError, ValueError) as e:
            raise CheckpointError(f'{name}: init_kwargs are not JSON-serializable: {e}') from None
        config[name] = dict(class_name=class_name, init_kwargs=kwargs)
        for key, value in net.state_dict().items():
            value = value.detach().to('cpu')
            if dtype is not None and value.is_floating_point():
                value = value.to(dtype)
            tensors[f'{name}.{key}'] = value.contiguous().clone()
    return json.dumps(config, sort_keys=True), tensors


def save_network(path, *, dtype=None, **networks):
    """Write networks (e.g. G=..., D=..., G_ema=...) as tensors + JSON config, atomically.

    `.safetensors` keeps the config in the file's metadata; `.pt`/`.pth` is a torch file that loads
    with `torch.load(weights_only=True)`. `dtype` (e.g. torch.float16) stores the floating-point
    tensors in that type to halve the file; they load back into float32 networks.
    """
    path = Path(path)
    if not networks:
        raise CheckpointError('save_network needs at least one network, e.g. save_network(path, G_ema=G)')
    suffix = path.suffix.lower()
    if suffix not in ('.pt', '.pth', '.safetensors'):
        raise CheckpointError(f'{path}: unknown extension {suffix!r}; use .pt, .pth or .safetensors')
    config, tensors = _native_payload(networks, dtype)
    with atomic_path(path) as tmp, open(tmp, 'wb') as f:  # Readers never see a half-written file.
        if suffix == '.safetensors':  # Written through Python files: a full disk is an OSError naming `path`.
            from safetensors.torch import save
            f.write(save(tensors, metadata=dict(format=NATIVE_FORMAT, version=str(NATIVE_VERSION), config=config)))
        else:
            torch.save(dict(format=NATIVE_FORMAT, version=NATIVE_VERSION, config=config, tensors=tensors), f)
    return path


def _load_native(path, payload):
    if payload is None:
        from safetensors import SafetensorError
        from safetensors.torch import load_file
        try:
            tensors = load_file(str(path), device='cpu')
        except (SafetensorError, OSError, ValueError) as e:
            raise CheckpointError(f'{path} is truncated or not a valid safetensors file ({e})') from None
        meta = _safetensors_metadata(path) or {}
        payload = dict(version=meta.get('version'), config=meta.get('config'), tensors=tensors)
    if str(payload.get('version')) != str(NATIVE_VERSION):
        raise CheckpointError(f'{path}: unsupported {NATIVE_FORMAT} version {payload.get("version")!r}')
    try:
        config = json.loads(payload['config'])
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f'{path}: unreadable config ({e})') from None
    tensors = payload.get('tensors')
    if not isinstance(config, dict) or not isinstance(tensors, dict) or \
            not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in tensors.items()):
        raise CheckpointError(f'{path}: malformed {NATIVE_FORMAT} file')
    budget = memory_budget(tensors.values())
    out = {}
    for name, entry in config.items():
        what = f'{name} in {path}'
        if not isinstance(entry, dict):
            raise CheckpointError(f'{what}: malformed config entry')
        prefix = name + '.'
        mine = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
        net = build_network(entry.get('class_name'), entry.get('init_kwargs'), what=what, tensors=mine, max_bytes=budget)
        out[name] = copy_state(net, mine, what=what)
    return out


# ----------------------------------------------------------------------------
# Loading any format.

def _load_any(path, fmt, payload):
    if fmt == 'native':
        return _load_native(path, payload)
    if fmt == 'nvidia-pickle':
        return load_nvidia_pickle(path)
    if fmt == 'tf-pickle':
        return load_tf_pickle(path)
    return load_rosinality(payload, source=str(path))


def check_finite(nets, path, allow_nonfinite=False):
    """Refuse networks holding NaN or Inf (they render NaN images), naming the first such tensor;
    with `allow_nonfinite` only warn."""
    for key in NETWORK_KEYS:
        for name, tensor in (nets[key].state_dict().items() if key in nets else ()):
            if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                message = f'{path}: {key}.{name} holds non-finite values (NaN or Inf)'
                if not allow_nonfinite:
                    raise CheckpointError(f'{message}; the network would produce NaN images. Load it with '
                                          f'allow_nonfinite=True to inspect it anyway')
                warnings.warn(f'{message}: loaded because allow_nonfinite=True', stacklevel=3)
                return


def load_network(path_or_url, device='cpu', *, cache_dir=None, allow_nonfinite=False):
    """{'G_ema' (always), 'G', 'D' (when present), 'format', 'source', ...} from any supported file.

    `path_or_url`: a local file, an http(s) URL, or a short name from PRETRAINED. Networks come back
    in eval mode with requires_grad False, on `device`. Non-finite weights are refused unless
    `allow_nonfinite` (then a warning).
    """
    path = resolve_network(path_or_url, cache_dir=cache_dir)
    fmt, payload = _sniff(path)
    nets = _load_any(path, fmt, payload)
    check_finite(nets, path, allow_nonfinite)
    if 'G_ema' not in nets:
        if 'G' not in nets:
            raise CheckpointError(f'{path} holds no generator (looked for G_ema and G)')
        nets['G_ema'] = copy.deepcopy(nets['G'])  # A checkpoint without an EMA: its G is the best we have.
    for key in NETWORK_KEYS:
        if key in nets:
            nets[key] = nets[key].to(device).eval().requires_grad_(False)
    nets.update(format=fmt, source=str(path_or_url), path=str(path))
    return nets


# ----------------------------------------------------------------------------
# Short names, URLs and the download cache.

@dataclass(frozen=True)
class Pretrained:
    url: str
    resolution: int
    description: str
    sha256: str = None      # Only when actually known; None = not checked.
    size: int = None        # Bytes, only when actually known.


_ADA = 'https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained'
_NGC = 'https://api.ngc.nvidia.com/v2/models/nvidia/research/stylegan2/versions/1/files'
PRETRAINED = {
    'ffhq':                    Pretrained(f'{_ADA}/ffhq.pkl', 1024, 'FFHQ faces, stylegan2-ada-pytorch'),
    'metfaces':                Pretrained(f'{_ADA}/metfaces.pkl', 1024, 'MetFaces portraits, stylegan2-ada-pytorch'),
    'afhqcat':                 Pretrained(f'{_ADA}/afhqcat.pkl', 512, 'AFHQ cats, stylegan2-ada-pytorch'),
    'afhqdog':                 Pretrained(f'{_ADA}/afhqdog.pkl', 512, 'AFHQ dogs, stylegan2-ada-pytorch'),
    'afhqwild':                Pretrained(f'{_ADA}/afhqwild.pkl', 512, 'AFHQ wild animals, stylegan2-ada-pytorch'),
    'stylegan2-ffhq-1024':     Pretrained(f'{_NGC}/stylegan2-ffhq-1024x1024.pkl', 1024, 'FFHQ, StyleGAN2 config-f (NGC)'),
    'stylegan2-metfaces-1024': Pretrained(f'{_NGC}/stylegan2-metfaces-1024x1024.pkl', 1024, 'MetFaces, StyleGAN2 (NGC)'),
}


def default_cache_dir():
    """$PSTYLE_CACHE_DIR, else ~/.cache/portrait-stylegan/networks."""
    env = os.environ.get('PSTYLE_CACHE_DIR')
    return Path(env).expanduser() if env else Path.home() / '.cache' / 'portrait-stylegan' / 'networks'


def env_var_for(name):
    """The environment variable that points a short name at a local file: PSTYLE_NETWORK_<NAME>."""
    return 'PSTYLE_NETWORK_' + re.sub(r'[^A-Za-z0-9]', '_', name).upper()


def cached_path(url, cache_dir=None):
    """Where `url` is (or will be) cached: the URL's file name, prefixed by a short URL hash for
    arbitrary URLs so that two `network.pkl` from different hosts do not collide."""
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    filename = url.split('?')[0].rstrip('/').split('/')[-1] or 'network'
    if not any(entry.url == url for entry in PRETRAINED.values()):
        filename = hashlib.sha256(url.encode()).hexdigest()[:10] + '-' + filename
    return cache_dir / filename




def _offline_help(url, dest, name):
    override = f', or set ${env_var_for(name)}=/path/to/file' if name else ''
    return (f'Download {url} yourself and place it at {dest}{override}, or pass the path of a local copy.')


def download(url, dest, sha256=None, name=None, timeout=30):
    """Fetch `url` to `dest` through a temp file + rename; check sha256 when known."""
    dest = Path(dest)
    digest = hashlib.sha256()
    try:
        with atomic_path(dest) as tmp, open(tmp, 'wb') as out, urllib.request.urlopen(url, timeout=timeout) as response:
            for chunk in iter(lambda: response.read(1 << 20), b''):
                out.write(chunk)
                digest.update(chunk)
            if sha256 is not None and digest.hexdigest() != sha256.lower():
                raise CheckpointError(f'{url}: sha256 {digest.hexdigest()} does not match the expected {sha256}; '
                                      f'the download is corrupt or the file changed. {_offline_help(url, dest, name)}')
    except (urllib.error.URLError, OSError, TimeoutError) as e:
        reason = f'HTTP {e.code} {e.reason}' if isinstance(e, urllib.error.HTTPError) else getattr(e, 'reason', None) or e
        raise CheckpointError(f'cannot download {url} ({reason}). {_offline_help(url, dest, name)}') from None
    return dest


def resolve_network(name_or_url_or_path, cache_dir=None):
    """A local Path for a file path, a short name (the shipped demo networks, PRETRAINED, or
    $PSTYLE_NETWORK_<NAME>) or a URL.

    URLs are downloaded once into the cache directory; later calls use the cached file.
    """
    text = str(name_or_url_or_path)
    if Path(text).expanduser().is_file():
        return Path(text).expanduser()
    if demo.is_demo_name(text):
        return demo.demo_network_path(text)
    name, entry = None, None
    if text in PRETRAINED:
        name, entry = text, PRETRAINED[text]
        override = os.environ.get(env_var_for(name))
        if override:
            if not Path(override).expanduser().is_file():
                raise CheckpointError(f'${env_var_for(name)} points to {override}, which is not a file')
            return Path(override).expanduser()
        text = entry.url
    if re.match(r'^https?://', text):
        dest = cached_path(text, cache_dir)
        if dest.is_file():
            return dest
        return download(text, dest, sha256=entry.sha256 if entry else None, name=name)
    raise CheckpointError(f'no such file: {text} (not a URL, and not one of the short names '
                          f'{", ".join([*demo.DEMO_NETWORKS, *PRETRAINED])})')


# ----------------------------------------------------------------------------
# Summary for `pstyle info`.

def _synthesis_channels(state):
    chans = {}
    for key, value in state.items():
        match = re.fullmatch(r'synthesis\.b(\d+)\.conv1\.weight', key)
        if match:
            chans[int(match.group(1))] = int(value.shape[0])
    return dict(sorted(chans.items()))


def _discriminator_channels(state):
    chans = {}
    for key, value in state.items():
        match = re.fullmatch(r'b(\d+)\.conv0\.weight', key)
        if match:
            chans[int(match.group(1))] = int(value.shape[0])
    if 'b4.conv.weight' in state:
        chans[4] = int(state['b4.conv.weight'].shape[0])
    return dict(sorted(chans.items(), reverse=True))


def network_info(nets):
    """JSON-ready summary of what `load_network` returned."""
    info = dict(format=nets.get('format'), source=nets.get('source'), networks={})
    for key in NETWORK_KEYS:
        net = nets.get(key)
        if net is None:
            continue
        state = net.state_dict()
        entry = dict(class_name=type(net).__name__, img_resolution=int(net.img_resolution),
                     img_channels=int(net.img_channels), c_dim=int(net.c_dim),
                     num_params=sum(p.numel() for p in net.parameters()),
                     num_buffers=sum(b.numel() for b in net.buffers()))
        if hasattr(net, 'mapping') and hasattr(net, 'synthesis'):
            entry.update(z_dim=int(net.z_dim), w_dim=int(net.w_dim), num_ws=int(net.num_ws),
                         mapping_layers=sum(1 for k in state if re.fullmatch(r'mapping\.fc\d+\.weight', k)),
                         channels=_synthesis_channels(state))
        else:
            entry.update(channels=_discriminator_channels(state))
        entry['init_kwargs'] = json.loads(json.dumps(getattr(net, 'init_kwargs', {}), default=str))
        info['networks'][key] = entry
    return info


def convert_network(src, dst, format='native', skip_d=False, cache_dir=None, skip_g=False, fp16=False):
    """Load `src` (any format, URL or short name) and write it to `dst` as `format` (native|rosinality|nvidia).

    `skip_g` leaves the training generator G out (G_ema is what renders); `fp16` stores the native
    format's tensors in half precision (about half the size, e.g. for shipping).
    """
    if format not in ('native', 'rosinality', 'nvidia'):
        raise CheckpointError(f'unknown output format {format!r}; use native, rosinality or nvidia')
    if fp16 and format != 'native':
        raise CheckpointError(f'--fp16 is for the native format only (the {format} format stores float32)')
    if format == 'nvidia' and skip_d:
        raise CheckpointError('--skip-d cannot be used with --format nvidia: NVIDIA\'s loader '
                              '(legacy.load_network_pkl) requires G, D and G_ema in a snapshot')
    nets = load_network(src, cache_dir=cache_dir)
    skipped = {key for key, skip in (('D', skip_d), ('G', skip_g)) if skip}
    present = {k: nets[k] for k in NETWORK_KEYS if k in nets and k not in skipped}
    if format == 'native':
        save_network(dst, dtype=torch.float16 if fp16 else None, **present)
    elif format == 'nvidia':
        export_nvidia(dst, present['G_ema'], G=present.get('G'), D=present.get('D'))
        if 'G' not in present:
            present['G=G_ema'] = present['G_ema']  # The snapshot's G slot holds a copy of G_ema.
    else:
        try:
            export_rosinality(dst, present['G_ema'], G=present.get('G'), D=present.get('D'))
        except CheckpointError as e:
            hint = ' (use --skip-d to export only the generators)' if 'Discriminator' in str(e) else ''
            raise CheckpointError(f'{e}{hint}') from None
    return dict(source=str(src), input_format=nets['format'], output=str(dst), output_format=format,
                networks=sorted(present))
