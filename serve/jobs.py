"""The work of one batch, run on the worker thread: seeds -> images, photos -> portraits.

A job is one request; jobs with the same `key` (kind, style, row weights and, for photos, the
inversion and its optimisation steps) share one generator pass (and one encoder pass). `run_batch`
returns one result or exception per job, and a batch that fails as a whole is rerun job by job, so one
bad request fails alone.
"""

import dataclasses
import time

import numpy as np
import torch
from PIL import Image

from pstyle.projectors import align as A
from pstyle.projectors import invert as I
from pstyle.projectors import projector as P
from pstyle.stylize import pipeline
from pstyle.stylize.layer_weights import WeightSpec

from pstyle.serve.errors import ApiError


@dataclasses.dataclass
class GenerateJob:
    style:      object              # models.Style
    spec:       WeightSpec
    weights:    np.ndarray          # [num_ws] resolved.
    seeds:      list
    truncation: float = 1.0

    @property
    def key(self):
        return ('generate', self.style.name, self.weights.tobytes())

    @property
    def size(self):
        return len(self.seeds)


@dataclasses.dataclass
class StylizeJob:
    style:      object
    spec:       WeightSpec
    weights:    np.ndarray
    photo:      Image.Image         # Upright 8-bit RGB, decoded in memory.
    align:      bool = True
    invert:     str = 'optimize'    # One of config.INVERT_MODES.
    steps:      int = None          # None = the server's default (unused by invert=encoder).
    paste_back: bool = False
    feather:    float = 0.1

    @property
    def key(self):
        return ('stylize', self.style.name, self.weights.tobytes(), self.invert, self.steps)

    @property
    def size(self):
        return 1


def run_batch(store, jobs):
    """[job] (same key) -> [result or Exception], never raising."""
    fn = generate_batch if isinstance(jobs[0], GenerateJob) else stylize_batch
    try:
        return fn(store, jobs)
    except Exception as e:  # noqa: BLE001 -- isolate below
        if len(jobs) == 1:
            return [e]
    return [run_batch(store, [job])[0] for job in jobs]


# ----------------------------------------------------------------------------
# Seeds.

def generate_batch(store, jobs):
    style, weights = jobs[0].style, jobs[0].weights
    G = store.generator(style, weights)
    ws = torch.cat(store.seeds_to_ws(G, [(job.seeds, job.truncation) for job in jobs]))
    images = store.render(G, ws)
    out, start = [], 0
    for job in jobs:
        out.append(images[start:start + job.size])
        start += job.size
    return out


# ----------------------------------------------------------------------------
# Photos.

def prepare(job, resolution, landmarks=None):
    """(aligned uint8 [res, res, 3], alignment transform or None)."""
    if job.align:
        try:
            face = A.align_face(job.photo, size=resolution, predictor=landmarks)[0]
        except A.NoFaceError:
            raise ApiError(422, 'no_face', 'no face found in the image (dlib frontal face detector); '
                                           'try a larger, frontal face, or send an aligned square with align=false') from None
        except A.AlignDependencyError as e:
            raise ApiError(503, 'unavailable', f'face alignment is not available on this server: {e}') from None
        return np.array(face.image), face.transform
    photo = job.photo
    if photo.width != photo.height:
        raise ApiError(422, 'bad_input', f'{photo.width}x{photo.height} is not square; align it (align=true) or crop it')
    if photo.width != resolution:
        photo = photo.resize((resolution, resolution), Image.Resampling.LANCZOS)
    return np.array(photo), None


class _Projector:
    """pipeline.project_robust's callable: one inversion (projectors.invert) with the store's encoder, LPIPS
    and w statistics; encoder passes go through the store's fixed-size `encode`."""

    def __init__(self, store, style, method, steps):
        self.store, self.G, self.lpips = store, style.G_a, store.lpips
        self.inversion = I.Inversion(method, style.encoder, store.cfg.max_batch)
        self.cfg = P.preset_config(store.cfg.project_preset, **store.cfg.project_overrides(steps))
        self.w_stats = store.w_stats.get(id(self.G))

    def __call__(self, targets):
        result = I.invert(self.G, targets, self.inversion, self.cfg, lpips_model=self.lpips, w_stats=self.w_stats,
                          encode_fn=lambda images: self.store.encode(self.inversion.encoder, images))
        return result.ws, result.noise, result.metrics


def stylize_batch(store, jobs):
    style, weights, method = jobs[0].style, jobs[0].weights, jobs[0].invert
    reason = store.unavailable(style, method)
    if reason is not None:
        raise ApiError(503, 'unavailable', reason)
    out = [None] * len(jobs)
    prepared = {}
    t0 = time.perf_counter()
    for i, job in enumerate(jobs):
        try:
            prepared[i] = prepare(job, style.G_a.img_resolution, store.cfg.landmarks)
        except Exception as e:  # noqa: BLE001 -- this photo fails alone
            out[i] = e
    live = sorted(prepared)
    if not live:
        return out
    t_align = (time.perf_counter() - t0) / len(jobs)
    t0 = time.perf_counter()
    projector = _Projector(store, style, method, jobs[0].steps)
    results = pipeline.project_robust(projector, [prepared[i][0] for i in live])
    t_project = (time.perf_counter() - t0) / len(live)
    ok = [(i, r) for i, r in zip(live, results) if not isinstance(r, Exception)]
    for i, r in zip(live, results):
        if isinstance(r, Exception):
            out[i] = r
    if not ok:
        return out
    t0 = time.perf_counter()
    ws = torch.cat([r[0] for _, r in ok])
    noise = _cat_noise([r[1] for _, r in ok])
    recon = store.render(style.G_a, ws, noise)
    portraits = store.render(store.generator(style, weights), ws, noise)
    t_render = (time.perf_counter() - t0) / len(ok)
    for k, (i, r) in enumerate(ok):
        job = jobs[i]
        target, transform = prepared[i]
        images = dict(portrait=portraits[k], aligned=target, projected=recon[k])
        if job.paste_back:
            images['pasted'] = np.array(A.paste_back(job.photo, portraits[k], transform, feather=job.feather))
        entry = dict(style=style.name, spec=job.spec.as_dict(), spec_text=job.spec.describe(),
                     weights=[float(w) for w in weights], align=job.align, invert=method,
                     projection=dict(r[2], settings=projector.cfg.as_dict() if method != 'encoder' else None),
                     alignment=transform,
                     networks=style.describe()['networks'],
                     seconds=dict(align=t_align, project=t_project, render=t_render))
        out[i] = dict(images=images, entry=entry)
    return out


def _cat_noise(noises):
    if any(n is None for n in noises):
        return None
    return {layer: torch.cat([n[layer] for n in noises]) for layer in noises[0]}
