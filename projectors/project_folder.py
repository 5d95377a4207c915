"""Folder in, folder out: load photos, project them in batches, write latents, renders and metrics.

Output folder:
    latents.npz     ws / w [N, num_ws, w_dim], names (input file names), space, noise/<layer> [N, r, r],
                    network_sha256, weights_sha256, settings (JSON), alignment (JSON per image)
    metrics.json    per image: lpips, mse, identity, steps, seconds, output paths (+ pti); failures; summary
    recon/<stem>.png, target/<stem>.png, pti/<stem>.safetensors + recon_pti/<stem>.png, video/<stem>.mp4|gif

Results are rewritten (atomically) after every batch, so a crash later in the run loses nothing; a
rerun with `resume=True` skips the images already done. With `torchrun`, rank r takes files
r, r + world_size, ... and writes `shards/rank<r>/`; rank 0 merges the shards at the end.
"""

import contextlib
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from pstyle.models import deltas, latents
from pstyle.models.render import to_uint8
from pstyle.projectors import projector as P
from pstyle.projectors import invert, pti
from pstyle.projectors.align import align_face, load_image, load_transform
from pstyle.projectors.image_io import list_images
from pstyle.torch_utils import misc
from pstyle.torch_utils.fileio import atomic_write_json

METRICS_FORMAT = 'pstyle-projection-metrics'
CROPS = ('none', 'center')


class TargetError(ValueError):
    """An input image that cannot be projected as it is (not square, too small)."""


class ProjectionRunError(RuntimeError):
    """A batch failed; the message says how many results were saved and how to resume."""


# ----------------------------------------------------------------------------
# Inputs.

def list_inputs(inputs):
    """A folder (its images, sorted), one file, or a list of files/folders -> list of Paths."""
    items = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    files = []
    for item in map(Path, items):
        if item.is_dir():
            found = list_images(item)
            if not found:
                raise ValueError(f'{item}: no image files in this folder')
            files += found
        elif item.exists():
            files.append(item)
        else:
            raise FileNotFoundError(f'{item}: no such file or folder')
    if not files:
        raise ValueError('no input images')
    return files


def unique_keys(files):
    """File -> (key, stem): the key is the file name (a counter is added when names repeat), the
    stem names the output files (the extension is kept in it when two keys share a stem)."""
    out, keys, stems = {}, set(), set()
    for path in files:
        key, n = path.name, 1
        while key in keys:
            key, n = f'{path.stem}_{n}{path.suffix}', n + 1
        stem = Path(key).stem if Path(key).stem not in stems else key.replace('.', '_')
        keys.add(key)
        stems.add(stem)
        out[path] = (key, stem)
    return out


def shard(items, rank, world_size):
    """Items for one rank: rank, rank + world_size, ... (every item goes to exactly one rank)."""
    if not 0 <= rank < world_size:
        raise ValueError(f'rank {rank} out of range for world size {world_size}')
    return list(items)[rank::world_size]


def load_target(path, resolution, channels=3, crop='none', min_size=None):
    """Image file -> uint8 [H, W, C] at `resolution`. Raises ImageLoadError/TargetError naming the file."""
    if crop not in CROPS:
        raise ValueError(f'crop must be one of {CROPS}, got {crop!r}')
    img = load_image(path)
    w, h = img.size
    min_size = max(8, resolution // 4) if min_size is None else min_size
    if min(w, h) < min_size:
        raise TargetError(f'{path}: image is {w}x{h}, too small to project into a {resolution}x{resolution} '
                          f'network (at least {min_size}x{min_size}; set min_size to override)')
    if w != h:
        if crop != 'center':
            raise TargetError(f'{path}: image is {w}x{h}, not square: align the face first (pstyle align) '
                              f'or pass --crop center')
        s = min(w, h)
        img = img.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))
    img = img.resize((resolution, resolution), Image.Resampling.LANCZOS)  # As NVIDIA's projector.
    if channels == 1:
        img = img.convert('L')
    arr = np.array(img, dtype=np.uint8)  # a writable copy
    return arr[:, :, None] if arr.ndim == 2 else arr


def aligned_target(path, resolution, channels=3, **align_kwargs):
    """FFHQ-align the largest face (projectors.align) -> (uint8 [H, W, C], transform record)."""
    face = align_face(path, size=resolution, **align_kwargs)[0]
    face.transform['source'] = os.fspath(Path(path).resolve())
    arr = np.array(face.image.convert('L' if channels == 1 else 'RGB'), dtype=np.uint8)
    return (arr[:, :, None] if arr.ndim == 2 else arr), face.transform


