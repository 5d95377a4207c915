"""Fast inversion with e4e / pSp encoders: images [N, 3, H, W] in [-1, 1] -> W+ [N, num_ws, w_dim].

`load_encoder` reads the checkpoints the original e4e (Tov et al. 2021) and pSp (Richardson et al. 2021)
training code saves: `torch.save({'state_dict': {'encoder.*', 'decoder.*' (optional)}, 'latent_avg',
'opts': dict})`. The architecture comes from `opts` (`encoder_type`, `input_nc`, `stylegan_size` /
`output_size`) and every tensor is checked by name and shape. Nothing in a file is executed:
`torch.load(weights_only=True)` only, and plain pickles (NVIDIA snapshots) are refused unread.

It also reads our own encoder files (`pstyle train-encoder`, `save_trained_encoder`): a `.safetensors`
file whose metadata holds `format: pstyle-encoder`, a version and a JSON config (architecture and its
arguments, num_ws, w_dim, input size, the generator it was trained for: file sha256 and weights sha256).

The returned `Encoder` adds `latent_avg` as the original does, so its output goes straight into
`G.synthesis`. By default it runs with BatchNorm folded into the convolutions and, on the CPU, in
channels_last memory format with Winograd convolutions (torch_utils/winograd.py); `optimize=False` keeps the
original's exact sequence of operations.
"""

import argparse
import json
import os
import re
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from pstyle.models.checkpoint import (
    CheckpointError,
    Pretrained,
    cached_path,
    copy_state,
    default_cache_dir,
    download,
    env_var_for,
    torch_load_checked,
)
from pstyle.models import demo
from pstyle.models.deltas import tensors_sha256
from pstyle.models.render import compute_dtype
from pstyle.projectors import encoder_nets
from pstyle.torch_utils.fileio import atomic_path

ENCODER_FORMAT = 'pstyle-encoder'   # Metadata `format` of our encoder files.
ENCODER_VERSION = 1
_TORCH_MAGIC = (b'PK\x03\x04', b'\x80\x02\x8a\nl\xfc\x9cF\xf9 j\xa8P\x19.')  # zip torch.save; pre-1.6 torch.save

# Published FFHQ encoders (1024x1024 generators, 18 W+ rows), on Google Drive; sha256 not published, so unchecked.
_DRIVE = 'https://drive.usercontent.google.com/download?export=download&confirm=t&id='
PRETRAINED_ENCODERS = {
    'e4e_ffhq_encode':  Pretrained(_DRIVE + '1cUv_reLE6k3604or78EranS7XzuVMWeO', 1024, 'e4e FFHQ inversion (Tov et al. 2021)'),
    'psp_ffhq_encode':  Pretrained(_DRIVE + '1bMTNWkh5LArlaWSc_wa8VKyq2V42T2z0', 1024, 'pSp FFHQ inversion (Richardson et al. 2021)'),
    'psp_ffhq_toonify': Pretrained(_DRIVE + '1YKoiVuFaqdvzDP5CZaqa3k5phL-VDmyz', 1024, 'pSp FFHQ -> Toonify generator'),
}


# ----------------------------------------------------------------------------
# The encoder module.

