"""Weight deltas (pivotal tuning per photo, few-shot styles): the only reader and writer of delta files, and
the weights hash that ties a delta or a latents file to its base network.

A delta maps parameter names to `tuned - base`, either as a full tensor or as low-rank factors
`LowRank(u [m, r], v [r, n])` with `tuned - base = (u @ v).reshape(shape)` (LoRA's parametrisation, Hu et al.
2021, Eq. 3, applied to every weight flattened to [out, in * k * k]). Files: version 2 (`pstyle-delta`) holds
both kinds; version 1 (`pstyle-pti-delta`, full tensors only, written before styles existed) still loads.
"""

import copy
import hashlib
import json
import math
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from pstyle.torch_utils.fileio import atomic_path
from pstyle.torch_utils.folder_run import IMAGE_EXTENSIONS
from safetensors import safe_open
from safetensors.torch import save_file

DELTA_FORMAT = 'pstyle-delta'
DELTA_VERSION = 2
LEGACY_FORMATS = {'pstyle-pti-delta': 1}  # Full tensors only; read, never written.
DELTA_KINDS = ('pti', 'style')
LOWRANK_SUFFIXES = ('.lowrank_u', '.lowrank_v')  # File keys of a factorised tensor: <name>.lowrank_u, <name>.lowrank_v.


DELTA_DTYPES = {'fp32': torch.float32, 'fp16': torch.float16, 'bf16': torch.bfloat16}


class LowRank(NamedTuple):
    """tuned - base = (u @ v).reshape(shape): u [m, r], v [r, n], m * n = numel(shape)."""
    u: torch.Tensor
    v: torch.Tensor
    shape: tuple

    def full(self):
        return (self.u.float() @ self.v.float()).reshape(self.shape)


def dense(d):
    """A delta entry (tensor or LowRank) as a float32 tensor."""
    return d.full() if isinstance(d, LowRank) else d.float()


@torch.no_grad()
def compute_delta(G_base, G_tuned, dtype='fp32'):
    """{name: tuned - base} for every parameter that changed, stored in `dtype` (fp32, fp16, bf16)."""
    if dtype not in DELTA_DTYPES:
        raise ValueError(f'delta dtype must be one of {", ".join(DELTA_DTYPES)}, got {dtype!r}')
    base = dict(G_base.named_parameters())
    delta = {}
    for name, tensor in G_tuned.named_parameters():
        if name not in base or base[name].shape != tensor.shape:
            raise ValueError(f'the tuned network does not match the base network at {name}')
        if not torch.equal(tensor, base[name]):
            delta[name] = (tensor.float() - base[name].float()).to(DELTA_DTYPES[dtype]).cpu().contiguous()
    return delta


@torch.no_grad()
def apply_delta(G, delta, base_sha256=None, scale=1.0):
    """Add a delta to G's parameters in place (checks the base network when `base_sha256` is given).

    scale: a float, or {name: float} (missing names: 0), multiplying each tensor's delta: the lerp
    base + s * (tuned - base) between the base (0) and the tuned network (1)."""
    if base_sha256 is not None:
        actual = weights_sha256(G)
        if actual != base_sha256:
            raise ValueError(f'this delta was made for the network with weights sha256 {base_sha256[:16]}..., '
                             f'but the given network has {actual[:16]}...: load the same base network')
    params = dict(G.named_parameters())
    bad = [n for n in delta if n not in params or tuple(params[n].shape) != tuple(delta[n].shape)]
    if bad:
        raise ValueError(f'the delta does not fit this network: {", ".join(bad[:5])}')
    for name, d in delta.items():
        s = scale.get(name, 0.0) if isinstance(scale, dict) else scale
        if s == 0:
            continue
        p = params[name]
        d = dense(d).to(p.device)
        p.copy_((p.float() + (d if s == 1 else s * d)).to(p.dtype))
    return G


@torch.no_grad()
def factorize(delta, rank):
    """Truncated SVD of each matrix-shaped entry to rank `rank` (the best rank-r approximation in Frobenius
    norm, Eckart-Young); entries where factors would not be smaller, and 1-D ones, stay full."""
    out = {}
    for name, d in delta.items():
        d = dense(d)
        if (mn := factor_shape(d.shape, rank)) is None:
            out[name] = d
            continue
        U, S, Vh = torch.linalg.svd(d.reshape(mn), full_matrices=False)
        out[name] = LowRank(U[:, :rank] * S[:rank], Vh[:rank], tuple(d.shape))
    return out


def cast_delta(delta, dtype='fp32'):
    """Every tensor (and factor) of a delta in `dtype` (fp32, fp16, bf16), on the CPU and contiguous."""
    if dtype not in DELTA_DTYPES:
        raise ValueError(f'delta dtype must be one of {", ".join(DELTA_DTYPES)}, got {dtype!r}')
    cast = lambda t: t.detach().to('cpu', DELTA_DTYPES[dtype]).contiguous()
    return {n: LowRank(cast(d.u), cast(d.v), tuple(d.shape)) if isinstance(d, LowRank) else cast(d)
            for n, d in delta.items()}


