"""The latents file: the only reader and writer of W/W+ latents, their per-image noise maps, alignment
transforms and the network they belong to.

`latents.npz` (written by `pstyle project`, `stylize`, `mix`):
    ws / w [N, num_ws, w_dim] (`w` for NVIDIA's generate.py), names (input file names), space,
    noise/<layer> [N, r, r], network_sha256, weights_sha256, settings (JSON), alignment (JSON per image),
    format 'pstyle-latents', version.
Foreign latents also read here: NVIDIA's projector `.npz` (key `w`), `.npy`, and e4e/pSp's `latents.pt`
(`{image name: [num_ws, w_dim]}`) or a plain tensor.
"""

import json
from pathlib import Path

import numpy as np
import torch
from pstyle.torch_utils.fileio import atomic_path
from pstyle.torch_utils.folder_run import IMAGE_EXTENSIONS, unique_pairs

LATENTS_FORMAT = 'pstyle-latents'


LATENTS_VERSION = 1


def save_latents(path, names, ws, noise=None, space='w+', alignment=None, meta=None):
    """Write latents.npz (see the module docstring); `w` duplicates `ws` for NVIDIA's generate.py."""
    ws = np.asarray(ws, dtype=np.float32)
    assert ws.ndim == 3 and len(names) == len(ws), (ws.shape, len(names))
    meta = dict(meta or {})
    arrays = dict(ws=ws, w=ws, names=np.array(list(names), dtype=str), space=np.array(space),
                  format=np.array(LATENTS_FORMAT), version=np.array(LATENTS_VERSION),
                  network_sha256=np.array(meta.get('network_sha256') or ''),
                  weights_sha256=np.array(meta.get('weights_sha256') or ''),
                  settings=np.array(json.dumps(meta.get('settings', {}), sort_keys=True)),
                  alignment=np.array([json.dumps(a) if a else '' for a in (alignment or [None] * len(ws))], dtype=str))
    for name, maps in (noise or {}).items():
        arrays[NOISE_PREFIX + name] = np.asarray(maps, dtype=np.float32).reshape(len(ws), *np.shape(maps)[-2:])

    with atomic_path(path) as tmp, open(tmp, 'wb') as f:
        np.savez(f, **arrays)


class LatentRows:
    """The latents of a folder run's finished items, one row per name, written (atomically) in the run's
    order after each item, before the run's manifest records it; `resume` takes back an earlier run's rows."""

    def __init__(self, path, space='w+', meta=None):
        self.path, self.space, self.meta = Path(path), space, meta
        self.rows = {}                      # name -> (ws [1, num_ws, w_dim], noise {layer: [1, 1, r, r]} or None, alignment)

    def add(self, name, ws, noise=None, alignment=None):
        self.rows[name] = (torch.as_tensor(ws).reshape(1, *ws.shape[-2:]).float().cpu(),
                           {k: torch.as_tensor(v).reshape(1, 1, *v.shape[-2:]).float().cpu() for k, v in noise.items()}
                           if noise else None, alignment)

    def resume(self, run):
        """Keep the rows of the items `run` (a folder_run.FolderRun) resumed; one missing here is done again."""
        old = load_latents(self.path) if self.path.is_file() else dict(names=[])
        index = {n: k for k, n in enumerate(old['names'])}
        for name in list(run.resumed):
            if name not in index:
                run.reset(name)
                continue
            k = index[name]
            self.add(name, old['ws'][k], {layer: v[k] for layer, v in old['noise'].items()} if old['noise'] else None,
                     old['alignment'][k])

    def save(self, order):
        names = [n for n in order if n in self.rows]
        if not names:
            return
        rows = [self.rows[n] for n in names]
        noise = None
        if all(r[1] is not None for r in rows):
            noise = {layer: torch.cat([r[1][layer] for r in rows]).numpy() for layer in rows[0][1]}
        save_latents(self.path, names, torch.cat([r[0] for r in rows]).numpy(), noise, self.space, [r[2] for r in rows],
                     self.meta)


def load_latents(path):
    """latents.npz -> dict(names, ws [N, num_ws, w_dim], noise {layer: [N, 1, r, r]} or None, space,
    network_sha256, weights_sha256, settings dict, alignment list of dict/None)."""
    with np.load(path, allow_pickle=False) as data:
        if 'format' not in data.files or str(data['format']) != LATENTS_FORMAT:
            raise ValueError(f'{path}: not a latents file written by pstyle project')
        noise = {k[len(NOISE_PREFIX):]: torch.from_numpy(data[k])[:, None]
                 for k in data.files if k.startswith(NOISE_PREFIX)}
        return dict(names=[str(n) for n in data['names']], ws=torch.from_numpy(data['ws']), noise=noise or None,
                    space=str(data['space']), network_sha256=str(data['network_sha256']) or None,
                    weights_sha256=str(data['weights_sha256']) or None, settings=json.loads(str(data['settings'])),
                    alignment=[json.loads(a) if a else None for a in data['alignment']])


def stems(names):
    """Stored names -> the names users see and output files take: image file names lose their extension
    (`alice.png` -> `alice`), made unique by the folder runs' one naming rule (`torch_utils.folder_run`)."""
    pairs = [(Path(n).stem, Path(n).suffix[1:].lower()) if Path(n).suffix.lower() in IMAGE_EXTENSIONS else (n, '')
             for n in names]
    return unique_pairs(pairs)


