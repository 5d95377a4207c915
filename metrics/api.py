"""Python API of the metrics; `pstyle metrics` is a thin shell over `compute_metrics`.

    out = compute_metrics(['fid', 'kid'], real='data/style', fake='out/stylized')
    out['fid'], out['kid_mean'], out['kid_std'], out['meta']['protocol']

Distribution metrics compare a real set with a generated one: fid, kid, pr (precision/recall), is
(generated set only), ppl (network only). Pairwise metrics compare each photo (--real) with its
stylized output (--fake) matched by file name: lpips, id. Every result carries the protocol, the
extractor and the sha256 of its weights, image counts, seeds and library versions.
"""

import datetime
import importlib.metadata
import json
import os
import time

import numpy as np
import torch

from . import stats_cache
from .distributed import gather_rows, rank_world
from .features import build_inception, build_vgg16
from .fid_kid import fid_from_features, kid_from_features
from .inception_score import inception_score
from .inputs import NetworkSource, iter_batches, open_images
from .precision_recall import precision_recall
from .resize import DEFAULT_PROTOCOL, check_protocol
from .lpips_utils import load_lpips
from .ppl import compute_ppl
from .pairwise import pairwise_metrics


METRICS = ('fid', 'kid', 'pr', 'is', 'ppl', 'lpips', 'id')
PAIRWISE = ('lpips', 'id')


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



def _check_request(metrics, real, fake, network):
    metrics = [m.strip().lower() for m in metrics if m.strip()]
    unknown = [m for m in metrics if m not in METRICS]
    if unknown or not metrics:
        raise ValueError(f'unknown metric(s) {", ".join(unknown) or "(none given)"}; choose from {", ".join(METRICS)}')
    if fake is not None and network is not None:
        raise ValueError('give either a generated image set (fake) or a network, not both')
    if 'ppl' in metrics and network is None:
        raise ValueError('ppl needs a network (--network)')
    if any(m in metrics for m in PAIRWISE) and (real is None or fake is None):
        raise ValueError('lpips and id compare photos (--real) with their stylized outputs (--fake) by file name')
    needs_gen = [m for m in metrics if m in ('fid', 'kid', 'pr', 'is')]
    if needs_gen and fake is None and network is None:
        raise ValueError(f'{", ".join(needs_gen)} need generated images: --fake PATH or --network FILE')
    needs_real = [m for m in metrics if m in ('fid', 'kid', 'pr')]
    if needs_real and real is None:
        raise ValueError(f'{", ".join(needs_real)} need real images: --real PATH')
    return metrics


