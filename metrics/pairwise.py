"""Pairwise stylization metrics: LPIPS and identity between each photo and its stylized output.

Pairs are matched by file name without extension (`a/001.png` <-> `b/001.jpg`); files without a
partner are counted and named. A stylized image of another size than its photo is resized to the
photo's size (PIL bicubic) before LPIPS, and counted.
"""

import numpy as np
import torch
from PIL import Image

from .identity import IdentityAccumulator, build_embedder
from .inputs import InputError, pair_by_name
from .lpips_utils import load_lpips, lpips_distance


def _load_pair(photos, stylized, i, j):
    a, _ = photos.decode(i)
    b, _ = stylized.decode(j)
    resized = a.shape != b.shape
    if resized:
        b = np.asarray(Image.fromarray(b).resize((a.shape[1], a.shape[0]), Image.BICUBIC))
    to_t = lambda x: torch.from_numpy(np.array(x)).permute(2, 0, 1)[None]  # noqa: E731  (copy: PIL arrays are read-only)
    return to_t(a), to_t(b), resized


def pairwise_metrics(photos, stylized, metrics=('lpips', 'id'), lpips_net='vgg', identity_model='dlib',
                     arcface_weights=None, device='cpu', lpips_model=None, embedder=None, progress=False,
                     max_names=50):
    """Flat dict: lpips_mean/std; identity_* (the embedder's name and its numbers: dlib distance with the
    same-person threshold, or ArcFace cosine; counts and names of images without a face or with a detection
    rejected as not a face); counts of scored pairs and unmatched files."""
    pairs, only_a, only_b = pair_by_name(photos, stylized)
    if not pairs:
        raise InputError(f'no file names in common between {photos.path} and {stylized.path} '
                         f'(e.g. {photos.names[0]} vs {stylized.names[0]}); pairs are matched by name')
    info = {}
    lp = emb = None
    if 'lpips' in metrics:
        lp = lpips_model or load_lpips(lpips_net, device)
        info.update(getattr(lp, 'pstyle_info', {}))
    if 'id' in metrics:
        emb = embedder or build_embedder(identity_model, arcface_weights, device)
        info.update(emb.info)
    dists, n_resized = [], 0
    ident = IdentityAccumulator(getattr(emb, 'name', None), info.get('identity_face_check', 'none')) if emb else None
    from tqdm import tqdm
    for i, j in tqdm(pairs, desc='pairs', unit='pair', disable=not progress, leave=False):
        a, b, resized = _load_pair(photos, stylized, i, j)
        n_resized += resized
        if lp is not None:
            with torch.no_grad():
                dists.append(lpips_distance(lp, a, b).item())
        if emb is not None:
            embed = getattr(emb, 'embed_checked', emb.embed)  # FaceChecks say why an image is not scored.
            ea, fa = embed(a)
            eb, fb = embed(b)
            ident.add([photos.names[i]], ea, fa, eb, fb)
    out = dict(info=info, pairs_num=len(pairs), pairs_resized=n_resized,
               pairs_unmatched_photo=only_a[:max_names], pairs_unmatched_stylized=only_b[:max_names],
               pairs_num_unmatched_photo=len(only_a), pairs_num_unmatched_stylized=len(only_b))
    if lp is not None:
        out.update(lpips_mean=float(np.mean(dists)), lpips_std=float(np.std(dists)), lpips_num_pairs=len(dists))
    if emb is not None:
        out.update(ident.result(max_names))
    return out