class Encoder(nn.Module):
    """An e4e / pSp encoder: `forward(images [N, C, H, W] in [-1, 1])` -> W+ [N, num_ws, w_dim], ready for G.synthesis.

    Attributes: `num_ws`, `w_dim`, `input_size` (256), `input_nc`, `kind` ('e4e' | 'psp'), `encoder_type`,
    `generator_hint` ('sha256:<hex>' of the decoder's tensors when the file holds one, our files: of the
    generator file; else the file name), `generator` (our files: the generator record of the config, else None),
    `source`, `precision` ('fp32' | 'bf16' | 'fp16', the default for forward).
    """

    def __init__(self, net, latent_avg, *, encoder_type, input_size=256, input_nc=3, add_latent_avg=True,
                 generator_hint=None, source=None, channels_last=False, kind=None, generator=None):
        super().__init__()
        self.net = net
        self.register_buffer('latent_avg', latent_avg.float())               # [num_ws, w_dim]
        self.encoder_type = encoder_type
        self.kind = kind or ('e4e' if encoder_type == 'Encoder4Editing' else 'psp')
        self.generator = generator
        self.num_ws, self.w_dim = int(latent_avg.shape[0]), int(latent_avg.shape[1])
        self.input_size, self.input_nc = input_size, input_nc
        self.add_latent_avg = add_latent_avg
        self.generator_hint, self.source = generator_hint, source
        self.channels_last = channels_last
        self.precision = 'fp32'

    def resize(self, images):
        """To input_size x input_size. The original feeds 256x256 images as they are; other sizes are resampled
        bilinearly with antialiasing (torch's equivalent of the PIL bilinear `transforms.Resize` of its
        inference scripts). Non-square images are stretched, as `Resize((256, 256))` does."""
        if tuple(images.shape[-2:]) == (self.input_size, self.input_size):
            return images
        return F.interpolate(images, size=(self.input_size, self.input_size), mode='bilinear', align_corners=False,
                             antialias=True)

    def forward(self, images, precision=None):
        if images.ndim != 4 or images.shape[1] != self.input_nc:
            raise ValueError(f'{self.kind} encoder ({self.source}) expects images [N, {self.input_nc}, H, W] in [-1, 1], '
                             f'got {list(images.shape)}')
        x = self.resize(images.to(self.latent_avg.device, torch.float32))
        dtype = compute_dtype(precision or self.precision, x.device)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(x.device.type, dtype=dtype, enabled=dtype is not None):
            codes = self.net(x).float()
        if codes.ndim == 2:                                                    # W encoder: one w for every row.
            codes = codes[:, None, :].expand(-1, self.num_ws, -1)
        return codes + self.latent_avg if self.add_latent_avg else codes.contiguous()  # [N, num_ws, w_dim]


def check_encoder_matches(encoder, G):
    """Raise CheckpointError unless `G.synthesis` takes the W+ shape `encoder` produces."""
    want = (int(G.num_ws), int(G.w_dim))
    if (encoder.num_ws, encoder.w_dim) != want:
        raise CheckpointError(
            f'encoder {encoder.source} predicts W+ [{encoder.num_ws}, {encoder.w_dim}] but the generator takes '
            f'[{want[0]}, {want[1]}] (num_ws {want[0]}, w_dim {want[1]}): use the generator the encoder was trained '
            f'with (generator_hint: {encoder.generator_hint})')


# ----------------------------------------------------------------------------
# Reading files.

def resolve_encoder(name_or_url_or_path, cache_dir=None):
    """A local Path for a file, a short name of PRETRAINED_ENCODERS ($PSTYLE_NETWORK_<NAME> overrides it) or a URL."""
    text = str(name_or_url_or_path)
    if Path(text).expanduser().is_file():
        return Path(text).expanduser()
    if demo.is_demo_encoder_name(text):
        return demo.demo_encoder_path(text)
    entry = PRETRAINED_ENCODERS.get(text)
    if entry is not None:
        override = os.environ.get(env_var_for(text))
        if override:
            if not Path(override).expanduser().is_file():
                raise CheckpointError(f'${env_var_for(text)} points to {override}, which is not a file')
            return Path(override).expanduser()
        dest = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        dest = dest / f'{text}.pt'
        return dest if dest.is_file() else download(entry.url, dest, sha256=entry.sha256, name=text)
    if re.match(r'^https?://', text):
        dest = cached_path(text, cache_dir)
        return dest if dest.is_file() else download(text, dest)
    raise CheckpointError(f'no such encoder file: {text} (not a URL, and not one of the short names '
                          f'{", ".join([*demo.DEMO_ENCODERS, *PRETRAINED_ENCODERS])})')


