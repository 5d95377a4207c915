"""Improved precision and recall (Kynkaanniemi et al. 2019) with k-nearest-neighbour balls, k=3.

A real-feature manifold is the union of balls centred on each real sample with radius equal to the
distance to its k-th nearest real neighbour (Eq. 1-2 of the paper); precision is the fraction of
generated samples inside it, recall the fraction of real samples inside the generated manifold.
Distances use torch.cdist in float32 over row/column blocks, as NVIDIA's and torch-fidelity's code do.
"""

import numpy as np
import torch


def _kth_radii(feats: torch.Tensor, k: int, block: int) -> torch.Tensor:
    """Distance from each row to its k-th nearest other row (the row itself is the 1st, at distance 0)."""
    radii = []
    for rows in feats.split(block):
        d = torch.cat([torch.cdist(rows, cols) for cols in feats.split(block)], dim=1)
        radii.append(d.kthvalue(k + 1, dim=1).values)
    return torch.cat(radii)


def _inside(queries: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor, block: int) -> torch.Tensor:
    """For each query: is it within radii[j] of some centre j?"""
    out = []
    for rows in queries.split(block):
        hit = torch.zeros(len(rows), dtype=torch.bool, device=rows.device)
        for cols, rad in zip(centres.split(block), radii.split(block)):
            hit |= (torch.cdist(rows, cols) <= rad.unsqueeze(0)).any(dim=1)
        out.append(hit)
    return torch.cat(out)


def precision_recall(feats_real, feats_fake, k: int = 3, block: int = 10000, device='cpu'):
    """(precision, recall) from feature sets [N,D]; both sets need more than k rows."""
    real = torch.as_tensor(np.asarray(feats_real), dtype=torch.float32, device=device)
    fake = torch.as_tensor(np.asarray(feats_fake), dtype=torch.float32, device=device)
    assert real.ndim == 2 and fake.ndim == 2 and real.shape[1] == fake.shape[1], (real.shape, fake.shape)
    for name, f in (('real', real), ('generated', fake)):
        if len(f) <= k:
            raise ValueError(f'precision/recall with k={k} needs more than {k} {name} images; got {len(f)}')
    precision = _inside(fake, real, _kth_radii(real, k, block), block).float().mean().item()
    recall = _inside(real, fake, _kth_radii(fake, k, block), block).float().mean().item()
    return float(precision), float(recall)
