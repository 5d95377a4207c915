"""Paper figures: photos (rows) x swap resolutions or style strengths (columns), labelled.

Each photo is aligned and projected once; every column re-renders the same latent with that
column's weights (a blended generator per column and/or mixed latents), so the columns differ only
in the knob being varied.
"""

import dataclasses
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from pstyle.models import render as gen
from pstyle.stylize import blend, layer_weights, pipeline
from pstyle.stylize import mix as mixing
from pstyle.torch_utils import folder_run

COLUMN_KINDS = ('swap-res', 'strength')


def parse_columns(text, kind):
    """'8,16,32' (swap-res: powers of two) or '0,0.5,1' (strength: floats in [0, 1]) -> list."""
    if kind not in COLUMN_KINDS:
        raise ValueError(f'column kind must be one of {", ".join(COLUMN_KINDS)}, got {kind!r}')
    parts = [p.strip() for p in str(text).split(',') if p.strip()]
    if not parts:
        raise ValueError(f'no columns in {text!r}')
    try:
        values = [int(p) for p in parts] if kind == 'swap-res' else [float(p) for p in parts]
    except ValueError:
        what = 'integers (resolutions)' if kind == 'swap-res' else 'numbers in [0, 1]'
        raise ValueError(f'--{kind} columns must be {what}, got {text!r}') from None
    return values


def column_specs(spec, kind, values):
    """[(label, WeightSpec)] for each column, varying one knob of `spec`."""
    out = []
    for v in values:
        if kind == 'swap-res':
            col = layer_weights.make_spec(swap_res=v, blend_width=spec.blend_width, style_strength=spec.style_strength,
                                          preserve_color=spec.preserve_color)
            out.append((f'swap {v}', col))
        else:
            col = dataclasses.replace(spec, style_strength=v)
            layer_weights.make_spec(**col.as_dict())  # Validates the strength.
            out.append((f'strength {v:g}', col))
    return out


def column_renderer(models, cfg, styles):
    """render(ws, noise, spec, G_a) for one photo and one column. Blends of the base A are cached per
    column; a photo's PTI-tuned A (see pipeline.Projector.tune) is blended for its own row."""
    cache = {}

    def render(ws, noise, spec, G_a=None):
        G_a = models.G_a if G_a is None else G_a
        weights = layer_weights.resolve(models.G_a, spec)
        key = tuple(weights)
        if G_a is not models.G_a:
            G = pipeline.photo_generators(models, G_a, weights, cfg.mapping)[1]
        else:
            if models.G_b is not None and key not in cache:
                cache[key] = blend.blend_generators(models.G_a, models.G_b, weights, mapping=cfg.mapping,
                                                    copy_tensors=False)  # Columns share the unblended tensors.
            G = cache.get(key, models.G_a)
        if styles is not None:
            ws = mixing.mix(ws, styles, weights)
        return pipeline.render_uint8(G, ws, noise, cfg.noise_mode)[0]
    return render


def _font(size):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: a fixed bitmap font.
        return ImageFont.load_default()


