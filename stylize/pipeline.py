"""Photo -> portrait: align, project into the base generator, render with the blended generator
and/or mixed latents, paste back; folder in, folder out, one manifest.

The photo's latent is found in A's W+ space (projectors/projector.py); the blended generator keeps
A's mapping and w_avg by default, so that latent stays meaningful (Pinkney & Adler 2020, Toonify).
A photo that fails at any stage with a typed error (bad photo, diverged projection, out of memory) is
recorded in the manifest and the others go on (torch_utils.folder_run); `resume` skips the finished ones.
"""

import contextlib
import dataclasses
import re
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from pstyle.models import deltas
from pstyle.models import render as gen
from pstyle.models import latents as latents_file
from pstyle.projectors import align as A
from pstyle.projectors import invert
from pstyle.projectors import projector as P
from pstyle.projectors import pti as T
from pstyle.projectors.align import paste_back
from pstyle.projectors.image_io import load_image
from pstyle.stylize import blend, files, layer_weights, photo_metrics
from pstyle.stylize import mix as mixing
from pstyle.torch_utils import folder_run
from pstyle.torch_utils.errors import InputError

STAGES = ('load', 'align', 'project', 'pti', 'render', 'paste', 'metrics')


@dataclasses.dataclass
class StylizeConfig:
    base:           str = 'ffhq'            # Model A: file, URL or short name.
    styled:         str = None              # Model B (fine-tune of A); None = latent mixing only.
    styled_delta:   str = None              # Or B = A + a weight delta file (`pstyle fewshot`'s style.safetensors).
    delta_alpha:    float = 1.0             # B = A + delta_alpha * delta (0 = A, 1 = the tuned network).
    spec:           layer_weights.WeightSpec = dataclasses.field(default_factory=layer_weights.make_spec)
    mapping:        str = 'from-a'          # Mapping network and w_avg of the blended generator.
    mix_style:      str = None              # seeds:LIST | latents:FILE.npz[:SEL] | images:DIR|FILE; None = no mixing.
    style_trunc:    float = 1.0             # Truncation psi of style seeds.
    align:          bool = True             # FFHQ-align the photos (dlib); False = photos are aligned squares.
    paste_back:     bool = False            # Also paste each result back into the original photo.
    feather:        float = 0.1             # Paste-back soft edge (fraction of the face square).
    project_preset: str = 'default'         # projectors.projector.PRESETS ('fast', 'default', 'best').
    project:        dict = dataclasses.field(default_factory=dict)  # ProjectConfig overrides (num_steps, space, ...).
    invert:         str = 'optimize'        # projectors.invert.INVERSIONS: optimize, encoder, encoder+optimize.
    encoder:        str = None              # Encoder file (or short name) for the encoder inversions.
    pti:            bool = None             # Pivotal tuning of A per photo; None = the preset's choice (on for 'best').
    pti_settings:   dict = dataclasses.field(default_factory=dict)  # PTIConfig overrides (num_steps, ...).
    batch_size:     int = 4                 # Photos projected together (results do not depend on it).
    noise_mode:     str = 'const'           # Render with the projected noise maps ('const') or none.
    metrics:        bool = True             # Identity and LPIPS to the photo, when their weights are available.
    landmarks:      str = None              # dlib 68-point model (None = projectors.align's default).
    device:         str = 'auto'

    def as_dict(self):
        out = dataclasses.asdict(self)
        out['spec'] = self.spec.as_dict()
        return out

    def check(self):
        if self.styled is not None and self.styled_delta is not None:
            raise ValueError('give only one of --styled and --styled-delta (both are model B)')
        if self.styled is None and self.styled_delta is None and self.mix_style is None:
            raise ValueError('nothing to stylize with: give --styled (layer swapping) and/or --mix-style (latent mixing); '
                             '--styled-delta is a --styled made from a weight delta')
        if self.mapping not in blend.MAPPING_MODES:
            raise ValueError(f'mapping must be one of {", ".join(blend.MAPPING_MODES)}, got {self.mapping!r}')
        if self.batch_size < 1:
            raise ValueError(f'batch size must be >= 1, got {self.batch_size}')
        return self


# ----------------------------------------------------------------------------
# Models.

@dataclasses.dataclass
class Models:
    G_a: torch.nn.Module                    # Base: projection target space.
    G_b: torch.nn.Module                    # Styled, or None.
    G_render: torch.nn.Module               # Blended (or A when only mixing).
    weights: np.ndarray                     # [num_ws] resolved per-row weights.
    info: dict                              # Provenance, hashes, blend summary, timings.


