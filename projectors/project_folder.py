"""Folder in, folder out: load photos, project them in batches, write latents, renders and metrics.

Output folder:
    latents.npz     ws / w [N, num_ws, w_dim], names (the run's item names), space, noise/<layer> [N, r, r],
                    network_sha256, weights_sha256, settings (JSON), alignment (JSON per image)
    metrics.json    the run's manifest; per image: lpips, mse, identity, steps, seconds, output paths (+ pti);
                    failures (typed); summary
    recon/<name>.png, target/<name>.png, pti/<name>.safetensors + recon_pti/<name>.png, video/<name>.mp4|gif

A folder run (torch_utils.folder_run): names follow its one rule, and latents.npz then metrics.json (its
manifest) are rewritten (atomically) after every image, so a crash later in the run loses nothing; a rerun
with `resume=True` skips the images already done. With `torchrun`, rank r takes files r, r + world_size, ...
and writes its latents.npz and metrics.json to `shards/rank<r>/`; rank 0 merges the shards at the end.
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
from pstyle.torch_utils import misc
from pstyle.torch_utils.errors import InputError, PstyleError, typed_error
from pstyle.torch_utils.folder_run import FolderRun, plan

CROPS = ('none', 'center')


class TargetError(InputError):
    """An input image that cannot be projected as it is (not square, too small)."""


class ProjectionRunError(PstyleError, RuntimeError):
    """A batch failed; the message says how many results were saved and how to resume."""


# ----------------------------------------------------------------------------
# Inputs.

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
# The run: a folder run (torch_utils.folder_run) whose manifest is metrics.json.

def project_folder(G, inputs, outdir, *, cfg=None, pti_cfg=None, batch_size=4, lpips_model=None, identity_model=None,
                   network_sha256=None, align=False, crop='none', min_size=None, video=False, video_every=10,
                   resume=False, rank=0, world_size=1, barrier=None, log=print, progress=None, inversion=None):
    """Project every image of `inputs` (folder, file or list) into `outdir`; returns metrics.json's dict.

    Unreadable, tiny or non-square files, diverged projections and out-of-memory batches are recorded as
    failures and skipped (typed errors, torch_utils.errors). Any other error raises ProjectionRunError after
    everything before it has been saved. progress: a `torch_utils.progress.reporter` factory (one report per
    batch's projection and per image's PTI), or None.
    inversion: a `projectors.invert.Inversion` (encoder / encoder+optimize); None = optimize.
    """
    inversion = inversion or invert.Inversion()
    cfg = (cfg or P.ProjectConfig()).check()
    outdir = Path(outdir)
    items = plan(inputs)
    settings = dict(project=invert.settings_record(cfg, inversion), pti=pti_cfg.as_dict() if pti_cfg else None,
                    align=bool(align), crop=crop, batch_size=batch_size,
                    lpips=getattr(lpips_model, 'pstyle_info', None) if lpips_model else None)
    if inversion.method != 'optimize':  # Optimize-only runs keep their settings (and resume across versions).
        settings['inversion'] = inversion.describe()
    meta = dict(network_sha256=network_sha256, weights_sha256=deltas.weights_sha256(G), settings=settings)
    part = outdir if world_size == 1 else outdir / 'shards' / f'rank{rank:02d}'
    run, rows, notes = _start(shard(items, rank, world_size), part, outdir, meta, resume, log)
    if cfg.lpips_weight > 0 and lpips_model is None:
        lpips_model = P.default_lpips(misc.device_of(G)) if inversion.optimizes else invert.optional_lpips(misc.device_of(G))[0]
    w_stats = P.compute_w_stats(G, cfg.w_avg_samples)
    ctx = dict(G=G, cfg=cfg, pti_cfg=pti_cfg, outdir=outdir, lpips_model=lpips_model, identity_model=identity_model,
               w_stats=w_stats, inversion=inversion, video=video, video_every=video_every, meta=meta, progress=progress or _no_progress,
               rows=rows, notes=notes)
    batches = _batches(run, run.pending(), G, batch_size, align, crop, min_size)
    for number, batch in enumerate(batches):
        try:
            _project_batch(run, ctx, batch)
        except Exception as e:
            run.save()
            raise ProjectionRunError(
                f'batch {number + 1} ({", ".join(str(b["item"].source.name) for b in batch)}) failed: {type(e).__name__}: {e}. '
                f'The {run.document()["num_ok"]} images done so far are saved in {part}; rerun with --resume to continue.') from e
        doc = run.save()
        log(f'{doc["num_ok"]} projected, {doc["num_failed"]} failed')
    doc = run.save()
    if world_size > 1:
        if barrier is not None:
            barrier()
        if rank == 0:
            return merge_shards(outdir, world_size, items)
    return doc


def _start(items, folder, outdir, meta, resume, log):
    """(FolderRun writing folder/metrics.json, outputs under outdir; LatentRows of folder/latents.npz; notes list)."""
    notes = []
    run = FolderRun(items, Path(folder) / 'metrics.json', 'project', header=lambda: _header(run, meta, notes),
                    resume_key=dict(weights_sha256=meta['weights_sha256'], settings=_comparable(meta['settings'])),
                    resume=resume, log=log, root=outdir)
    rows = latents.LatentRows(Path(folder) / 'latents.npz', meta['settings']['project']['space'], meta)
    if resume:
        rows.resume(run)
        old = run.previous()
        notes += old.get('notes', []) if old else []
    return run, rows, notes


def _header(run, meta, notes):
    """metrics.json's own fields: network, settings, notes, and the mean of each measure over the images done."""
    done = [e for e in run.entries.values() if e['status'] == 'ok']
    summary = dict(num_images=len(done), num_failed=sum(e['status'] == 'failed' for e in run.entries.values()))
    for key in ('lpips', 'mse', 'identity', 'seconds'):
        values = [e[key] for e in done if e.get(key) is not None]
        if values:
            summary[f'{key}_mean'] = float(np.mean(values))
    return dict(network_sha256=meta.get('network_sha256'), weights_sha256=meta['weights_sha256'],
                settings=meta['settings'], notes=notes, summary=summary)