def _read_checkpoint(path):
    """The dict inside an e4e/pSp checkpoint, via torch.load(weights_only=True); anything else is refused."""
    with open(path, 'rb') as f:
        head = f.read(512)
    if not head:
        raise CheckpointError(f'{path} is empty')
    if not head.startswith(_TORCH_MAGIC):
        if head.lstrip(b'\xef\xbb\xbf \t\r\n').startswith(b'<'):
            what = 'an HTML/XML page (a failed or blocked download?); delete it and download the file again'
        elif head[:1] == b'\x80':
            what = 'a plain pickle (an NVIDIA/TensorFlow network snapshot?); it was not unpickled'
        else:
            what = 'not a torch file'
        raise CheckpointError(f'{path} is {what}, not an e4e/pSp encoder checkpoint (a torch.save file)')
    payload = torch_load_checked(path)  # weights_only; Namespace opts allowed; errors name the file.
    return _check_layout(path, payload)


def _check_layout(path, payload):
    if not isinstance(payload, dict):
        raise CheckpointError(f'{path} holds a {type(payload).__name__}, not an e4e/pSp checkpoint dict')
    sd = payload.get('state_dict')
    if not isinstance(sd, dict) or not any(isinstance(k, str) and k.startswith('encoder.') for k in sd):
        generator = (any(k in payload for k in ('g_ema', 'g', 'format', 'style.1.weight')) or
                     isinstance(sd, dict) and any(str(k).startswith('decoder.') for k in sd))
        hint = ' (it holds a generator only)' if generator else ''
        raise CheckpointError(f'{path} is not an e4e/pSp encoder checkpoint: no state_dict with encoder.* tensors{hint}; '
                              f'found keys {list(payload)[:8]}')
    opts = payload.get('opts')
    opts = vars(opts) if isinstance(opts, argparse.Namespace) else opts
    if not isinstance(opts, dict):
        raise CheckpointError(f'{path}: the checkpoint has no opts dict (it names the encoder_type and output size)')
    return sd, opts, payload.get('latent_avg')


def _architecture(path, opts, encoder_sd):
    """(encoder_type, n_styles, input_nc, se) from `opts`, as the original's pSp/e4e classes read them."""
    encoder_type = opts.get('encoder_type', 'GradualStyleEncoder')
    if encoder_type not in encoder_nets.ENCODER_TYPES:
        raise CheckpointError(f'{path}: encoder_type {encoder_type!r} is not supported '
                              f'(supported: {", ".join(encoder_nets.ENCODER_TYPES)})')
    key = 'stylegan_size' if encoder_type == 'Encoder4Editing' else 'output_size'
    size = opts.get(key, 1024)                              # Both projects default to a 1024x1024 generator.
    if not isinstance(size, int) or size < 4 or size & (size - 1):
        raise CheckpointError(f'{path}: opts[{key!r}] = {size!r} is not a power-of-two image size')
    input_nc = opts.get('input_nc', 3)
    se = 'body.0.res_layer.5.fc1.weight' in encoder_sd       # 'ir_se' (all published files) or plain 'ir' units.
    return encoder_type, encoder_nets.num_styles(size), input_nc, se


def _latent_avg(path, latent_avg, num_ws, w_dim):
    """[w_dim], [1, w_dim] or [num_ws, w_dim] -> [num_ws, w_dim]."""
    if not isinstance(latent_avg, torch.Tensor):
        raise CheckpointError(f'{path}: latent_avg is missing, but the encoder starts from it (start_from_latent_avg)')
    t = latent_avg.detach().float()
    t = t[None] if t.ndim == 1 else t
    if t.ndim != 2 or t.shape[1] != w_dim or t.shape[0] not in (1, num_ws):
        raise CheckpointError(f'{path}: latent_avg has shape {list(latent_avg.shape)}; expected [{w_dim}], '
                              f'[1, {w_dim}] or [{num_ws}, {w_dim}]')
    return t.expand(num_ws, w_dim).clone()