def load_models(cfg, device, blend_now=True):
    """Load A (and B), check they blend, resolve the weights and (with blend_now) blend them."""
    t0 = time.perf_counter()
    G_a, info_a = files.load_generator(cfg.base, device)
    G_b, info_b = files.load_generator(cfg.styled, device) if cfg.styled is not None else (None, None)
    if cfg.styled_delta is not None:
        G_b = deltas.load_tuned_generator(G_a, cfg.styled_delta, cfg.delta_alpha)
        info_b = dict(delta=str(cfg.styled_delta), delta_alpha=cfg.delta_alpha, sha256=info_a['sha256'])
    info = dict(base=info_a, styled=info_b, seconds=dict(load=time.perf_counter() - t0))
    weights = layer_weights.resolve(G_a, cfg.spec)
    G_render = G_a
    if G_b is not None:
        info['runtime_differences'] = blend.check_compatible(G_a, G_b)
        if blend_now:
            t0 = time.perf_counter()
            G_render = blend.blend_generators(G_a, G_b, weights, mapping=cfg.mapping, copy_tensors=False)  # Read-only use.
            info['seconds']['blend'] = time.perf_counter() - t0
            info['blend'] = blend.blend_summary(G_a, weights, cfg.mapping)
    return Models(G_a, G_b, G_render, weights, info)


# ----------------------------------------------------------------------------
# Stages for one photo.

def prepare_photo(path, resolution, cfg):
    """(aligned uint8 [H, W, 3] at `resolution`, transform dict or None, original photo or None)."""
    if cfg.align:
        face = A.align_face(str(path), size=resolution, predictor=cfg.landmarks)[0]  # Errors name the file.
        return np.array(face.image), face.transform, (load_image(path) if cfg.paste_back else None)
    photo = load_image(path)
    if photo.width != photo.height:
        raise InputError(f'{path}: {photo.width}x{photo.height} is not square; align it (drop --no-align) or crop it')
    if photo.width != resolution:
        photo = photo.resize((resolution, resolution), Image.Resampling.LANCZOS)
    transform, original = _sidecar_transform(path)
    return np.array(photo), transform, original


def _sidecar_transform(path):
    """The `pstyle align` record beside an aligned photo (<stem>.json) and its source photo, if any."""
    record = Path(path).with_suffix('.json')
    if not record.is_file():
        return None, None
    transform = A.load_transform(record)
    source = transform.get('source')
    return transform, (load_image(source) if source and Path(source).is_file() else None)


class Projector:
    """Projects uint8 targets into one generator with a fixed config, LPIPS model and w statistics,
    and tunes the generator on each photo when pivotal tuning is on."""

    def __init__(self, G, cfg, device, progress=None, use_encoder=True):
        self.P = P
        self.progress = progress or (lambda total, desc: contextlib.nullcontext())  # torch_utils.progress.reporter
        self.G = G
        self.cfg = P.preset_config(cfg.project_preset, **cfg.project)
        self.pti_cfg = pti_config(cfg, self.cfg)
        # The encoder belongs to the base generator: style images projected into B always optimize.
        self.inversion = invert.prepare_inversion(cfg.invert, cfg.encoder, G, device, self.cfg.precision) \
            if use_encoder else invert.Inversion()
        self.lpips = None
        if self.cfg.lpips_weight > 0 and not self.inversion.optimizes and self.pti_cfg is None:
            self.lpips = invert.optional_lpips(device)[0]  # Only reported: a missing file is no reason to stop.
        elif self.cfg.lpips_weight > 0:
            self.lpips = P.default_lpips(device)  # A missing file stops the run here, once.
        self.w_stats = P.compute_w_stats(G, self.cfg.w_avg_samples, device=device)
        self.weights_sha256 = deltas.weights_sha256(G) if self.pti_cfg is not None else None

    def __call__(self, targets):
        """uint8 [N, H, W, 3] -> (ws [N, num_ws, w_dim], noise {layer: [N, 1, r, r]} or None, metrics)."""
        with self.progress(self.inversion.steps(self.cfg), f'project {len(targets)} photo(s)') as bar:
            result = invert.invert(self.G, targets, self.inversion, self.cfg, lpips_model=self.lpips, w_stats=self.w_stats,
                                   progress=bar)
        return result.ws, result.noise, result.metrics

    def tune(self, target, ws, noise, delta_path, meta):
        """Pivotal tuning of the base generator on one photo (uint8 [H, W, 3]) around its pivot `ws`;
        the delta is written to `delta_path`. Returns (G_tuned, info) or (self.G, None) when PTI is off."""
        if self.pti_cfg is None:
            return self.G, None
        target = torch.from_numpy(np.ascontiguousarray(target)).permute(2, 0, 1)[None]  # [1, C, H, W]
        with self.progress(self.pti_cfg.num_steps, f'pti {Path(delta_path).stem}') as bar:
            return T.tune_and_save(self.G, target, ws, noise, self.pti_cfg, self.lpips, delta_path, self.weights_sha256, meta,
                                   progress=bar)


