"""Python API of the metrics; `pstyle metrics` and the training loop are thin shells over `run_metrics`.

    out = run_metrics(['fid', 'kid'], real='data/style', fake='out/stylized', options=MetricOptions(seed=1))
    out['fid'], out['kid_mean'], out['kid_std'], out['meta']['protocol']

Metrics are looked up by name in `metrics.registry` (`register` adds one); `compute_metrics` takes the
`MetricOptions` fields as keyword arguments.

Distribution metrics compare a real set with a generated one: fid, kid, pr (precision/recall), is
(generated set only), ppl (network only). Pairwise metrics compare each photo (--real) with its
stylized output (--fake) matched by file name: lpips, id. Every result carries the protocol, the
extractor and the sha256 of its weights, image counts, seeds and library versions.
"""

import dataclasses
import datetime
import importlib.metadata
import json
import os
import re
import time

import numpy as np
import torch

from . import builtin  # noqa: F401 -- registers fid, kid, pr, is, ppl, lpips, id
from . import stats_cache
from .distributed import gather_rows, rank_world
from .features import build_inception, build_vgg16
from .inputs import InputError, NetworkSource, iter_batches, open_images
from .lpips_utils import load_lpips
from .pairwise import pairwise_metrics
from .registry import NEEDS, REGISTRY, MetricOptions, lookup, register  # noqa: F401 -- register: the API
from .resize import check_protocol
from pstyle.torch_utils.fileio import naming
from pstyle.torch_utils import misc


def versions() -> dict:
    def v(pkg):
        try:
            return importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            return None
    return dict(torch=torch.__version__, numpy=np.__version__, portrait_stylegan=v('portrait-stylegan'))


def _progress(total, desc, enabled):
    from tqdm import tqdm  # images/s and ETA come with tqdm's default format
    return tqdm(total=total, desc=desc, unit='img', disable=not enabled, dynamic_ncols=True, leave=False)


def source_features(source, extractor, features, batch_size=64, num_workers=None, max_items=None,
                    use_cache=True, progress=False, desc='features'):
    """{feature name: float32 [N,D]} for the first `max_items` items of a source, through the cache."""
    n = len(source) if max_items is None else min(len(source), int(max_items))
    key = None
    if use_cache and source.fingerprint is not None:
        fp = source.fingerprint()
        if fp is not None:
            key = stats_cache.cache_key(fp, extractor.info(), features, n)
            cached = stats_cache.load(key)
            if cached is not None and all(f in cached for f in features):
                return {f: cached[f] for f in features}
    rank, world = rank_world()
    mine = list(range(rank, n, world))
    rows, order = {f: [] for f in features}, []
    with _progress(n, desc, progress and rank == 0) as bar:
        for idx, images in iter_batches(source, mine, batch_size, num_workers):
            out = extractor(images, features)
            for f in features:
                if not bool(torch.isfinite(out[f]).all()):
                    raise InputError(f'the {getattr(extractor, "name", type(extractor).__name__)} extractor gave '
                                     f'non-finite {f} features (NaN or Inf) on items {idx[0]}..{idx[-1]} ({desc}); '
                                     f'no metric is computed on them')
                rows[f].append(out[f].cpu())
            order += idx
            bar.update(len(idx) * world)
    order_t = torch.tensor(order, dtype=torch.long)
    result = {}
    for f in features:
        local = torch.cat(rows[f]) if rows[f] else torch.zeros(0, 1)   # width agreed in gather_rows
        result[f] = gather_rows(local, order_t, n).numpy().astype(np.float32)
    if key is not None and rank == 0:
        stats_cache.save(key, result)
    return result



@dataclasses.dataclass
class Prebuilt:
    """Models built by the caller (tests, notebooks, the training loop); built from files otherwise."""
    inception: object = None
    vgg: object = None
    lpips_model: object = None
    embedder: object = None