def sidecar_transform(path):
    """The alignment record `pstyle align` wrote beside an aligned image (<stem>.json), or None."""
    side = Path(path).with_suffix('.json')
    if not side.is_file():
        return None
    try:
        return load_transform(side)
    except ValueError:
        return None  # An unrelated JSON file: nothing to record.


# ----------------------------------------------------------------------------
# latents.npz

def _write_json(path, obj):
    atomic_write_json(path, obj)


# ----------------------------------------------------------------------------
# Run state: everything computed so far, written after each batch.

class RunState:
    def __init__(self, folder, meta):
        self.folder = Path(folder)
        self.meta = meta
        self.names, self.ws, self.noise, self.alignment = [], [], {}, []
        self.images, self.failed, self.notes = {}, {}, []

    def add(self, name, ws, noise, alignment, metrics):
        self.names.append(name)
        self.ws.append(ws)
        for k, v in (noise or {}).items():
            self.noise.setdefault(k, []).append(v)
        self.alignment.append(alignment)
        self.images[name] = metrics

    def save(self):
        if self.names:
            noise = {k: torch.stack(v) for k, v in self.noise.items()} if self.noise else None
            latents.save_latents(self.folder / 'latents.npz', self.names, torch.stack(self.ws), noise,
                         self.meta['settings']['project']['space'], self.alignment, self.meta)
        _write_json(self.folder / 'metrics.json', self.metrics_doc())

    def metrics_doc(self):
        values = lambda key: [m[key] for m in self.images.values() if m.get(key) is not None]
        summary = dict(num_images=len(self.images), num_failed=len(self.failed))
        for key in ('lpips', 'mse', 'identity', 'seconds'):
            if values(key):
                summary[f'{key}_mean'] = float(np.mean(values(key)))
        return dict(format=METRICS_FORMAT, network_sha256=self.meta.get('network_sha256'),
                    weights_sha256=self.meta['weights_sha256'], settings=self.meta['settings'], notes=self.notes,
                    summary=summary, images=self.images, failed=self.failed)

    def load(self):
        """Resume: read this folder's earlier results; they must come from the same network and settings."""
        lat, met = self.folder / 'latents.npz', self.folder / 'metrics.json'
        if not lat.is_file():
            return
        old = latents.load_latents(lat)
        doc = json.loads(met.read_text()) if met.is_file() else dict(images={}, failed={})
        same_settings = _comparable(old['settings']) == _comparable(self.meta['settings'])
        if old['weights_sha256'] != self.meta['weights_sha256'] or not same_settings:
            raise ValueError(f'{self.folder} holds results of another network or other settings: '
                             'use a new --outdir, or drop --resume to overwrite')
        for k, name in enumerate(old['names']):
            noise = {layer: v[k] for layer, v in old['noise'].items()} if old['noise'] else None
            self.add(name, old['ws'][k], noise, old['alignment'][k], doc['images'].get(name, {}))


def _comparable(settings):
    """Settings that change results (the batch size does not)."""
    return json.dumps({k: v for k, v in settings.items() if k != 'batch_size'}, sort_keys=True)


# ----------------------------------------------------------------------------
# The run.