def pti_config(cfg, project_cfg):
    """PTIConfig for the pipeline, or None; LPIPS follows the projection's (`pti.following_projection`)."""
    preset = P.PRESETS[cfg.project_preset]['pti']
    if not (preset is not None if cfg.pti is None else cfg.pti):
        return None
    return T.following_projection(preset, project_cfg, cfg.pti_settings)


def photo_generators(models, G_a, weights, mapping):
    """(A, render generator) for one photo: the base ones, or the blend of its PTI-tuned A with B.
    Rows read from B keep B's tensors; the tuning moves only A's share (Roich et al. tune the
    generator the photo was inverted into)."""
    if G_a is models.G_a:
        return models.G_a, models.G_render
    if models.G_b is None:
        return G_a, G_a
    return G_a, blend.blend_generators(G_a, models.G_b, weights, mapping=mapping, copy_tensors=False)


def project_robust(projector, targets):
    """Project a batch; when it fails, project each image alone so one bad image fails alone.
    Returns a list of (ws [1, ...], noise or None, metrics) or Exception, one per image."""
    try:
        ws, noise, metrics = projector(np.stack(targets))
        return [(ws[k:k + 1], _slice_noise(noise, k), metrics[k]) for k in range(len(targets))]
    except Exception:  # noqa: BLE001 -- isolate the failing image below
        if len(targets) == 1:
            raise
    out = []
    for target in targets:
        try:
            out.extend(project_robust(projector, [target]))
        except Exception as e:  # noqa: BLE001
            out.append(e)
    return out


def _slice_noise(noise, k):
    return {name: v[k:k + 1] for name, v in noise.items()} if noise else None


def render_uint8(G, ws, noise, noise_mode='const'):
    """W+ [M, num_ws, w_dim] with one photo's noise maps (broadcast to M) -> uint8 [M, H, W, C]."""
    if noise is not None and noise_mode == 'const':
        noise = {k: v.expand(ws.shape[0], -1, -1, -1) for k, v in noise.items()}
    else:
        noise = None
    return gen.to_uint8(gen.render(G, ws, noise, noise_mode=noise_mode))


# ----------------------------------------------------------------------------
# Style latents.

def load_styles(cfg, models, device, progress=None):
    """(ws [M, num_ws, w_dim], names) or (None, [None]) without --mix-style.

    Seeds and exemplar images live in B's W space when B is given (its fine rows feed B's layers),
    else in A's."""
    if cfg.mix_style is None:
        return None, [None]
    G_style = models.G_b if models.G_b is not None else models.G_a
    ws, names = mixing.style_ws(G_style, cfg.mix_style, cfg.style_trunc, project_fn=image_projector(G_style, cfg, device, progress))
    return ws.cpu(), [str(n) for n in names]


def image_projector(G, cfg, device, progress=None):
    """`project_fn` of `mix.style_ws`: 'DIR|FILE' -> (ws [M, num_ws, w_dim] on the CPU, stems), the images
    prepared (aligned or not) and projected into G with `cfg`'s projection settings."""
    def project_images(arg):
        items = folder_run.plan(arg)
        projector = Projector(G, cfg, device, progress, use_encoder=False)
        targets = [prepare_photo(it.source, G.img_resolution, cfg)[0] for it in items]
        ws, _, _ = projector(np.stack(targets))
        return ws.cpu(), [it.name for it in items]
    return project_images


# ----------------------------------------------------------------------------
# The pipeline: a folder run (torch_utils.folder_run: names, typed failures, manifest, resume).

def output_name(stem, style, num_styles):
    """<stem> for one style (or none), <stem>-<style> for several; path separators become `_`."""
    name = stem if num_styles == 1 else f'{stem}-{style}'
    return re.sub(r'[\\/\x00]', '_', name)


@dataclasses.dataclass
class _Run:
    """What every photo of one `stylize_photos` call shares."""
    models: Models
    projector: Projector
    styles: torch.Tensor                    # [M, num_ws, w_dim] or None
    style_names: list                       # unique; [None] without mixing
    scorer: photo_metrics.PhotoMetrics      # or None
    cfg: StylizeConfig
    outdir: Path
    latents: latents_file.LatentRows