class MetricContext:
    """What the metrics of one request share: inputs, extractors built once, features computed once."""

    def __init__(self, metrics, real_src, gen_src, opts, prebuilt, meta):
        self.metrics, self.real_src, self.gen_src, self.opts, self.meta = metrics, real_src, gen_src, opts, meta
        self.device = torch.device(opts.device or misc.default_device())
        self.rank, self.world = rank_world()
        self._models = {'inception': prebuilt.inception, 'vgg16': prebuilt.vgg}
        self._lpips, self._embedder = prebuilt.lpips_model, prebuilt.embedder
        self._features, self._pairwise = {}, None

    def extractor(self, name):
        """'inception' or 'vgg16', built once from the options' weight files unless given prebuilt."""
        if self._models[name] is None:
            o = self.opts
            self._models[name] = (build_inception(o.inception_weights, o.protocol, self.device, exact=o.exact)
                                  if name == 'inception' else build_vgg16(o.vgg_weights, o.protocol, self.device))
        return self._models[name]

    def check_inception(self):
        """The Inception's protocol must be the request's; its stamp goes into every record."""
        inception = self.extractor('inception')
        if inception.protocol != self.opts.protocol:
            raise ValueError(f'the Inception extractor was built for protocol {inception.protocol}, '
                             f'not {self.opts.protocol}')
        self.meta.update(inception.info())

    def features(self, extractor, which):
        """{feature: float32 [N,D]} of the 'real' or 'generated' set: every feature the request's metrics
        declared for this extractor and set, in one pass."""
        key = (extractor, which)
        if key not in self._features:
            ext = self.extractor(extractor)
            wanted = []
            for m in self.metrics:
                for e, w, f in m.features:
                    f = f(ext) if callable(f) else f
                    if (e, w) == key and f not in wanted:
                        wanted.append(f)
            src, max_items = (self.real_src, self.opts.max_real) if which == 'real' else (self.gen_src, None)
            self._features[key] = source_features(
                src, ext, tuple(wanted), batch_size=self.opts.batch_size, num_workers=self.opts.num_workers,
                max_items=max_items, use_cache=self.opts.use_cache, progress=self.opts.progress,
                desc=f'{which} {extractor}')
        return self._features[key]

    def lpips(self):
        if self._lpips is None:
            self._lpips = load_lpips('vgg', self.device)
        return self._lpips

    def pairwise(self):
        """Every pairwise value the request wants, from one pass over the matched pairs."""
        if self._pairwise is None:
            o = self.opts
            pair = [m.name for m in self.metrics if 'pairs' in m.needs]
            self._pairwise = pairwise_metrics(
                self.real_src, self.gen_src, pair, lpips_net=o.lpips_net, identity_model=o.identity_model,
                arcface_weights=o.arcface_weights, device=self.device, lpips_model=self._lpips,
                embedder=self._embedder, progress=o.progress)
        return self._pairwise

    def progress_bar(self, total, desc):
        return _progress(total, desc, self.opts.progress and self.rank == 0)


NEED_MESSAGES = dict(
    network='{} needs a network (--network)',
    pairs='lpips and id compare photos (--real) with their stylized outputs (--fake) by file name',
    generated='{} need generated images: --fake PATH or --network FILE',
    real='{} need real images: --real PATH')


def _check_request(metrics, real, fake, network):
    if fake is not None and network is not None:
        raise ValueError('give either a generated image set (fake) or a network, not both')
    given = dict(network=network is not None, pairs=real is not None and fake is not None,
                 generated=fake is not None or network is not None, real=real is not None)
    for need in NEEDS:
        missing = [m.name for m in metrics if need in m.needs and not given[need]]
        if missing:
            raise ValueError(NEED_MESSAGES[need].format(', '.join(missing)))


