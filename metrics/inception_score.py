"""Inception Score (Salimans et al. 2016): exp(E_x KL(p(y|x) || p(y))), mean and std over splits.

p(y|x) is the softmax of the Inception logits *without* the output bias, as the original TF code
computes it (NVIDIA's `no_output_bias=True`, torch-fidelity's 'logits_unbiased'). torch-fidelity shuffles
the samples with RandomState(seed) before splitting; NVIDIA does not (`shuffle=False`).
"""

import numpy as np
import torch

_TINY = torch.finfo(torch.float64).tiny


def inception_score(logits=None, probs=None, splits: int = 10, shuffle: bool = True, seed: int = 2020):
    """(mean, std) of the IS over `splits` equal parts; pass logits [N,1008] or probabilities [N,1008]."""
    if (logits is None) == (probs is None):
        raise ValueError('pass exactly one of logits or probs')
    x = torch.as_tensor(np.asarray(logits if logits is not None else probs), dtype=torch.float64)
    assert x.ndim == 2, f'expected [N,classes], got {list(x.shape)}'
    n = x.shape[0]
    if n < splits:
        raise ValueError(f'Inception Score with {splits} splits needs at least {splits} images; got {n}')
    if shuffle:
        x = x[torch.from_numpy(np.random.RandomState(seed).permutation(n))]
    if logits is not None:
        p, log_p = x.softmax(dim=1), x.log_softmax(dim=1)
    else:
        p = x
        log_p = torch.log(x.clamp_min(_TINY))  # p log p -> 0 as p -> 0; the clamp only avoids 0 * -inf
    scores = []
    for i in range(splits):
        sl = slice(i * n // splits, (i + 1) * n // splits)
        q = p[sl].mean(dim=0, keepdim=True)                      # marginal p(y) of the split
        kl = (p[sl] * (log_p[sl] - q.clamp_min(_TINY).log())).sum(dim=1).mean()
        scores.append(kl.exp().item())
    return float(np.mean(scores)), float(np.std(scores))