def load_encoder(path_or_url_or_name, device='cpu', *, precision='fp32', optimize=True, winograd=True, cache_dir=None):
    """An `Encoder` in eval mode, requires_grad False, on `device`, from a file, URL or short name.

    `optimize`: fold BatchNorm into the preceding convolutions and, on the CPU, use channels_last and Winograd
    convolutions for the IR-SE-50 encoders (same results to ~1e-5; the C++ plugin for the latter is built on first
    use, else the direct convolutions run); False runs the original's modules as they are (the reference for
    parity and benchmarks). `winograd=False` keeps the direct convolutions of the optimised network (less memory:
    the Winograd filters of a 1024-size e4e take about 0.6 GB more, built on first use).
    """
    path = resolve_encoder(path_or_url_or_name, cache_dir=cache_dir)
    device = torch.device(device)
    config = _native_config(path)
    if config is not None:
        encoder = _load_native(path, config, device, optimize, winograd)
        compute_dtype(precision, device)
        encoder.precision = precision
        return encoder.to(device).eval().requires_grad_(False)
    sd, opts, latent_avg = _read_checkpoint(path)
    tensors = {k[len('encoder.'):]: v for k, v in sd.items() if k.startswith('encoder.')}
    encoder_type, n_styles, input_nc, se = _architecture(path, opts, tensors)
    net = encoder_nets.build_encoder(encoder_type, n_styles, input_nc, se)
    what = f'the encoder.* tensors of {path} ({encoder_type}, opts: {n_styles} W+ rows, input_nc {input_nc})'
    copy_state(net, tensors, what=what, keep_missing=['*num_batches_tracked'])
    w_dim = 512
    # pSp adds latent_avg only with start_from_latent_avg (its published files set it); e4e always trains so.
    add = encoder_type == 'Encoder4Editing' or bool(opts.get('start_from_latent_avg', False))
    latent_avg = _latent_avg(path, latent_avg, n_styles, w_dim) if add else torch.zeros(n_styles, w_dim)
    decoder = {k: v for k, v in sd.items() if k.startswith('decoder.')}
    hint = f'sha256:{tensors_sha256(decoder)}' if decoder else path.name
    channels_last = optimize and device.type == 'cpu'
    if optimize:
        encoder_nets.fuse_for_inference(net, winograd=winograd and device.type == 'cpu')
    net = net.to(device, memory_format=torch.channels_last) if channels_last else net.to(device)
    encoder = Encoder(net, latent_avg, encoder_type=encoder_type, input_nc=input_nc,
                      add_latent_avg=add, generator_hint=hint, source=str(path), channels_last=channels_last)
    compute_dtype(precision, device)                         # Fail now on fp16 without CUDA.
    encoder.precision = precision
    return encoder.to(device).eval().requires_grad_(False)


def save_encoder(path, net, latent_avg, opts, decoder=None):
    """Write `net` as the original e4e/pSp training code does: {'state_dict', 'latent_avg', 'opts'}.

    `opts` must be a plain dict naming `encoder_type` and `stylegan_size` (e4e) or `output_size` (pSp).
    `decoder`: an optional rosinality generator state dict stored as `decoder.*`.
    """
    state = {f'encoder.{k}': v.detach().cpu() for k, v in net.state_dict().items()}
    state.update({f'decoder.{k}': v.detach().cpu() for k, v in (decoder or {}).items()})
    torch.save(dict(state_dict=state, latent_avg=latent_avg.detach().cpu(), opts=dict(opts)), path)
    return Path(path)


# ----------------------------------------------------------------------------
# Our encoder files (pstyle train-encoder): safetensors, config in the metadata, nothing pickled.

def build_architecture(arch, kwargs):
    """A fresh network of `arch` ('SmallEncoder' or one of encoder_nets.ENCODER_TYPES) from its JSON kwargs."""
    if arch == 'SmallEncoder':
        return encoder_nets.SmallEncoder(**kwargs)
    if arch in encoder_nets.ENCODER_TYPES:
        return encoder_nets.build_encoder(arch, kwargs['n_styles'], kwargs.get('input_nc', 3), kwargs.get('se', True))
    raise ValueError(f'unknown encoder architecture {arch!r}; expected SmallEncoder or one of '
                     f'{", ".join(encoder_nets.ENCODER_TYPES)}')


