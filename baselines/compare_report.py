"""The figure and the table of `pstyle compare`, made from the methods' folder-run manifests.

Figure: rows = photos, columns = the photo, then each method's output (one column per style where a method
writes one image per style); a photo a method failed on gets a grey tile. Table (Markdown, CSV, JSON), one
row per method output kind:
- KID (and FID) of the outputs to a style set, through `metrics.api.run_metrics` (the code, thresholds and
  messages of `pstyle metrics`; the KID subset size is min(1000, outputs, style set) unless given);
- LPIPS and identity of each output to its photo, through `stylize.photo_metrics.PhotoMetrics` (what
  `pstyle stylize` records; an output of another size is resized to the photo's first, and the record says so);
- seconds per photo, from the method's own manifest (model loading excluded; `wall_seconds` includes it).
A number that cannot be computed (no weights, too few images) is None, with the reason in `notes`.
"""

import csv
import io
import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from pstyle.metrics.api import MetricOptions, Prebuilt, run_metrics
from pstyle.metrics.features import build_inception
from pstyle.metrics.inputs import open_images
from pstyle.projectors.image_io import load_image
from pstyle.stylize import files
from pstyle.stylize.grid import labelled_grid
from pstyle.stylize.photo_metrics import PhotoMetrics
from pstyle.torch_utils.folder_run import plan

FAILED_GREY = 200           # The tile of a photo a method failed on.
MAX_TILE = 512
KID_MAX_SUBSET = 1000       # `pstyle metrics`' default subset size.


def method_outputs(manifest):
    """{variant: {photo name: output file relative to the method's folder}}; variant None = one output per
    photo, else the style's name (`<stem>-<style>.png`)."""
    out = {}
    for entry in manifest['items']:
        if entry['status'] != 'ok':
            continue
        if 'portraits' in entry:  # The stylize pipeline: its portraits (aligned/, projected/ are intermediate).
            images = [p['image'] for p in entry['portraits'].values()]
        else:
            images = [p for p in entry['outputs'] if p.lower().endswith('.png')]
        for image in images:
            stem, name = Path(image).stem, entry['name']
            variant = None if stem == name else stem[len(name) + 1:]
            out.setdefault(variant, {})[name] = image
    return out


def seconds_per_photo(manifest):
    """The method's own per-photo time: baselines record it; the stylize pipeline records seconds per stage."""
    if 'seconds_per_photo' in manifest:
        return manifest['seconds_per_photo']
    done = [sum(e['seconds'].values()) for e in manifest['items'] if e['status'] == 'ok' and e.get('seconds')]
    return float(np.mean(done)) if done else None


def read_photos(inputs):
    """([(name, uint8 [H, W, 3])], [failures]) of the methods' input photos, in folder-run order."""
    photos, failed = [], []
    for item in plan(inputs):
        try:
            photos.append((item.name, np.array(load_image(item.source))))
        except Exception as e:  # noqa: BLE001 -- an unreadable photo is recorded, as every method records it
            failed.append(dict(input=str(item.source), name=item.name, error=str(e)))
    return photos, failed


def as_photo_size(image, photo):
    """uint8 [h, w, 3] -> the photo's size (LANCZOS), and whether it was resized."""
    if image.shape == photo.shape:
        return image, False
    return np.array(Image.fromarray(image).resize((photo.shape[1], photo.shape[0]), Image.LANCZOS)), True