def _comparable(settings):
    """Settings that change results (the batch size does not)."""
    return {k: v for k, v in settings.items() if k != 'batch_size'}


def _no_progress(total, desc, unit='step'):
    return contextlib.nullcontext()


def _batches(run, items, G, batch_size, align, crop, min_size):
    """Yield lists of loaded targets; files that fail to load (typed errors) are recorded and skipped."""
    batch = []
    for item in items:
        ok, loaded = run.attempt(item, _load, item.source, G, align, crop, min_size, stage='load')
        if not ok:
            continue
        batch.append(dict(item=item, image=loaded[0], transform=loaded[1]))
        if len(batch) == batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


def _load(path, G, align, crop, min_size):
    """(uint8 [H, W, C], alignment record or None) for one input; errors name the file."""
    if align:
        return aligned_target(path, G.img_resolution, G.img_channels)
    return load_target(path, G.img_resolution, G.img_channels, crop, min_size), sidecar_transform(path)


def _project_batch(run, ctx, batch):
    G, cfg = ctx['G'], ctx['cfg']
    targets = torch.from_numpy(np.stack([b['image'] for b in batch])).permute(0, 3, 1, 2)  # [N, C, H, W]
    frames = {k: [] for k in range(len(batch))} if ctx['video'] and ctx['inversion'].optimizes else None
    callback = _video_callback(frames, targets, ctx['video_every']) if frames is not None else None
    start = time.time()
    try:
        with ctx['progress'](ctx['inversion'].steps(cfg), f'project {", ".join(b["item"].source.name for b in batch)}') as bar:
            result = invert.invert(G, targets, ctx['inversion'], cfg, ctx['lpips_model'], ctx['identity_model'],
                                   ctx['w_stats'], callback=callback, progress=bar)
    except Exception as e:  # noqa: BLE001 -- typed (out of memory) fails this batch's images, the rest propagates
        typed = typed_error(e)
        if typed is None:
            raise
        for b in batch:
            run.fail(b['item'], typed, stage='project')
        return
    seconds = (time.time() - start) / len(batch)
    ctx['notes'] += [note for note in result.notes if note not in ctx['notes']]
    for k, b in enumerate(batch):
        noise = {name: v[k] for name, v in result.noise.items()} if result.noise else None
        if run.attempt(b['item'], P.check_finite_result, str(b['item'].source), result.ws[k], noise, result.metrics[k],
                       stage='project')[0]:
            _finish_image(run, ctx, b, result.ws[k], noise, dict(result.metrics[k], seconds=seconds),
                          result.images[k], frames[k] if frames is not None else None)