def run_metrics(metrics, real=None, fake=None, network=None, options: MetricOptions = None,
                prebuilt: Prebuilt = None) -> dict:
    """Compute the registered metrics named in `metrics` ('fid,kid' or a list; run in registry order) on
    real images (folder or zip), generated ones (`fake`) or a `network` (file or module); returns a flat
    dict of values plus `meta` (the stamp) and `records` (one per metric, also appended to
    `options.results_file`)."""
    opts = options or MetricOptions()
    selected = lookup(metrics)
    _check_request(selected, real, fake, network)
    check_protocol(opts.protocol)
    t0 = time.time()
    meta = dict(protocol=opts.protocol, seed=opts.seed, versions=versions(),
                timestamp=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'))
    real_src = open_images(real) if real is not None else None
    ctx = MetricContext(selected, real_src, None, opts, prebuilt or Prebuilt(), meta)
    if network is not None:
        seeds = list(opts.gen_seeds) if opts.gen_seeds is not None else list(range(int(opts.num_gen)))
        ctx.gen_src = NetworkSource(network, seeds, opts.truncation_psi, opts.truncation_cutoff, opts.class_idx,
                                    opts.noise_mode, ctx.device)
    else:
        ctx.gen_src = open_images(fake) if fake is not None else None
    if any(e == 'inception' for m in selected for e, _, _ in m.features):
        ctx.check_inception()
    out, records, errors = {}, [], {}
    for m in selected:
        try:
            values, extra = m.fn(ctx, opts)
        except InputError:
            raise  # Unreadable or empty inputs: no metric can be trusted.
        except ValueError as e:  # e.g. KID with too few images: the metrics computed before it still count.
            errors[m.name] = e
            continue
        out.update(values)
        records.append(_record(m.name, values, meta, extra))
    if errors and not records:  # Nothing computed that an error could cost: the error itself.
        raise next(iter(errors.values()))
    if errors:
        out['errors'] = {name: str(e) for name, e in errors.items()}
    for name, src in (('real', real_src), ('generated', ctx.gen_src)):
        if src is not None:
            meta[name] = dict(src.describe(), notes=src.notes_summary())
    meta['total_time_s'] = round(time.time() - t0, 3)
    out['meta'] = meta
    out['records'] = records
    if opts.results_file is not None and ctx.rank == 0:
        try:
            append_results(opts.results_file, records, meta)
        except OSError as e:
            raise ResultsWriteError(out, e) from e
    return out


class ResultsWriteError(OSError):
    """The metrics were computed but the results file could not be written; `results` holds them."""

    def __init__(self, results, error):
        super().__init__(error.errno, error.strerror, error.filename)
        self.results = results


def compute_metrics(metrics, real=None, fake=None, network=None, inception=None, vgg=None, lpips_model=None,
                    embedder=None, **options):
    """`run_metrics` with the `MetricOptions` fields as keyword arguments (an unknown one is a TypeError)."""
    return run_metrics(metrics, real, fake, network, MetricOptions(**options),
                       Prebuilt(inception, vgg, lpips_model, embedder))


def summary_lines(out, results_file=None):
    """The human-readable report of a `run_metrics` result: one line per value, then the protocol."""
    lines = [f'{k:24s} {v:.6g}' if isinstance(v, float) else f'{k:24s} {v}'
             for k, v in out.items() if k not in ('meta', 'records', 'errors')]
    appended = f'; results appended to {results_file}' if results_file is not None else ''
    return lines + [f'protocol {out["meta"]["protocol"]}{appended}']


def summary_json(out):
    """One JSON object: every value and the stamp."""
    values = {k: v for k, v in out.items() if k not in ('meta', 'records')}
    return json.dumps(dict(values, meta=out['meta']), default=str)  # `errors` too, when a metric failed


# NVIDIA's counted names: <metric><N>k[3][_full]; `_full` compares with every real image, otherwise with
# at most N. The `proxy` prefix swaps the Inception for fixed pixel features (training smoke runs).
COUNTED_RE = re.compile(r'(?P<proxy>proxy)?(?P<base>[a-z_]+?)(?P<n>\d+)k(?P<k>3)?(?P<full>_full)?')
PROXYABLE = ('fid',)


def parse_metric(name: str) -> dict:
    """'fid50k_full' -> dict(metrics=['fid'], num_gen=50000, max_real=None, proxy=False); which counted
    form a metric accepts is its registration's `counted`."""
    m = COUNTED_RE.fullmatch(name)
    metric = REGISTRY.get(m['base']) if m else None
    form = metric.counted if metric else None
    ok = form is not None and (form == 'pr') == bool(m['k']) and not (form == 'gen' and m['full']) \
        and (not m['proxy'] or m['base'] in PROXYABLE)
    if not ok:
        raise ValueError(f'unknown training metric {name!r}: use e.g. fid50k_full, fid50k, kid50k_full, '
                         f'pr50k3_full, is50k, proxyfid2k_full, or none')
    n = int(m['n']) * 1000
    full = form == 'gen' or bool(m['full'])
    return dict(metrics=[metric.name], num_gen=n, max_real=None if full else n, proxy=bool(m['proxy']))

def _record(metric, value, meta, extra):
    record = dict(metric=metric, results=value, **{k: v for k, v in meta.items() if k != 'total_time_s'})
    record.update(extra)   # an extractor's stamp in `extra` (pr: VGG16's) replaces the Inception's
    return record


def append_results(path, records, meta):
    """One JSON line per metric (NVIDIA's metric-*.jsonl style), appended."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    with naming(path), open(path, 'a') as f:
        for r in records:
            r = dict(r, real=meta.get('real'), generated=meta.get('generated'), total_time_s=meta['total_time_s'])
            f.write(json.dumps(r, default=_json_default) + '\n')


def _json_default(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    return str(o)