def stylize_photos(photos, outdir, cfg, log=print, progress=None, resume=False):
    """Run the pipeline on a photo, a folder or a list of both; write images, latents.npz and manifest.json
    (a folder-run manifest, rewritten after every photo) to `outdir` and return the manifest (dict).
    resume: keep the photos an earlier run with the same networks and settings finished there.
    progress: a `torch_utils.progress.reporter` factory or None."""
    cfg.check()
    items = folder_run.plan(photos)
    device = gen.pick_device(cfg.device)
    outdir = Path(outdir)
    models = load_models(cfg, device)
    t0 = time.perf_counter()
    styles, style_names = load_styles(cfg, models, device, progress)
    style_names = folder_run.unique_labels(style_names) if style_names != [None] else style_names
    models.info['seconds']['styles'] = time.perf_counter() - t0
    projector = Projector(models.G_a, cfg, device, progress)
    scorer = photo_metrics.PhotoMetrics(device) if cfg.metrics else None
    ctx = _Run(models, projector, styles, style_names, scorer, cfg, outdir, _latents_rows(outdir, projector.cfg, models.info['base']))
    run = folder_run.FolderRun(items, outdir / 'manifest.json', 'stylize', header=lambda: _manifest(ctx, run),
                               resume_key=_resume_key(cfg, models), resume=resume, log=log)
    if resume:
        ctx.latents.resume(run)
    for sub in ('aligned', 'projected') + (('pasted',) if cfg.paste_back else ()):
        (outdir / sub).mkdir(parents=True, exist_ok=True)
    todo = run.pending()
    for start in range(0, len(todo), cfg.batch_size):
        for item, prepared, result in prepare_and_project(run, todo[start:start + cfg.batch_size], models.G_a.img_resolution,
                                                          projector, cfg):
            _finish_photo(run, item, prepared, result, ctx)
    return run.save()


def _latents_rows(outdir, projection_cfg, base_info):
    """The photos' latents in A's W+ space, in `pstyle project`'s latents.npz format (w / ws, names, noise/<layer>,
    alignment records), so `pstyle generate --projected-w` and `pstyle mix` read them."""
    return latents_file.LatentRows(outdir / 'latents.npz', projection_cfg.space,
                                   dict(network_sha256=base_info.get('sha256'), settings=projection_cfg.as_dict()))


def _resume_key(cfg, models):
    """What a resumed run must share with the earlier one: every setting but the batch size and device, and the networks."""
    settings = {k: v for k, v in cfg.as_dict().items() if k not in ('batch_size', 'device')}
    return dict(settings=settings, base=models.info['base'].get('sha256'),
                styled=(models.info['styled'] or {}).get('sha256'))


def _timed(entry, stage, fn, *args):
    t0 = time.perf_counter()
    try:
        return fn(*args)
    finally:
        seconds = entry.setdefault('seconds', {})
        seconds[stage] = seconds.get(stage, 0.0) + time.perf_counter() - t0


def prepare_and_project(run, items, resolution, projector, cfg):
    """Align/load and project a batch of `run`'s items; typed failures (bad photo, divergence, out of memory)
    are recorded in the run. Returns [(item, prepared, (ws, noise, projection metrics))] for the photos that got through."""
    prepared = {}
    for item in items:
        ok, value = run.attempt(item, _timed, run.entry(item), 'align', prepare_photo, item.source, resolution, cfg,
                                stage='align')
        if ok:
            prepared[item.name] = value
    live = [it for it in items if it.name in prepared]
    if not live:
        return []
    t0 = time.perf_counter()
    results = project_robust(projector, [prepared[it.name][0] for it in live])
    per_photo = (time.perf_counter() - t0) / len(live)
    out = []
    for item, result in zip(live, results):
        run.entry(item).setdefault('seconds', {})['project'] = per_photo
        ok, _ = run.attempt(item, _check_projection, item, result, stage='project')
        if ok:
            out.append((item, prepared[item.name], result))
    return out


def _check_projection(item, result):
    """project_robust's result for one photo: its error raised (typed ones are recorded, others propagate),
    a non-finite latent, noise map or loss raised as a DivergenceError."""
    if isinstance(result, Exception):
        raise result
    ws, noise, metrics = result
    P.check_finite_result(str(item.source), ws, noise, metrics)