def load_projected(path, G):
    """Saved W / W+ latents of any supported kind, checked against G: dict(ws [N, num_ws, w_dim], names
    (stems), stored_names (as in the file), network_sha256, weights_sha256 (None when not recorded)).

    Kinds: an `.npz` (NVIDIA projector key `w`, or our `ws`), `.npy`, or `.pt`: e4e/pSp's inference
    scripts' `{image name: [num_ws, w_dim]}`, rosinality's projector.py `{image path: {'latent', 'noise',
    'img'}}` (its noise maps are not used: they follow its own layer order), or a plain tensor."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f'{path}: no such latent file')
    if path.suffix == '.pt':
        ws, names, hashes = *_torch_latents(path), {}
    else:
        ws, names, hashes = _numpy_latents(path)
    ws = np.asarray(ws, dtype=np.float32)
    if ws.ndim == 2 and ws.shape[1] == G.w_dim:
        ws = np.repeat(ws[:, None, :], G.num_ws, axis=1)  # W -> W+
    if ws.ndim != 3 or ws.shape[1:] != (G.num_ws, G.w_dim):
        raise ValueError(f'{path}: latents have shape {list(ws.shape)}, this network needs [N, {G.num_ws}, {G.w_dim}]')
    if names is None:
        names = [f'proj{i:02d}' for i in range(len(ws))]
    return dict(ws=torch.from_numpy(ws), names=stems(names), stored_names=list(names),
                network_sha256=hashes.get('network_sha256') or None, weights_sha256=hashes.get('weights_sha256') or None)


def load_projected_ws(path, G):
    """(ws [N, num_ws, w_dim], names) of `load_projected`."""
    record = load_projected(path, G)
    return record['ws'], record['names']


def find_latent(record, name):
    """Index of `name` in a `load_projected` record: its stem or the name as stored (`alice`, `alice.png`)."""
    for names in (record['names'], record['stored_names']):
        if name in names:
            return names.index(name)
    return None


def check_network(record, path, weights_sha256=None, network_sha256=None, force=False):
    """Refuse latents recorded for another network: the recorded weights hash (else network file hash)
    must equal this network's. `force` renders them anyway."""
    for key, ours in (('weights_sha256', weights_sha256), ('network_sha256', network_sha256)):
        theirs = record.get(key)
        if theirs and ours:
            if theirs != ours and not force:
                raise ValueError(f'{path} was projected into another network ({key} {theirs}); this network has '
                                 f'{key} {ours}. Render it with the network it was projected into, or pass --force.')
            return


def _torch_latents(path):
    """(array [N, ...], names or None) from torch.save'd latents, loaded with weights_only (no code runs)."""
    try:
        data = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as exc:
        raise ValueError(f'{path}: not a readable torch latent file ({type(exc).__name__}: {exc})') from exc
    if isinstance(data, dict) and data and all(isinstance(v, dict) and torch.is_tensor(v.get('latent')) for v in data.values()):
        data = {k: v['latent'] for k, v in data.items()}  # rosinality's projector.py: latent [w_dim] or [n_latent, w_dim]
    if isinstance(data, dict) and data and all(torch.is_tensor(v) for v in data.values()):
        names = [Path(str(k)).name for k in data]  # rosinality keys are input paths
        ws = np.stack([v.float().reshape(-1, v.shape[-1]).numpy() for v in data.values()])  # [N, rows, w_dim]
        return (ws[:, 0] if ws.shape[1] == 1 else ws), names
    if torch.is_tensor(data):
        return data.float().numpy(), None
    raise ValueError(f'{path}: expected a tensor, a dict of tensors {{name: [num_ws, w_dim]}} or rosinality\'s '
                     f'projector output {{name: {{"latent", "noise", "img"}}}}, got {type(data).__name__}')


def _numpy_latents(path):
    try:
        data = np.load(path, allow_pickle=False)
    except Exception as exc:
        raise ValueError(f'{path}: not a readable .npz/.npy latent file ({exc})') from exc
    if isinstance(data, np.lib.npyio.NpzFile):
        keys = [k for k in ('ws', 'w') if k in data.files]
        if not keys:
            raise ValueError(f'{path}: no "ws" or "w" array (found {sorted(data.files)})')
        names = [str(n) for n in data['names']] if 'names' in data.files else None
        hashes = {k: str(data[k]) for k in ('network_sha256', 'weights_sha256') if k in data.files}
        return data[keys[0]], names, hashes
    return data, None, {}


NOISE_PREFIX = 'noise/'


def load_projected_noise(path, G):
    """{layer: float32 [N, 1, r, r]} from a latents.npz written by `pstyle project`, or None."""
    with np.load(path, allow_pickle=False) as data:
        keys = [k for k in data.files if k.startswith(NOISE_PREFIX)]
        if not keys:
            return None
        layers = noise_layers(G)
        noise = {}
        for key in keys:
            name = key[len(NOISE_PREFIX):]
            if name not in layers:
                raise ValueError(f'{path}: noise map {name} has no matching layer in this network')
            r = layers[name].resolution
            arr = np.asarray(data[key], dtype=np.float32)
            if arr.ndim != 3 or arr.shape[1:] != (r, r):
                raise ValueError(f'{path}: noise map {name} has shape {list(arr.shape)}, expected [N, {r}, {r}]')
            noise[name] = torch.from_numpy(arr)[:, None]  # [N, 1, r, r]
    missing = sorted(set(layers) - set(noise))
    if missing:
        raise ValueError(f'{path}: noise maps missing for {", ".join(missing)}')
    return noise


def noise_layers(G):
    """{'synthesis.b8.conv0': SynthesisLayer, ...} for every layer with a noise input, in order."""
    return {f'synthesis.{name}': m for name, m in G.synthesis.named_modules()
            if getattr(m, 'use_noise', False) and hasattr(m, 'noise_const')}