def labelled_grid(tiles, row_labels, col_labels):
    """uint8 tiles [R, C, H, W, 3] -> PIL image with a header row and a left column of labels."""
    R, C, H, W, _ = tiles.shape
    measure = ImageDraw.Draw(Image.new('RGB', (1, 1)))
    size = max(10, H // 10)
    while size > 6 and max(measure.textlength(t, font=_font(size)) for t in col_labels) > W - 2:
        size -= 1  # Small tiles (test networks): shrink the labels to fit their column.
    font = _font(size)
    left = max(int(measure.textlength(t, font=font)) for t in row_labels) + size
    top = size * 2
    canvas = Image.new('RGB', (left + C * W, top + R * H), 'white')
    canvas.paste(Image.fromarray(gen.image_grid(tiles.reshape(R * C, H, W, 3), R, C)), (left, top))
    draw = ImageDraw.Draw(canvas)
    for c, text in enumerate(col_labels):
        draw.text((left + c * W + W / 2, top / 2), text, fill='black', font=font, anchor='mm')
    for r, text in enumerate(row_labels):
        draw.text((size // 2, top + r * H + H / 2), text, fill='black', font=font, anchor='lm')
    return canvas


def stylize_grid(photos, out, cfg, kind, values, labels=True, log=print, progress=None):
    """Write the figure to `out` (+ `<out>.json`, a folder-run manifest rewritten after every photo) and
    return the record. progress: as `pipeline.stylize_photos`."""
    cfg.check()
    out = Path(out)
    items = folder_run.plan(photos)
    device = gen.pick_device(cfg.device)
    columns = column_specs(cfg.spec, kind, values)
    models = pipeline.load_models(cfg, device, blend_now=False)
    for _, spec in columns:
        layer_weights.resolve(models.G_a, spec)  # A column above the network's resolution fails now, not after projecting.
    styles, names = pipeline.load_styles(cfg, models, device, progress)
    if styles is not None and len(styles) != 1:
        raise ValueError(f'stylize-grid takes one style latent, got {len(styles)} ({", ".join(names)})')
    projector = pipeline.Projector(models.G_a, cfg, device, progress)
    col_labels = ['photo', 'projected'] + [label for label, _ in columns]
    figure = {}                             # tile_size, once the figure is made
    header = lambda: dict(**figure, config=cfg.as_dict(), columns=col_labels, column_kind=kind, values=values,
                          weights={label: layer_weights.resolve(models.G_a, spec) for label, spec in columns},
                          networks=dict(base=models.info['base'], styled=models.info['styled']), out=str(out),
                          rows=[e['name'] for e in run.entries.values() if e['status'] == 'ok'],
                          pti=dict(config=projector.pti_cfg.as_dict(), photos={e['name']: e['pti'] for e in run.entries.values() if 'pti' in e})
                          if projector.pti_cfg is not None else None)
    run = folder_run.FolderRun(items, out.with_name(out.name + '.json'), 'stylize-grid', header=header, log=log)
    render = column_renderer(models, cfg, styles)
    rows = []
    for start in range(0, len(items), cfg.batch_size):
        for item, prepared, (ws, noise, _) in pipeline.prepare_and_project(run, items[start:start + cfg.batch_size],
                                                                          models.G_a.img_resolution, projector, cfg):
            ok, row = run.attempt(item, _grid_row, run.entry(item), item, prepared[0], ws, noise, projector, render, columns, out,
                                  cfg.noise_mode, stage='render')
            if ok:
                rows.append(row)
                run.succeed(item)
    if not rows:
        raise ValueError('every photo failed: ' + '; '.join(f'{f["input"]}: {f["error"]}' for f in run.document()['failures']))
    tiles = np.stack([np.stack(r) for r in rows])
    row_labels = [e['name'] for e in run.entries.values() if e['status'] == 'ok']
    image = labelled_grid(tiles, row_labels, col_labels) if labels else Image.fromarray(
        gen.image_grid(tiles.reshape(-1, *tiles.shape[2:]), *tiles.shape[:2]))
    out.parent.mkdir(parents=True, exist_ok=True)
    image.save(out)
    figure['tile_size'] = int(tiles.shape[2])
    return run.save()


def _grid_row(entry, item, target, ws, noise, projector, render, columns, out, noise_mode):
    """[photo, A's (or A′'s) reconstruction, one tile per column] for one projected photo."""
    t0 = time.perf_counter()
    G_a, info = projector.tune(target, ws, noise, out.parent / f'{out.stem}_pti' / f'{item.name}.safetensors',
                               dict(name=item.source.name))
    if info is not None:
        entry['pti'] = dict(info, delta=f'{out.stem}_pti/{item.name}.safetensors')
    recon = pipeline.render_uint8(G_a, ws, noise, noise_mode)[0]
    row = [target, recon] + [render(ws, noise, spec, G_a) for _, spec in columns]
    entry.setdefault('seconds', {})['render'] = time.perf_counter() - t0
    return row