def save_trained_encoder(path, net, latent_avg, config):
    """Write an encoder as .safetensors (tensors `net.*` and `latent_avg`, the JSON `config` in the metadata),
    atomically. `config`: arch, arch_kwargs, num_ws, w_dim, input_size, input_nc, generator (dict), ..."""
    path = Path(path)
    if path.suffix != '.safetensors':
        raise ValueError(f'{path}: encoder files are written as .safetensors')
    tensors = {f'net.{k}': v.detach().cpu().contiguous().clone() for k, v in net.state_dict().items()}
    tensors['latent_avg'] = latent_avg.detach().float().cpu().contiguous().clone()
    meta = dict(format=ENCODER_FORMAT, version=str(ENCODER_VERSION), config=json.dumps(config, sort_keys=True))
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    return path


def save_encoder_fp16(src, dst):
    """Copy one of our encoder files with its network weights in fp16 (half the bytes; `load_encoder` computes in
    the precision asked for either way), `latent_avg` and the metadata unchanged. Used to ship `demo-encoder`."""
    if _native_config(src) is None:
        raise CheckpointError(f'{src} is not an encoder file from pstyle train-encoder')
    with safe_open(str(src), framework='pt') as f:
        meta = f.metadata()
    tensors = {k: (v.half() if k.startswith('net.') and v.is_floating_point() else v).contiguous()
               for k, v in load_file(str(src)).items()}
    with atomic_path(Path(dst)) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    return Path(dst)


def _native_config(path):
    """The config of one of our encoder files; None when `path` is not a safetensors file at all."""
    with open(path, 'rb') as f:
        head = f.read(9)
    if len(head) < 9 or head[8:9] != b'{':
        return None
    try:
        with safe_open(str(path), framework='pt') as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f'{path} is truncated or not a valid safetensors file ({e})') from None
    if meta.get('format') != ENCODER_FORMAT:
        what = 'a generator (a portrait-stylegan network file): give it as --network' \
            if meta.get('format') == 'portrait-stylegan' else f'a safetensors file with format {meta.get("format")!r}'
        raise CheckpointError(f'{path} is {what}, not an encoder ({ENCODER_FORMAT} file from pstyle train-encoder, '
                              f'or an e4e/pSp checkpoint)')
    if meta.get('version') != str(ENCODER_VERSION):
        raise CheckpointError(f'{path}: unsupported {ENCODER_FORMAT} version {meta.get("version")!r}')
    try:
        config = json.loads(meta['config'])
        config['arch'], config['arch_kwargs'], config['num_ws'], config['w_dim'], config['input_size']  # noqa: B018
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f'{path}: unreadable encoder config ({type(e).__name__}: {e})') from None
    return config


def _load_native(path, config, device, optimize, winograd):
    try:
        tensors = load_file(str(path), device='cpu')
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f'{path} is truncated or not a valid safetensors file ({e})') from None
    try:
        net = build_architecture(config['arch'], config['arch_kwargs'])
    except (ValueError, TypeError, KeyError) as e:
        raise CheckpointError(f'{path}: cannot build the encoder of its config ({e})') from None
    state = {k[len('net.'):]: v for k, v in tensors.items() if k.startswith('net.')}
    copy_state(net, state, what=f'the net.* tensors of {path} ({config["arch"]})', keep_missing=['*num_batches_tracked'])
    num_ws, w_dim = int(config['num_ws']), int(config['w_dim'])
    latent_avg = _latent_avg(path, tensors.get('latent_avg'), num_ws, w_dim)
    net.eval()
    channels_last = optimize and device.type == 'cpu'
    if optimize and config['arch'] in encoder_nets.ENCODER_TYPES:
        encoder_nets.fuse_for_inference(net, winograd=winograd and device.type == 'cpu')
    net = net.to(device, memory_format=torch.channels_last) if channels_last else net.to(device)
    generator = config.get('generator') or {}
    hint = f'sha256:{generator["sha256"]}' if generator.get('sha256') else path.name
    return Encoder(net, latent_avg, encoder_type=config['arch'], input_size=int(config['input_size']),
                   input_nc=int(config.get('input_nc', 3)), generator_hint=hint, source=str(path),
                   channels_last=channels_last, kind='pstyle', generator=generator or None)