# ----------------------------------------------------------------------------
# Tuning in the low-rank form (few-shot styles, PTI).

def factor_shape(shape, rank):
    """(m, n) of the matrix a tensor of `shape` is tuned as at `rank` ([out, in * k * k]), or None when it stays
    full: 1-D tensors, rank 0, and matrices whose factors would not be smaller (r (m + n) >= m n)."""
    if not rank or len(shape) < 2:
        return None
    m = int(shape[0])
    n = int(np.prod(shape[1:]))
    return (m, n) if rank * (m + n) < m * n else None


def delta_size(shapes, rank, bytes_per_value=2):
    """Bytes of a delta over tensors of these shapes, tuned at `rank` (0 = full), stored `bytes_per_value` each."""
    values = 0
    for shape in shapes:
        mn = factor_shape(shape, rank)
        values += rank * sum(mn) if mn is not None else int(np.prod(shape))
    return values * bytes_per_value


class DeltaParams:
    """The trainable delta of each tuned tensor: full (zeros at the start) or factors u [m, r] (zeros) and
    v [r, n] (N(0, 1/r), drawn from `seed`), so that tuning starts at the base network exactly."""

    def __init__(self, G, names, rank, seed):
        params = dict(G.named_parameters())
        self.base = {n: params[n].detach() for n in names}
        self.shapes = {n: tuple(params[n].shape) for n in names}
        self.tensors, self.factored = {}, set()
        generator = torch.Generator().manual_seed(int(seed))
        for n in names:
            w = self.base[n]
            if (mk := factor_shape(w.shape, rank)) is not None:
                m, k = mk
                v = torch.randn([rank, k], generator=generator) / np.sqrt(rank)
                self.tensors[n + LOWRANK_SUFFIXES[0]] = torch.zeros([m, rank], device=w.device)
                self.tensors[n + LOWRANK_SUFFIXES[1]] = v.to(w.device)
                self.factored.add(n)
            else:
                self.tensors[n] = torch.zeros_like(w)
        for t in self.tensors.values():
            t.requires_grad_(True)

    def parameters(self):
        return list(self.tensors.values())

    def param_groups(self, lr, factor_lr_scale):
        """Adam groups: full tensors at `lr`, low-rank factors at `lr * factor_lr_scale` (U starts at zero, so
        the delta of a factored tensor grows more slowly than a full one at the same rate)."""
        factors = [t for k, t in self.tensors.items() if k.endswith(LOWRANK_SUFFIXES)]
        full = [t for k, t in self.tensors.items() if not k.endswith(LOWRANK_SUFFIXES)]
        return [g for g in (dict(params=full, lr=lr), dict(params=factors, lr=lr * factor_lr_scale)) if g['params']]

    def delta_of(self, n):
        if n in self.factored:
            u, v = (self.tensors[n + s] for s in LOWRANK_SUFFIXES)
            return (u @ v).reshape(self.shapes[n])  # [m, r] @ [r, n] -> the tensor's shape
        return self.tensors[n]

    def synthesis_params(self):
        """{name inside G.synthesis: W0 + delta} for `torch.func.functional_call`."""
        return {n[len('synthesis.'):]: self.base[n] + self.delta_of(n) for n in self.base}

    @torch.no_grad()
    def delta(self):
        """{name: tensor or LowRank} of the tensors that changed, detached fp32 copies."""
        out = {}
        for n in self.base:
            if n in self.factored:
                u, v = (self.tensors[n + s].detach().clone() for s in LOWRANK_SUFFIXES)
                if u.any():
                    out[n] = LowRank(u, v, self.shapes[n])
            elif self.tensors[n].any():
                out[n] = self.tensors[n].detach().clone()
        return out


def synthesize(G, params, ws, **kwargs):
    """G.synthesis(ws, **kwargs) with some tensors replaced by `params` ({name inside G.synthesis: tensor}, as
    `DeltaParams.synthesis_params` gives), unfused; the base module is never modified."""
    return torch.func.functional_call(G.synthesis, params, (ws,), dict(kwargs, fused_modconv=False))