def fit_tile(image, tile):
    """uint8 [h, w, 3] -> [tile, tile, 3]: scaled to fit (LANCZOS), centred on white; unchanged at that size."""
    h, w = image.shape[:2]
    if (h, w) == (tile, tile):
        return image
    s = tile / max(h, w)
    small = Image.fromarray(image).resize((max(1, round(w * s)), max(1, round(h * s))), Image.LANCZOS)
    canvas = Image.new('RGB', (tile, tile), 'white')
    canvas.paste(small, ((tile - small.width) // 2, (tile - small.height) // 2))
    return np.asarray(canvas)


# ----------------------------------------------------------------------------
# Metrics.

class Distribution:
    """KID and FID of a set of outputs to the style set, with `pstyle metrics`' code and messages."""

    def __init__(self, cfg, device):
        self.cfg, self.device, self.inception, self.reason, self.num_style, self.stamp = cfg, device, None, None, None, None
        if cfg.style_set is None:
            self.reason = 'KID/FID not measured: no --style-set given'
            return
        self.num_style = len(open_images(cfg.style_set))  # An empty or missing style set stops here, named.
        try:
            self.inception = build_inception(cfg.inception_weights, cfg.protocol, device)
        except Exception as e:  # noqa: BLE001 -- no Inception weights here: no number, and the reason
            self.reason = f'KID/FID not measured: {e}'

    def __call__(self, paths):
        """{kid_mean, kid_std, kid_subset_size, kid_num_outputs, fid} (None where not computed) and notes."""
        values = dict(kid_mean=None, kid_std=None, kid_subset_size=None, kid_num_outputs=len(paths), fid=None)
        if self.inception is None:  # The reason in full is in the stamps (and above the Markdown table).
            return values, ['KID/FID not measured (see distribution_note)' if self.cfg.style_set else 'no --style-set: no KID/FID']
        subset = self.cfg.kid_subset_size or min(KID_MAX_SUBSET, len(paths), self.num_style)
        opts = MetricOptions(protocol=self.cfg.protocol, seed=self.cfg.seed, kid_subsets=self.cfg.kid_subsets,
                             kid_subset_size=subset, device=str(self.device))
        notes = []
        with tempfile.TemporaryDirectory() as tmp:
            for k, path in enumerate(paths):  # Only this method's outputs (its folder also holds other images).
                shutil.copyfile(path, Path(tmp) / f'{k:05d}{Path(path).suffix}')
            for metric in ('kid', 'fid'):
                try:
                    out = run_metrics([metric], real=self.cfg.style_set, fake=tmp, options=opts,
                                      prebuilt=Prebuilt(inception=self.inception))
                except ValueError as e:  # Too few images (the metrics' own thresholds and messages), mixed sizes
                    notes.append(f'{metric.upper()} not computed: {e}')
                    continue
                values.update({k: out[k] for k in ('kid_mean', 'kid_std', 'fid') if k in out})
                if metric == 'kid':
                    values['kid_subset_size'] = subset
                self.stamp = {k: v for k, v in out['meta'].items() if k not in ('timestamp', 'total_time_s', 'generated')}
        return values, notes


class Pairwise:
    """LPIPS and identity of each output to its photo (stylize.photo_metrics.PhotoMetrics)."""

    def __init__(self, cfg, device):
        self.scorer = PhotoMetrics(device, identity_kind=cfg.identity_model, arcface_weights=cfg.arcface_weights)
        self.key = 'identity_dlib_distance' if cfg.identity_model == 'dlib' else 'identity_arcface_cosine'

    def __call__(self, pairs):
        """pairs: [(photo uint8, output uint8)] -> (summary dict, per-pair dicts, notes)."""
        per, resized = [], 0
        for photo, image in pairs:
            image, was_resized = as_photo_size(image, photo)
            resized += was_resized
            per.append(self.scorer(photo, image[None])[0])
        lp = [p['lpips'] for p in per if p['lpips'] is not None]
        ident = [p[self.key] for p in per if p.get(self.key) is not None]
        summary = {'lpips_mean': _mean(lp), 'lpips_std': _std(lp), f'{self.key}_mean': _mean(ident),
                   f'{self.key}_std': _std(ident), 'identity_scored': len(ident)}
        if self.key == 'identity_dlib_distance':
            same = [p['same_person'] for p in per if p.get('same_person') is not None]
            summary['identity_dlib_same_person_rate'] = _mean(same)
        notes = [f'{resized} output(s) resized to the photo\'s size for LPIPS/identity'] if resized else []
        return summary, per, notes

    def columns(self):
        extra = ['identity_dlib_same_person_rate'] if self.key == 'identity_dlib_distance' else []
        return ['lpips_mean', 'lpips_std', f'{self.key}_mean', f'{self.key}_std', *extra, 'identity_scored']

    def stamp(self):
        return dict(available=self.scorer.available, notes=self.scorer.notes)


def _mean(v):
    return float(np.mean(v)) if v else None


def _std(v):
    return float(np.std(v)) if v else None


# ----------------------------------------------------------------------------
# The report.

def table_columns(pairwise):
    return ['method', 'style', 'photos_ok', 'photos_failed', 'kid_mean', 'kid_std', 'kid_subset_size', 'kid_num_outputs',
            'fid', *pairwise.columns(), 'seconds_per_photo', 'wall_seconds', 'notes']


def write_report(inputs, outdir, cfg, manifests, wall, prepared, alignment):
    """compare.png + compare.md/.csv/.json in `outdir`; returns the record written to compare.json."""
    outdir = Path(outdir)
    photos, unreadable = read_photos(inputs)
    distribution, pairwise = Distribution(cfg, prepared.device), Pairwise(cfg, prepared.device)
    photo_of = dict(photos)
    rows, per_photo, columns = [], {}, []
    if photos:
        values, notes = distribution([Path(p) for p in _photo_files(inputs, photo_of)])
        not_aligned = len(alignment['failures']) if alignment is not None else 0
        rows.append(dict(method='photo', style=None, photos_ok=len(photos), photos_failed=len(unreadable) + not_aligned, **values,
                         notes='; '.join(['the input photos themselves', *notes])))
    for method, manifest in manifests.items():
        root = outdir / method
        for variant, outputs in method_outputs(manifest).items():
            names = [n for n in outputs if n in photo_of]
            images = {n: np.array(load_image(root / outputs[n])) for n in names}
            values, notes = distribution([root / outputs[n] for n in names])
            summary, per, pair_notes = pairwise([(photo_of[n], images[n]) for n in names])
            label = method if variant is None else f'{method}:{variant}'
            per_photo[label] = {n: dict(p, image=f'{method}/{outputs[n]}') for n, p in zip(names, per)}
            rows.append(dict(method=method, style=variant, photos_ok=len(names), photos_failed=manifest['num_failed'],
                             **values, **summary, seconds_per_photo=seconds_per_photo(manifest), wall_seconds=wall[method],
                             notes='; '.join(notes + pair_notes)))
            columns.append((label, {n: images[n] for n in names}))
    header = table_columns(pairwise)
    rows = [{k: row.get(k) for k in header} for row in rows]
    figure = write_figure(outdir / 'compare.png', photos, columns)
    record = dict(format='pstyle-compare', version=1, config=cfg.as_dict(), photos=str(inputs),
                  num_style_images=distribution.num_style, columns=header, table=rows, per_photo=per_photo, figure=figure,
                  stamps=dict(distribution=distribution.stamp, distribution_note=distribution.reason,
                              pairwise=pairwise.stamp(), inputs=prepared.weights),
                  methods={m: dict(folder=m, manifest=f'{m}/manifest.json', num_ok=mf['num_ok'], num_failed=mf['num_failed'],
                                   failures=mf['failures']) for m, mf in manifests.items()},
                  unreadable_photos=unreadable, alignment=None if alignment is None else dict(
                      manifest='photos/manifest.json', num_ok=alignment['num_ok'], failures=alignment['failures']))
    files.write_json(outdir / 'compare.json', record)
    (outdir / 'compare.md').write_text(markdown(record), encoding='utf-8')
    (outdir / 'compare.csv').write_text(to_csv(header, rows), encoding='utf-8')
    return record


def _photo_files(inputs, photo_of):
    return [item.source for item in plan(inputs) if item.name in photo_of]


def write_figure(path, photos, columns):
    """Rows = photos, columns = 'photo' + each (method, style); returns the layout (tile, origin, labels)."""
    if not photos:
        return None
    tile = min(MAX_TILE, max(photos[0][1].shape[:2]))
    grey = np.full((tile, tile, 3), FAILED_GREY, np.uint8)
    tiles = np.stack([np.stack([fit_tile(photo, tile)] + [fit_tile(images[name], tile) if name in images else grey
                                                          for _, images in columns])
                      for name, photo in photos])                     # [R, C, tile, tile, 3]
    row_labels, col_labels = [name for name, _ in photos], ['photo'] + [label for label, _ in columns]
    image = labelled_grid(tiles, row_labels, col_labels)
    image.save(path)
    left, top = image.width - len(col_labels) * tile, image.height - len(row_labels) * tile
    return dict(file=Path(path).name, tile=tile, origin=[left, top], rows=row_labels, columns=col_labels)


def _fmt(v):
    if v is None:
        return ''
    if isinstance(v, float):
        return f'{v:.4g}'
    return str(v)


def to_csv(header, rows):
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator='\n')
    writer.writerow(header)
    for row in rows:
        writer.writerow(['' if row[k] is None else row[k] for k in header])
    return buf.getvalue()


def markdown(record):
    """The table in Markdown, preceded by what was measured how (style-set size, protocols, embedders)."""
    stamps, n = record['stamps'], record['num_style_images']
    dist = stamps['distribution'] or {}
    style_set = record['config']['style_set']
    kid = [f'- KID/FID: to the style set `{style_set}` ({n} images), protocol '
           f'{dist.get("protocol", record["config"]["protocol"])}, extractor {dist.get("extractor", "none")} '
           f'(sha256 {str(dist.get("extractor_sha256", ""))[:12] or "n/a"})'] if style_set else []  # Else: the note.
    lines = ['# pstyle compare', '', *kid,
             *([f'- distribution_note: {stamps["distribution_note"]}'] if stamps['distribution_note'] else []),
             f'- LPIPS and identity to the photo: {_describe(stamps["pairwise"]["available"])}',
             f'- precision of the network passes (and of the seconds per photo): {record["config"].get("precision", "fp32")}',
             *[f'- note: {note}' for note in stamps['pairwise']['notes']], '']
    header = record['columns']
    lines += ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
    lines += ['| ' + ' | '.join(_fmt(row[k]) for k in header) + ' |' for row in record['table']]
    return '\n'.join(lines) + '\n'


def _describe(available):
    """'lpips alex (backbone FILE), identity dlib_resnet_v1' from PhotoMetrics.available."""
    parts = []
    if 'lpips' in available:
        lp = available['lpips']
        parts.append(f'LPIPS {lp.get("net")} v{lp.get("lpips_version")} (backbone {lp.get("lpips_backbone")})')
    if 'identity' in available:
        parts.append(f'identity {available["identity"].get("identity_model")}')
    return ', '.join(parts) or 'none available'