def _finish_photo(run, item, prepared, result, ctx):
    """PTI, render, paste back and measure one projected photo; latents.npz, then the manifest, record it."""
    target, transform, original = prepared
    ws, noise, proj_metrics = result
    entry, name, models, outdir = run.entry(item), item.name, ctx.models, ctx.outdir
    gen.save_image(target, outdir / 'aligned' / f'{name}.png')
    files_out = [outdir / 'aligned' / f'{name}.png', outdir / 'projected' / f'{name}.png']
    entry['projection'] = proj_metrics
    G_tuned = models.G_a
    if ctx.projector.pti_cfg is not None:  # No 'pti' stage time in the manifest when PTI is off.
        delta = outdir / 'pti' / f'{name}.safetensors'
        ok, tuned = run.attempt(item, _timed, entry, 'pti', ctx.projector.tune, target, ws, noise, delta,
                                dict(name=item.source.name, network_sha256=models.info['base'].get('sha256')), stage='pti')
        if not ok:
            return
        G_tuned, pti_info = tuned
        entry['pti'] = dict(pti_info, delta=f'pti/{name}.safetensors')
        files_out.append(delta)
    G_a, G_render = photo_generators(models, G_tuned, models.weights, ctx.cfg.mapping)
    ok, images = run.attempt(item, _timed, entry, 'render', _render_portraits, entry, name, G_a, G_render, ws, noise, ctx,
                             stage='render')
    if not ok:
        return
    files_out += [outdir / p['image'] for p in entry['portraits'].values()]
    if ctx.cfg.paste_back:
        ok, _ = run.attempt(item, _timed, entry, 'paste', _paste, entry, images, transform, original, ctx.cfg, outdir,
                            stage='paste')
        if not ok:
            return
        files_out += [outdir / p['pasted'] for p in entry['portraits'].values() if 'pasted' in p]
    if ctx.scorer is not None:
        try:  # A metric that cannot be computed leaves the image a success, with the reason recorded.
            scores = _timed(entry, 'metrics', ctx.scorer, target, images)
            for out, score in zip(entry['portraits'].values(), scores):
                out['metrics'] = score
        except Exception as e:  # noqa: BLE001 -- optional measurements, never the photo's failure
            entry['metrics_error'] = f'{type(e).__name__}: {e}'
    ctx.latents.add(name, ws, noise, transform)
    ctx.latents.save([it.name for it in run.items])
    run.succeed(item, files_out)


def _render_portraits(entry, name, G_a, G_render, ws, noise, ctx):
    """A's reconstruction to projected/, one portrait per style to <name>[-<style>].png; returns the portraits."""
    recon = render_uint8(G_a, ws, noise, ctx.cfg.noise_mode)
    gen.save_image(recon[0], ctx.outdir / 'projected' / f'{name}.png')
    if ctx.styles is not None:
        ws = mixing.mix(ws.expand(len(ctx.styles), -1, -1), ctx.styles, ctx.models.weights)
    images = render_uint8(G_render, ws, noise, ctx.cfg.noise_mode)
    entry['portraits'] = {}
    for image, style in zip(images, ctx.style_names):
        out = output_name(name, style, len(ctx.style_names))
        gen.save_image(image, ctx.outdir / f'{out}.png')
        entry['portraits'][out] = dict(image=f'{out}.png', style=style)
    return images


def _paste(entry, images, transform, original, cfg, outdir):
    if transform is None or original is None:
        entry['paste_back'] = 'skipped: no alignment record (photos given with --no-align and no <stem>.json from `pstyle align`)'
        return
    for name, image in zip(entry['portraits'], images):
        pasted = paste_back(original, image, transform, feather=cfg.feather)
        pasted.save(outdir / 'pasted' / f'{name}.png')
        entry['portraits'][name]['pasted'] = f'pasted/{name}.png'


def _manifest(ctx, run):
    """The command's fields of manifest.json (the folder run adds items, counts and failures)."""
    models, projector = ctx.models, ctx.projector
    ok = [e for e in run.entries.values() if e['status'] == 'ok']
    stage_means = {s: float(np.mean([e['seconds'][s] for e in ok if s in e.get('seconds', {})]))
                   for s in STAGES if any(s in e.get('seconds', {}) for e in ok)}
    return dict(
        config=ctx.cfg.as_dict(), spec_text=ctx.cfg.spec.describe(),
        weights=models.weights, networks=dict(base=models.info['base'], styled=models.info['styled']),
        blend=models.info.get('blend'), runtime_differences=models.info.get('runtime_differences', []),
        projection=projector.cfg.as_dict(), inversion=projector.inversion.describe(), pti=projector.pti_cfg.as_dict() if projector.pti_cfg else None,
        styles=ctx.style_names if ctx.style_names != [None] else None,
        metrics_available=ctx.scorer.available if ctx.scorer is not None else None,
        notes=ctx.scorer.notes if ctx.scorer is not None else [],
        seconds=dict(models.info['seconds'], per_photo=stage_means))