def project_folder(G, inputs, outdir, cfg=None, pti_cfg=None, batch_size=4, lpips_model=None, identity_model=None,
                   network_sha256=None, align=False, crop='none', min_size=None, video=False, video_every=10,
                   resume=False, rank=0, world_size=1, barrier=None, log=print, progress=None, inversion=None):
    """Project every image of `inputs` (folder, file or list) into `outdir`; returns metrics.json's dict.

    Unreadable, tiny or non-square files are recorded under 'failed' and skipped. A failing batch
    raises ProjectionRunError after everything before it has been saved. progress: a
    `torch_utils.progress.reporter` factory (one report per batch's projection and per image's PTI), or None.
    inversion: a `projectors.invert.Inversion` (encoder / encoder+optimize); None = optimize.
    """
    inversion = inversion or invert.Inversion()
    cfg = (cfg or P.ProjectConfig()).check()
    outdir = Path(outdir)
    files = list_inputs(inputs)
    keys = unique_keys(files)
    settings = dict(project=cfg.as_dict(), pti=pti_cfg.as_dict() if pti_cfg else None, align=bool(align), crop=crop,
                    batch_size=batch_size, lpips=getattr(lpips_model, 'pstyle_info', None) if lpips_model else None)
    if inversion.method != 'optimize':  # Optimize-only runs keep their settings (and resume across versions).
        settings['inversion'] = inversion.describe()
    meta = dict(network_sha256=network_sha256, weights_sha256=deltas.weights_sha256(G), settings=settings)
    part = outdir if world_size == 1 else outdir / 'shards' / f'rank{rank:02d}'
    state = RunState(part, meta)
    if resume:
        state.load()
    todo = [f for f in shard(files, rank, world_size) if keys[f][0] not in state.images]
    if cfg.lpips_weight > 0 and lpips_model is None:
        lpips_model = P.default_lpips(misc.device_of(G)) if inversion.optimizes else invert.optional_lpips(misc.device_of(G))[0]
    w_stats = P.compute_w_stats(G, cfg.w_avg_samples)
    run = dict(G=G, cfg=cfg, pti_cfg=pti_cfg, outdir=outdir, lpips_model=lpips_model, identity_model=identity_model,
               w_stats=w_stats, inversion=inversion, video=video, video_every=video_every, meta=meta, progress=progress or _no_progress)
    batches = _batches(todo, keys, G, batch_size, state, align, crop, min_size, log)
    for number, batch in enumerate(batches):
        try:
            _project_batch(run, batch, state)
        except Exception as e:
            state.save()
            raise ProjectionRunError(
                f'batch {number + 1} ({", ".join(b["key"] for b in batch)}) failed: {type(e).__name__}: {e}. '
                f'The {len(state.images)} images done so far are saved in {part}; rerun with --resume to continue.') from e
        state.save()
        log(f'{len(state.images)} projected, {len(state.failed)} failed')
    state.save()
    if world_size > 1:
        if barrier is not None:
            barrier()
        if rank == 0:
            return merge_shards(outdir, world_size, [keys[f][0] for f in files])
    return state.metrics_doc()


def _no_progress(total, desc, unit='step'):
    return contextlib.nullcontext()


def _batches(files, keys, G, batch_size, state, align, crop, min_size, log):
    """Yield lists of loaded targets; files that fail to load are recorded and skipped."""
    batch = []
    for path in files:
        key, stem = keys[path]
        try:
            if align:
                image, transform = aligned_target(path, G.img_resolution, G.img_channels)
            else:
                image, transform = load_target(path, G.img_resolution, G.img_channels, crop, min_size), sidecar_transform(path)
        except (ValueError, OSError, RuntimeError) as e:  # ImageLoadError, TargetError, NoFaceError, ...
            if type(e).__name__ == 'AlignDependencyError':
                raise  # dlib or its model is missing: every file would fail the same way.
            state.failed[key] = str(e)
            state.save()
            log(f'skipped {path}: {e}')
            continue
        batch.append(dict(path=path, key=key, stem=stem, image=image, transform=transform))
        if len(batch) == batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


def _project_batch(run, batch, state):
    G, cfg, outdir = run['G'], run['cfg'], run['outdir']
    targets = torch.from_numpy(np.stack([b['image'] for b in batch])).permute(0, 3, 1, 2)  # [N, C, H, W]
    frames = {k: [] for k in range(len(batch))} if run['video'] and run['inversion'].optimizes else None
    callback = _video_callback(frames, targets, run['video_every']) if frames is not None else None
    start = time.time()
    with run['progress'](run['inversion'].steps(cfg), f'project {", ".join(b["key"] for b in batch)}') as bar:
        result = invert.invert(G, targets, run['inversion'], cfg, run['lpips_model'], run['identity_model'], run['w_stats'],
                               callback=callback, progress=bar)
    seconds = (time.time() - start) / len(batch)
    for note in result.notes:
        if note not in state.notes:
            state.notes.append(note)
    for k, b in enumerate(batch):
        noise = {name: v[k] for name, v in result.noise.items()} if result.noise else None
        metrics = dict(result.metrics[k], seconds=seconds, source=str(b['path']))
        metrics['recon'] = _save_png(outdir / 'recon' / f'{b["stem"]}.png', result.images[k], outdir)
        metrics['target'] = _save_png(outdir / 'target' / f'{b["stem"]}.png', b['image'], outdir)
        if frames is not None:
            metrics['video'] = write_video(outdir / 'video' / b['stem'], frames[k], outdir)
        if run['pti_cfg'] is not None:
            metrics['pti'] = _run_pti(run, b, result.ws[k:k + 1], noise)
        state.add(b['key'], result.ws[k], noise, b['transform'], metrics)


