"""Perceptual path length (Karras et al. 2019, StyleGAN, Sec. 3; NVIDIA's stylegan2-ada-pytorch definition).

For a latent pair, the LPIPS distance between images at t and t + eps along the interpolation, divided
by eps^2 (Eq. 3-4 of the StyleGAN paper); the mean after dropping samples outside the 1st-99th
percentile. Defaults follow NVIDIA's `ppl2_wend`: W space, sampling 'end' (t = 0), eps = 1e-4, face
crop, images box-downsampled to 256. Distances use the `lpips` package's LPIPS-VGG, not NVIDIA's
TorchScript `vgg16.pt` (same network and calibration, different port), so expect small differences.

Sample i draws z0, z1, t (and a label) from RandomState([seed, i]): independent of batch size. Noise
buffers (`*.noise_const`) are re-drawn per batch as NVIDIA does, so results depend on batch size only
through noise.
"""

import copy

import numpy as np
import torch

from .distributed import gather_rows
from .inputs import InputError


def slerp(a, b, t):
    """Spherical interpolation of normalized vectors (for PPL in Z)."""
    a = a / a.norm(dim=-1, keepdim=True)
    b = b / b.norm(dim=-1, keepdim=True)
    d = (a * b).sum(dim=-1, keepdim=True)
    p = t * torch.acos(d.clamp(-1, 1))
    c = b - d * a
    c = c / c.norm(dim=-1, keepdim=True)
    out = a * torch.cos(p) + c * torch.sin(p)
    return out / out.norm(dim=-1, keepdim=True)


def _sample_latents(G, seed, indices, sampling):
    z0, z1, t, c = [], [], [], []
    for i in indices:
        rs = np.random.RandomState([seed, i])
        z0.append(rs.randn(G.z_dim))
        z1.append(rs.randn(G.z_dim))
        t.append(rs.uniform() if sampling == 'full' else 0.0)
        onehot = np.zeros(G.c_dim)
        if G.c_dim:
            onehot[rs.randint(G.c_dim)] = 1
        c.append(onehot)
    as_t = lambda a: torch.from_numpy(np.stack(a)).float()  # noqa: E731
    return as_t(z0), as_t(z1), torch.tensor(t, dtype=torch.float32), as_t(c)


def _face_crop_and_downsample(img, crop):
    if crop:  # NVIDIA's crop for FFHQ-aligned faces: rows 3/8..7/8, columns 2/8..6/8
        assert img.shape[2] == img.shape[3], 'face crop needs square images'
        c = img.shape[2] // 8
        img = img[:, :, c * 3:c * 7, c * 2:c * 6]
    factor = img.shape[2] // 256
    if factor > 1:  # box filter down to ~256 px, as NVIDIA's sampler does
        n, ch, h, w = img.shape
        img = img.reshape(n, ch, h // factor, factor, w // factor, factor).mean(dim=(3, 5))
    return img


@torch.no_grad()
def ppl_distances(G, lpips_model, indices, batch_index, seed=0, epsilon=1e-4, space='w', sampling='end',
                  crop=True, device='cpu'):
    """Scaled LPIPS distances [len(indices)] for one batch of samples."""
    z0, z1, t, c = (a.to(device) for a in _sample_latents(G, seed, indices, sampling))
    # Re-draw the constant noise for this batch from a seed-derived generator (NVIDIA: randn_like per batch).
    gen = torch.Generator(device='cpu').manual_seed(seed * 1_000_003 + batch_index)
    for name, buf in G.named_buffers():
        if name.endswith('.noise_const'):
            buf.copy_(torch.randn(buf.shape, generator=gen).to(buf.device))
    if space == 'w':
        w0, w1 = G.mapping(torch.cat([z0, z1]), torch.cat([c, c])).chunk(2)
        tt = t.view(-1, 1, 1)
        wt0, wt1 = w0.lerp(w1, tt), w0.lerp(w1, tt + epsilon)
    else:
        zt0, zt1 = slerp(z0, z1, t.unsqueeze(1)), slerp(z0, z1, t.unsqueeze(1) + epsilon)
        wt0, wt1 = G.mapping(torch.cat([zt0, zt1]), torch.cat([c, c])).chunk(2)
    img = G.synthesis(torch.cat([wt0, wt1]), noise_mode='const', force_fp32=True)
    if not torch.isfinite(img).all():  # NaN weights or latents: never a distance.
        raise InputError(f'the generator produced non-finite values (NaN or Inf) for PPL samples '
                         f'{indices[0]}..{indices[-1]}; no PPL is computed on them')
    img = _face_crop_and_downsample(img, crop)
    if img.shape[1] == 1:
        img = img.repeat(1, 3, 1, 1)
    # LPIPS takes [-1,1] directly; like NVIDIA we do not clamp or quantize the generator output here.
    d0, d1 = img.chunk(2)
    return lpips_model(d0, d1).reshape(-1).double().cpu() / epsilon ** 2


def filtered_mean(dist: np.ndarray) -> float:
    """Mean of the distances between the 1st and 99th percentiles (NVIDIA: lower/higher interpolation)."""
    lo = np.percentile(dist, 1, method='lower')
    hi = np.percentile(dist, 99, method='higher')
    return float(dist[(dist >= lo) & (dist <= hi)].mean())


def compute_ppl(G, lpips_model, num_samples=50000, epsilon=1e-4, space='w', sampling='end', crop=True,
                batch_size=2, seed=0, device='cpu', rank=0, world_size=1, progress=None):
    """PPL of generator G (NVIDIA's Generator API) with LPIPS model `lpips_model`; returns (ppl, distances)."""
    if space not in ('w', 'z') or sampling not in ('end', 'full'):
        raise ValueError(f'space must be w or z and sampling end or full; got {space!r}, {sampling!r}')
    if num_samples < 1:
        raise ValueError(f'PPL needs at least 1 sample; got {num_samples}')
    G = copy.deepcopy(G).eval().requires_grad_(False).to(device)     # noise buffers are overwritten
    dists, order = [], []
    step = batch_size * world_size
    for b, start in enumerate(range(0, num_samples, step)):
        idx = list(range(start + rank * batch_size, min(start + (rank + 1) * batch_size, num_samples)))
        if idx:
            # Batch k of a single process is batch (b, rank) here, so noise and results match any world size.
            dists.append(ppl_distances(G, lpips_model, idx, b * world_size + rank, seed, epsilon, space, sampling, crop, device))
            order += idx
        if progress is not None:
            progress.update(min(step, num_samples - start))
    dist = torch.cat(dists) if dists else torch.zeros(0, dtype=torch.float64)
    dist = gather_rows(dist.unsqueeze(1), torch.tensor(order), num_samples).squeeze(1).numpy()
    return filtered_mean(dist), dist