def compute_metrics(metrics, real=None, fake=None, network=None, num_gen=50000, protocol=DEFAULT_PROTOCOL,
                    inception_weights=None, vgg_weights=None, seed=2020, gen_seeds=None, truncation_psi=1.0,
                    truncation_cutoff=None, class_idx=None, noise_mode='const', max_real=None,
                    kid_subsets=100, kid_subset_size=1000, is_splits=10, is_shuffle=True, pr_k=3,
                    ppl_samples=50000, ppl_epsilon=1e-4, ppl_space='w', ppl_sampling='end', ppl_crop=True,
                    ppl_batch_size=2, lpips_net='vgg', identity_model='dlib', arcface_weights=None,
                    batch_size=64, num_workers=None, device=None, use_cache=True, progress=False,
                    results_file=None, exact=False, inception=None, vgg=None, lpips_model=None, embedder=None):
    """Compute `metrics` and return a flat dict of values plus `meta` (the stamp); see the module docstring.

    inception / vgg / lpips_model / embedder: prebuilt models (tests, notebooks); built from files otherwise.
    """
    if isinstance(metrics, str):
        metrics = metrics.split(',')
    metrics = _check_request(metrics, real, fake, network)
    check_protocol(protocol)
    device = torch.device(device or ('cuda' if torch.cuda.is_available() else 'cpu'))
    t0 = time.time()
    out, records = {}, []
    meta = dict(protocol=protocol, seed=seed, versions=versions(),
                timestamp=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'))
    real_src = open_images(real) if real is not None else None
    if network is not None:
        seeds = list(gen_seeds) if gen_seeds is not None else list(range(int(num_gen)))
        gen_src = NetworkSource(network, seeds, truncation_psi, truncation_cutoff, class_idx, noise_mode, device)
    else:
        gen_src = open_images(fake) if fake is not None else None
    common = dict(batch_size=batch_size, num_workers=num_workers, use_cache=use_cache, progress=progress)

    dist_metrics = [m for m in metrics if m in ('fid', 'kid', 'is')]
    if dist_metrics:
        inception = inception or build_inception(inception_weights, protocol, device, exact=exact)
        if inception.protocol != protocol:
            raise ValueError(f'the Inception extractor was built for protocol {inception.protocol}, not {protocol}')
        meta.update(inception.info())
        vals, errors = _inception_metrics(dist_metrics, inception, real_src, gen_src, max_real, common, seed,
                                          kid_subsets, kid_subset_size, is_splits, is_shuffle)
        if errors:
            out['errors'] = errors  # The other metrics' values stay in the results (and the results file).
        for m, (v, extra) in vals.items():
            out.update(v)
            records.append(_record(m, v, meta, extra))
    if 'pr' in metrics:
        vgg = vgg or build_vgg16(vgg_weights, protocol, device)
        n_real = _count(real_src, max_real)
        fr = source_features(real_src, vgg, ('fc2',), max_items=max_real, desc='real vgg16', **common)['fc2']
        fg = source_features(gen_src, vgg, ('fc2',), desc='generated vgg16', **common)['fc2']
        p, r = precision_recall(fr, fg, k=pr_k, device=device)
        v = dict(precision=p, recall=r)
        out.update(v)
        records.append(_record('pr', v, dict(meta, **vgg.info()), dict(num_real=n_real, num_gen=len(fg), pr_k=pr_k)))
    if 'ppl' in metrics:
        lp = lpips_model or load_lpips('vgg', device)
        rank, world = rank_world()
        with _progress(ppl_samples, 'ppl', progress and rank == 0) as bar:
            ppl, _ = compute_ppl(gen_src.G, lp, ppl_samples, ppl_epsilon, ppl_space, ppl_sampling, ppl_crop,
                                 ppl_batch_size, seed, device, rank, world, bar)
        v = dict(ppl=ppl)
        out.update(v)
        extra = dict(num_gen=ppl_samples, ppl_epsilon=ppl_epsilon, ppl_space=ppl_space, ppl_sampling=ppl_sampling,
                     ppl_crop=ppl_crop, ppl_batch_size=ppl_batch_size, **getattr(lp, 'pstyle_info', {}))
        records.append(_record('ppl', v, meta, extra))
    pair = [m for m in metrics if m in PAIRWISE]
    if pair:
        res = pairwise_metrics(real_src, gen_src, pair, lpips_net=lpips_net, identity_model=identity_model,
                               arcface_weights=arcface_weights, device=device, lpips_model=lpips_model,
                               embedder=embedder, progress=progress)
        for m in pair:
            prefix = 'identity_' if m == 'id' else m + '_'  # The identity keys name their embedder.
            v = {k: res[k] for k in res if k.startswith(prefix)}
            out.update(v)
            records.append(_record(m, v, meta, dict(res['info'], **{k: res[k] for k in res if k.startswith('pairs_')})))
    if out.get('errors') and not records:  # Nothing computed that an error could cost: a plain error.
        raise ValueError('; '.join(out['errors'].values()))
    for name, src in (('real', real_src), ('generated', gen_src)):
        if src is not None:
            meta[name] = dict(src.describe(), notes=src.notes_summary())
    meta['total_time_s'] = round(time.time() - t0, 3)
    if results_file is not None and rank_world()[0] == 0:
        append_results(results_file, records, meta)
    out['meta'] = meta
    out['records'] = records
    return out


def _count(src, max_items):
    return len(src) if max_items is None else min(len(src), int(max_items))


def _inception_metrics(names, inception, real_src, gen_src, max_real, common, seed, kid_subsets,
                       kid_subset_size, is_splits, is_shuffle):
    cls_feat = 'probs' if 'probs' in inception.features else 'logits_unbiased'
    gen_feats = ['pool3'] if ('fid' in names or 'kid' in names) else []
    if 'is' in names:
        gen_feats.append(cls_feat)
    fg = source_features(gen_src, inception, tuple(gen_feats), desc='generated inception', **common)
    vals, errors, num_gen = {}, {}, len(gen_src)
    if 'fid' in names or 'kid' in names:
        fr = source_features(real_src, inception, ('pool3',), max_items=max_real, desc='real inception',
                             **common)['pool3']
        extra = dict(num_real=len(fr), num_gen=num_gen)
        if 'fid' in names:
            vals['fid'] = (dict(fid=fid_from_features(fg['pool3'], fr)), extra)
        if 'kid' in names:
            try:
                mean, std = kid_from_features(fg['pool3'], fr, kid_subsets, kid_subset_size, seed)
                vals['kid'] = (dict(kid_mean=mean, kid_std=std),
                               dict(extra, kid_subsets=kid_subsets, kid_subset_size=kid_subset_size))
            except ValueError as e:  # Too few images for the subsets: FID (and IS) computed from the same features stand.
                errors['kid'] = str(e)
    if 'is' in names:
        arg = {'probs' if cls_feat == 'probs' else 'logits': fg[cls_feat]}
        mean, std = inception_score(**arg, splits=is_splits, shuffle=is_shuffle, seed=seed)
        vals['is'] = (dict(is_mean=mean, is_std=std), dict(num_gen=num_gen, is_splits=is_splits, is_shuffle=is_shuffle))
    return vals, errors


def _record(metric, value, meta, extra):
    return dict(metric=metric, results=value, **{k: v for k, v in meta.items() if k != 'total_time_s'}, **extra)


def append_results(path, records, meta):
    """One JSON line per metric (NVIDIA's metric-*.jsonl style), appended."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    with open(path, 'a') as f:
        for r in records:
            r = dict(r, real=meta.get('real'), generated=meta.get('generated'), total_time_s=meta['total_time_s'])
            f.write(json.dumps(r, default=_json_default) + '\n')


def _json_default(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    return str(o)