def _run_pti(run, b, ws, noise):
    G, outdir = run['G'], run['outdir']
    target = torch.from_numpy(b['image']).permute(2, 0, 1)[None]
    noise1 = {name: v[None] for name, v in noise.items()} if noise else None
    path = outdir / 'pti' / f'{b["stem"]}.safetensors'
    with run['progress'](run['pti_cfg'].num_steps, f'pti {b["key"]}') as bar:
        G_tuned, info = pti.tune_and_save(G, target, ws, noise1, run['pti_cfg'], run['lpips_model'], path,
                                          run['meta']['weights_sha256'], dict(name=b['key'], network_sha256=run['meta']['network_sha256']),
                                          progress=bar)
    metrics, image = pti.pti_metrics(G_tuned, target, ws, noise1, run['lpips_model'], run['cfg'].lpips_resolution)
    recon = _save_png(outdir / 'recon_pti' / f'{b["stem"]}.png', image, outdir)
    return dict(metrics, **info, delta=str(path.relative_to(outdir)), recon=recon)


def _save_png(path, array, root):
    path.parent.mkdir(parents=True, exist_ok=True)
    array = np.asarray(array)
    Image.fromarray(array[:, :, 0] if array.shape[-1] == 1 else array).save(path)
    return str(path.relative_to(root))


# ----------------------------------------------------------------------------
# Progress video and shard merging.

def _video_callback(frames, targets, every, max_side=256):
    """Collect [target | current render] frames every `every` steps, at most max_side pixels high."""
    side = min(targets.shape[2], max_side)
    small_targets = to_uint8(_shrink(targets.float() / 127.5 - 1, side))  # [N, side, side, C]

    def callback(step, index, synth):
        if step % every:
            return
        images = to_uint8(_shrink(synth.float(), side))
        for j, k in enumerate(index.tolist()):
            frames[k].append(np.concatenate([small_targets[k], images[j]], axis=1))
    return callback


def _shrink(img, side):
    """float [N, C, H, W] -> area-downsampled to side x side (unchanged when already that size)."""
    if img.shape[2] == side:
        return img
    return torch.nn.functional.interpolate(img, size=(side, side), mode='area')


def write_video(stem_path, frames, root, fps=30):
    """MP4 through imageio-ffmpeg when installed (as NVIDIA's projector), else an animated GIF."""
    stem_path.parent.mkdir(parents=True, exist_ok=True)
    frames = [f[:, :, 0] if f.shape[-1] == 1 else f for f in frames]
    try:
        import imageio.v2 as imageio  # noqa: PLC0415
        import imageio_ffmpeg  # noqa: F401, PLC0415 -- imageio's mp4 writer needs it
        path = stem_path.with_suffix('.mp4')
        with imageio.get_writer(path, mode='I', fps=fps, codec='libx264', bitrate='16M') as writer:
            for f in frames:
                writer.append_data(f)
    except ImportError:
        path = stem_path.with_suffix('.gif')
        pil = [Image.fromarray(f) for f in frames]
        pil[0].save(path, save_all=True, append_images=pil[1:], duration=int(1000 / fps), loop=0)
    return str(path.relative_to(root))


def merge_shards(outdir, world_size, order):
    """Merge shards/rank*/ into outdir/latents.npz + metrics.json, images in input order."""
    outdir = Path(outdir)
    parts = [outdir / 'shards' / f'rank{r:02d}' for r in range(world_size)]
    docs = [json.loads((p / 'metrics.json').read_text()) for p in parts if (p / 'metrics.json').is_file()]
    if not docs:
        raise ValueError(f'{outdir}/shards: no shard results to merge')
    meta = dict(network_sha256=docs[0]['network_sha256'], weights_sha256=docs[0]['weights_sha256'], settings=docs[0]['settings'])
    state = RunState(outdir, meta)
    rows = {}
    for p in parts:
        if (p / 'latents.npz').is_file():
            lat = latents.load_latents(p / 'latents.npz')
            for k, name in enumerate(lat['names']):
                rows[name] = (lat, k)
    images = {n: m for d in docs for n, m in d['images'].items()}
    for name in order:
        if name in rows:
            lat, k = rows[name]
            noise = {layer: v[k] for layer, v in lat['noise'].items()} if lat['noise'] else None
            state.add(name, lat['ws'][k], noise, lat['alignment'][k], images.get(name, {}))
    for d in docs:
        state.failed.update(d['failed'])
        state.notes += [n for n in d['notes'] if n not in state.notes]
    state.save()
    return state.metrics_doc()