def _finish_image(run, ctx, b, ws, noise, metrics, image, frames):
    """Write one projected image's outputs (and PTI), then its latents row, then its manifest entry."""
    item, outdir = b['item'], ctx['outdir']
    metrics = dict(metrics, source=str(item.source))
    metrics['recon'] = _save_png(outdir / 'recon' / f'{item.name}.png', image, outdir)
    metrics['target'] = _save_png(outdir / 'target' / f'{item.name}.png', b['image'], outdir)
    outputs = [metrics['recon'], metrics['target']]
    if frames is not None:
        metrics['video'] = write_video(outdir / 'video' / item.name, frames, outdir)
        outputs.append(metrics['video'])
    if ctx['pti_cfg'] is not None:
        ok, metrics['pti'] = run.attempt(item, _run_pti, ctx, b, ws[None], noise, stage='pti')
        if not ok:
            return
        outputs += [metrics['pti']['delta'], metrics['pti']['recon']]
    ctx['rows'].add(item.name, ws, noise, b['transform'])
    ctx['rows'].save([it.name for it in run.items])
    run.succeed(item, outputs, **metrics)


def _run_pti(ctx, b, ws, noise):
    G, outdir, item = ctx['G'], ctx['outdir'], b['item']
    target = torch.from_numpy(b['image']).permute(2, 0, 1)[None]
    noise1 = {name: v[None] for name, v in noise.items()} if noise else None
    path = outdir / 'pti' / f'{item.name}.safetensors'
    with ctx['progress'](ctx['pti_cfg'].num_steps, f'pti {item.source.name}') as bar:
        G_tuned, info = pti.tune_and_save(G, target, ws, noise1, ctx['pti_cfg'], ctx['lpips_model'], path,
                                          ctx['meta']['weights_sha256'], dict(name=item.name, network_sha256=ctx['meta']['network_sha256']),
                                          progress=bar)
    metrics, image = pti.pti_metrics(G_tuned, target, ws, noise1, ctx['lpips_model'], ctx['cfg'].lpips_resolution)
    recon = _save_png(outdir / 'recon_pti' / f'{item.name}.png', image, outdir)
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


def merge_shards(outdir, world_size, items):
    """Merge shards/rank*/ into outdir/latents.npz + metrics.json, images in input order (`items`: the run's plan)."""
    outdir = Path(outdir)
    parts = [outdir / 'shards' / f'rank{r:02d}' for r in range(world_size)]
    docs = [json.loads((p / 'metrics.json').read_text()) for p in parts if (p / 'metrics.json').is_file()]
    if not docs:
        raise ValueError(f'{outdir}/shards: no shard results to merge')
    meta = dict(network_sha256=docs[0]['network_sha256'], weights_sha256=docs[0]['weights_sha256'], settings=docs[0]['settings'])
    run, rows, notes = _start(items, outdir, outdir, meta, False, None)
    for p, doc in zip(parts, docs):
        shard_rows = latents.load_latents(p / 'latents.npz') if (p / 'latents.npz').is_file() else dict(names=[])
        index = {n: k for k, n in enumerate(shard_rows['names'])}
        for entry in doc['items']:
            if entry['status'] == 'ok' and entry['name'] in index:
                k = index[entry['name']]
                rows.add(entry['name'], shard_rows['ws'][k],
                         {layer: v[k] for layer, v in shard_rows['noise'].items()} if shard_rows['noise'] else None,
                         shard_rows['alignment'][k])
            if entry['status'] != 'pending':
                run.entries[entry['name']].update(entry)
        notes += [n for n in doc['notes'] if n not in notes]
    rows.save([it.name for it in items])
    return run.save()
