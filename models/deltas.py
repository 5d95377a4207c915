"""Weight deltas (pivotal tuning per photo): the only reader and writer of delta files, and the weights hash
that ties a delta or a latents file to its base network."""

import copy
import hashlib
import json
from pathlib import Path

import torch
from pstyle.torch_utils.fileio import atomic_path
from pstyle.torch_utils.folder_run import IMAGE_EXTENSIONS
from safetensors import safe_open
from safetensors.torch import save_file

DELTA_FORMAT = 'pstyle-pti-delta'


DELTA_VERSION = 1


DELTA_DTYPES = {'fp32': torch.float32, 'fp16': torch.float16, 'bf16': torch.bfloat16}


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
def apply_delta(G, delta, base_sha256=None):
    """Add a delta to G's parameters in place (checks the base network when `base_sha256` is given)."""
    if base_sha256 is not None:
        actual = weights_sha256(G)
        if actual != base_sha256:
            raise ValueError(f'this delta was made for the network with weights sha256 {base_sha256[:16]}..., '
                             f'but the given network has {actual[:16]}...: load the same base network')
    params = dict(G.named_parameters())
    bad = [n for n in delta if n not in params or params[n].shape != delta[n].shape]
    if bad:
        raise ValueError(f'the delta does not fit this network: {", ".join(bad[:5])}')
    for name, d in delta.items():
        p = params[name]
        p.copy_((p.float() + d.to(p.device, torch.float32)).to(p.dtype))
    return G


def save_delta(path, delta, base_sha256, meta=None):
    """Write a delta as `.safetensors` (default) or `.pt` (a plain dict, loadable with weights_only)."""
    path = Path(path)
    info = dict(format=DELTA_FORMAT, version=DELTA_VERSION, base_weights_sha256=base_sha256, meta=meta or {})
    with atomic_path(path) as tmp:
        if path.suffix == '.pt':
            torch.save(dict(info=json.dumps(info), delta=delta), tmp)
        else:
            save_file(delta, str(tmp), metadata=dict(pstyle=json.dumps(info)))
    return path


def load_delta(path):
    """(delta {name: tensor}, info dict with base_weights_sha256 and meta) from `save_delta`'s file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f'{path}: no such PTI delta file')
    try:
        if path.suffix == '.pt':
            payload = torch.load(path, map_location='cpu', weights_only=True)
            info, delta = json.loads(payload['info']), payload['delta']
        else:
            with safe_open(str(path), framework='pt') as f:
                info = json.loads((f.metadata() or {})['pstyle'])
                delta = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # noqa: BLE001 -- any decoding problem is the same error for the user
        raise ValueError(f'{path}: not a PTI delta file ({type(e).__name__}: {e})') from e
    if info.get('format') != DELTA_FORMAT:
        raise ValueError(f'{path}: not a PTI delta file (format {info.get("format")!r})')
    return delta, info


def load_tuned_generator(G, path):
    """A copy of G with the PTI delta at `path` applied (the base network is checked)."""
    delta, info = load_delta(path)
    return apply_delta(copy.deepcopy(G), delta, base_sha256=info['base_weights_sha256'])


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
    return int(sum(t.numel() * t.element_size() for t in delta.values()))


def weights_sha256(module):
    """sha256 over every parameter and buffer (name, dtype, shape, bytes), independent of the file format."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        digest.update(f'{name}|{t.dtype}|{tuple(t.shape)}|'.encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