def save_delta(path, delta, base_sha256, meta=None, kind='pti'):
    """Write a delta as `.safetensors` (default) or `.pt` (a plain dict, loadable with weights_only)."""
    if kind not in DELTA_KINDS:
        raise ValueError(f'delta kind must be one of {", ".join(DELTA_KINDS)}, got {kind!r}')
    path = Path(path)
    tensors, lowrank = {}, {}
    for name, d in delta.items():
        if isinstance(d, LowRank):
            tensors[name + LOWRANK_SUFFIXES[0]], tensors[name + LOWRANK_SUFFIXES[1]] = d.u.contiguous(), d.v.contiguous()
            lowrank[name] = list(d.shape)
        else:
            tensors[name] = d.contiguous()
    info = dict(format=DELTA_FORMAT, version=DELTA_VERSION, kind=kind, base_weights_sha256=base_sha256,
                lowrank=lowrank, meta=meta or {})
    with atomic_path(path) as tmp:
        if path.suffix == '.pt':
            torch.save(dict(info=json.dumps(info), delta=tensors), tmp)
        else:
            save_file(tensors, str(tmp), metadata=dict(pstyle=json.dumps(info)))
    return path


def load_delta(path):
    """(delta {name: tensor or LowRank}, info dict with base_weights_sha256, kind and meta) from `save_delta`'s
    file, or from a version 1 PTI delta."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f'{path}: no such PTI delta file or style delta file')
    try:
        if path.suffix == '.pt':
            payload = torch.load(path, map_location='cpu', weights_only=True)
            info, tensors = json.loads(payload['info']), payload['delta']
        else:
            with safe_open(str(path), framework='pt') as f:
                info = json.loads((f.metadata() or {})['pstyle'])
                tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # noqa: BLE001 -- any decoding problem is the same error for the user
        raise ValueError(f'{path}: not a PTI delta file or style delta file ({type(e).__name__}: {e})') from e
    fmt = info.get('format')
    if not (fmt == DELTA_FORMAT or LEGACY_FORMATS.get(fmt) == info.get('version')):
        raise ValueError(f'{path}: not a PTI delta file or style delta file (format {fmt!r})')
    info.setdefault('kind', 'pti')
    delta = {}
    for name, shape in info.get('lowrank', {}).items():
        keys = [name + s for s in LOWRANK_SUFFIXES]
        if any(k not in tensors for k in keys):
            raise ValueError(f'{path}: the factors of {name} are missing from the file')
        delta[name] = LowRank(tensors.pop(keys[0]), tensors.pop(keys[1]), tuple(shape))
        if delta[name].u.shape[0] * delta[name].v.shape[1] != math.prod(shape):
            raise ValueError(f'{path}: the factors of {name} do not make a tensor of shape {shape}')
    delta.update(tensors)
    return delta, info


def load_tuned_generator(G, path, scale=1.0):
    """A copy of G with the delta at `path` applied (the base network is checked); `scale` as in `apply_delta`:
    0 is the base, 1 the tuned network, a dict {name: weight} weights each tensor."""
    delta, info = load_delta(path)
    try:
        return apply_delta(copy.deepcopy(G), delta, base_sha256=info['base_weights_sha256'], scale=scale)
    except ValueError as e:
        raise ValueError(f'{path}: {e}') from None


def delta_paths(latents_path, names):
    """{name: PTI delta file} for the latents of a `pstyle project` or `pstyle stylize` run.

    `pstyle project` lists each image's delta in the metrics.json beside latents.npz; `pstyle stylize`
    names them pti/<name>.safetensors there. A name without a delta is an error naming it.
    """
    folder = Path(latents_path).parent
    listed = {}
    if (folder / 'metrics.json').is_file():
        doc = json.loads((folder / 'metrics.json').read_text())
        # The folder-run manifest lists items; metrics.json of older runs mapped file names to entries.
        entries = doc.get('items') or [dict(e, name=n) for n, e in doc.get('images', {}).items()]
        listed = {e['name']: folder / e['pti']['delta'] for e in entries if isinstance(e.get('pti'), dict)}
    bare = lambda n: Path(n).stem if Path(n).suffix.lower() in IMAGE_EXTENSIONS else n  # older runs stored file names
    paths = {n: listed.get(n, folder / 'pti' / f'{bare(n)}.safetensors') for n in names}
    missing = [n for n, p in paths.items() if not p.is_file()]
    if missing:
        raise FileNotFoundError(f'no PTI delta for {", ".join(missing[:5])} beside {latents_path} '
                                f'(project with --pti or --preset best, or render without --pti)')
    return paths


def delta_nbytes(delta):
    """Bytes of the tensors (the factors, for low-rank entries)."""
    tensors = [t for d in delta.values() for t in ((d.u, d.v) if isinstance(d, LowRank) else (d,))]
    return int(sum(t.numel() * t.element_size() for t in tensors))


def tensors_sha256(tensors):
    """sha256 of {name: tensor} (names, dtypes, shapes and bytes, in name order), independent of the file format."""
    digest = hashlib.sha256()
    for name, tensor in sorted(tensors.items()):
        t = tensor.detach().cpu().contiguous()
        digest.update(f'{name}|{t.dtype}|{tuple(t.shape)}|'.encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def weights_sha256(module):
    """`tensors_sha256` over every parameter and buffer of `module`: identifies a network's weights."""
    return tensors_sha256(module.state_dict())
