"""Photo -> portrait: align, project into the base generator, render with the blended generator
and/or mixed latents, paste back; folder in, folder out, one manifest.

The photo's latent is found in A's W+ space (projectors/projector.py); the blended generator keeps
A's mapping and w_avg by default, so that latent stays meaningful (Pinkney & Adler 2020, Toonify).
A photo that fails at any stage is recorded in the manifest and the others go on.
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
from pstyle.models.latents import save_latents
from pstyle.projectors import align as A
from pstyle.projectors import projector as P
from pstyle.projectors import pti as T
from pstyle.projectors.align import AlignDependencyError, paste_back
from pstyle.projectors.image_io import list_images, load_image
from pstyle.stylize import blend, files, layer_weights, photo_metrics
from pstyle.stylize import mix as mixing

MANIFEST_VERSION = 1
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


def list_photos(photos):
    """A file or every image directly inside a folder, sorted."""
    path = Path(photos)
    if path.is_dir():
        found = list_images(path)
        if not found:
            raise ValueError(f'{path}: no image files in this folder')
        return found
    if path.is_file():
        return [path]
    raise FileNotFoundError(f'{path}: no such photo or folder')


def unique_stems(paths):
    stems, seen = [], set()
    for p in paths:
        stem = p.stem if p.stem not in seen else f'{p.stem}_{p.suffix[1:].lower()}'
        seen.add(stem)
        stems.append(stem)
    return stems


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
        raise ValueError(f'{path}: {photo.width}x{photo.height} is not square; align it (drop --no-align) or crop it')
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

    def __init__(self, G, cfg, device, progress=None):
        self.P = P
        self.progress = progress or (lambda total, desc: contextlib.nullcontext())  # torch_utils.progress.reporter
        self.G = G
        self.cfg = P.preset_config(cfg.project_preset, **cfg.project)
        self.pti_cfg = pti_config(cfg, self.cfg)
        self.lpips = None
        if self.cfg.lpips_weight > 0:
            self.lpips = P.default_lpips(device)  # A missing file stops the run here, once.
        self.w_stats = P.compute_w_stats(G, self.cfg.w_avg_samples, device=device)
        self.weights_sha256 = deltas.weights_sha256(G) if self.pti_cfg is not None else None

    def __call__(self, targets):
        """uint8 [N, H, W, 3] -> (ws [N, num_ws, w_dim], noise {layer: [N, 1, r, r]} or None, metrics)."""
        with self.progress(self.cfg.num_steps, f'project {len(targets)} photo(s)') as bar:
            result = self.P.project(self.G, targets, self.cfg, lpips_model=self.lpips, w_stats=self.w_stats, progress=bar)
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


def render(G, ws, noise, noise_mode='const'):
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
        paths = list_photos(arg)
        projector = Projector(G, cfg, device, progress)
        targets = [prepare_photo(p, G.img_resolution, cfg)[0] for p in paths]
        ws, _, _ = projector(np.stack(targets))
        return ws.cpu(), unique_stems(paths)
    return project_images


# ----------------------------------------------------------------------------
# The pipeline.

def output_name(stem, style, num_styles):
    """<stem>.png for one style (or none), <stem>-<style>.png for several; safe file names."""
    name = stem if num_styles == 1 else f'{stem}-{style}'
    return re.sub(r'[^A-Za-z0-9._-]', '_', name)


def stylize_photos(photos, outdir, cfg, log=print, progress=None):
    """Run the pipeline on a photo or a folder; write images, latents.npz and manifest.json to
    `outdir` and return the manifest (dict). progress: a `torch_utils.progress.reporter` factory or None."""
    cfg.check()
    paths = list_photos(photos)
    device = gen.pick_device(cfg.device)
    outdir = Path(outdir)
    for sub in ('aligned', 'projected') + (('pasted',) if cfg.paste_back else ()):
        (outdir / sub).mkdir(parents=True, exist_ok=True)
    models = load_models(cfg, device)
    t0 = time.perf_counter()
    styles, style_names = load_styles(cfg, models, device, progress)
    models.info['seconds']['styles'] = time.perf_counter() - t0
    projector = Projector(models.G_a, cfg, device, progress)
    scorer = photo_metrics.PhotoMetrics(device) if cfg.metrics else None
    entries = [dict(photo=str(p), stem=s, status='pending', seconds={}, outputs={}) for p, s in zip(paths, unique_stems(paths))]
    latents = []
    for start in range(0, len(entries), cfg.batch_size):
        batch = entries[start:start + cfg.batch_size]
        _run_batch(batch, models, projector, styles, style_names, scorer, cfg, outdir, latents)
        for entry in batch:
            log(f'{entry["photo"]}: {entry["status"]}' + (f' ({entry["stage"]}: {entry["error"]})' if entry['status'] == 'failed' else ''))
    _save_latents(outdir / 'latents.npz', latents, projector.cfg, models.info['base'])
    manifest = files.jsonable(_manifest(cfg, models, style_names, entries, scorer, projector))
    files.write_json(outdir / 'manifest.json', manifest)
    return manifest


def _fail(entry, stage, exc):
    entry.update(status='failed', stage=stage, error=f'{type(exc).__name__}: {exc}')


def _timed(entry, stage, fn, *args):
    t0 = time.perf_counter()
    try:
        return fn(*args)
    finally:
        entry['seconds'][stage] = entry['seconds'].get(stage, 0.0) + time.perf_counter() - t0


def prepare_and_project(batch, resolution, projector, cfg):
    """Align/load and project a batch of manifest entries; failures are written into the entries.
    Returns [(entry, prepared, (ws, noise, projection metrics))] for the photos that got through."""
    prepared = {}
    for entry in batch:
        try:
            prepared[entry['stem']] = _timed(entry, 'align', prepare_photo, entry['photo'], resolution, cfg)
        except AlignDependencyError:
            raise  # Not this photo's fault: every photo would fail the same way.
        except Exception as e:  # noqa: BLE001 -- one bad photo must not stop the others
            _fail(entry, 'align', e)
    live = [e for e in batch if e['stem'] in prepared]
    if not live:
        return []
    t0 = time.perf_counter()
    results = project_robust(projector, [prepared[e['stem']][0] for e in live])
    per_photo = (time.perf_counter() - t0) / len(live)
    out = []
    for entry, result in zip(live, results):
        entry['seconds']['project'] = per_photo
        if isinstance(result, Exception):
            _fail(entry, 'project', result)
        else:
            out.append((entry, prepared[entry['stem']], result))
    return out


def _run_batch(batch, models, projector, styles, style_names, scorer, cfg, outdir, latents):
    for entry, prepared, result in prepare_and_project(batch, models.G_a.img_resolution, projector, cfg):
        try:
            _finish_photo(entry, prepared, result, models, projector, styles, style_names, scorer, cfg, outdir)
            latents.append((entry['stem'], result, prepared[1]))
        except Exception as e:  # noqa: BLE001
            _fail(entry, entry.get('_stage', 'render'), e)
        entry.pop('_stage', None)


def _finish_photo(entry, prepared, result, models, projector, styles, style_names, scorer, cfg, outdir):
    target, transform, original = prepared
    ws, noise, proj_metrics = result
    stem = entry['stem']
    gen.save_image(target, outdir / 'aligned' / f'{stem}.png')
    entry['projection'] = proj_metrics
    G_tuned = models.G_a
    if projector.pti_cfg is not None:  # No 'pti' stage time in the manifest when PTI is off.
        entry['_stage'] = 'pti'
        G_tuned, pti_info = _timed(entry, 'pti', projector.tune, target, ws, noise, outdir / 'pti' / f'{stem}.safetensors',
                                   dict(name=Path(entry['photo']).name, network_sha256=models.info['base'].get('sha256')))
        entry['pti'] = dict(pti_info, delta=f'pti/{stem}.safetensors')
    G_a, G_render = photo_generators(models, G_tuned, models.weights, cfg.mapping)
    entry['_stage'] = 'render'
    recon = _timed(entry, 'render', render, G_a, ws, noise, cfg.noise_mode)
    gen.save_image(recon[0], outdir / 'projected' / f'{stem}.png')
    if styles is not None:
        ws = mixing.mix(ws.expand(len(styles), -1, -1), styles, models.weights)
    images = _timed(entry, 'render', render, G_render, ws, noise, cfg.noise_mode)
    entry['outputs'] = {}
    for image, style in zip(images, style_names):
        name = output_name(stem, style, len(style_names))
        gen.save_image(image, outdir / f'{name}.png')
        entry['outputs'][name] = dict(image=f'{name}.png', style=style)
    if cfg.paste_back:
        entry['_stage'] = 'paste'
        _timed(entry, 'paste', _paste, entry, images, transform, original, cfg, outdir)
    entry['status'] = 'ok'
    if scorer is not None:
        try:  # A metric that cannot be computed leaves the image a success, with the reason recorded.
            scores = _timed(entry, 'metrics', scorer, target, images)
            for out, score in zip(entry['outputs'].values(), scores):
                out['metrics'] = score
        except Exception as e:  # noqa: BLE001
            entry['metrics_error'] = f'{type(e).__name__}: {e}'


def _paste(entry, images, transform, original, cfg, outdir):
    if transform is None or original is None:
        entry['paste_back'] = 'skipped: no alignment record (photos given with --no-align and no <stem>.json from `pstyle align`)'
        return
    for name, image in zip(entry['outputs'], images):
        pasted = paste_back(original, image, transform, feather=cfg.feather)
        pasted.save(outdir / 'pasted' / f'{name}.png')
        entry['outputs'][name]['pasted'] = f'pasted/{name}.png'


def _save_latents(path, latents, projection_cfg, base_info):
    """The photos' latents in A's W+ space, in `pstyle project`'s latents.npz format (w / ws, names,
    noise/<layer>, alignment records), so `pstyle generate --projected-w` and `pstyle mix` read them."""
    if not latents:
        return
    names = [stem for stem, _, _ in latents]
    ws = torch.cat([result[0] for _, result, _ in latents])
    noise = None
    if all(result[1] is not None for _, result, _ in latents):
        noise = {layer: torch.cat([result[1][layer] for _, result, _ in latents]).numpy() for layer in latents[0][1][1]}
    save_latents(path, names, ws.numpy(), noise, space=projection_cfg.space, alignment=[t for _, _, t in latents],
                 meta=dict(network_sha256=base_info.get('sha256'), settings=projection_cfg.as_dict()))


def _manifest(cfg, models, style_names, entries, scorer, projector):
    ok = [e for e in entries if e['status'] == 'ok']
    stage_means = {s: float(np.mean([e['seconds'][s] for e in ok if s in e['seconds']]))
                   for s in STAGES if any(s in e['seconds'] for e in ok)}
    return dict(
        version=MANIFEST_VERSION, kind='pstyle stylize', config=cfg.as_dict(), spec_text=cfg.spec.describe(),
        weights=models.weights, networks=dict(base=models.info['base'], styled=models.info['styled']),
        blend=models.info.get('blend'), runtime_differences=models.info.get('runtime_differences', []),
        projection=projector.cfg.as_dict(), pti=projector.pti_cfg.as_dict() if projector.pti_cfg else None,
        styles=style_names if style_names != [None] else None,
        metrics_available=scorer.available if scorer is not None else None,
        notes=scorer.notes if scorer is not None else [],
        seconds=dict(models.info['seconds'], per_photo=stage_means),
        num_photos=len(entries), num_ok=len(ok), failures=[dict(photo=e['photo'], stage=e['stage'], error=e['error'])
                                                          for e in entries if e['status'] == 'failed'],
        images=entries)
