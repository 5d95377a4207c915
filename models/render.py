"""Image generation: seeds, saved latents and style-mixing grids.

Seed k draws z from `numpy.random.RandomState(k)` exactly as NVIDIA's `generate.py` does, one
generator per image, so image k is identical at any batch size and matches the images users know.
"""

import collections.abc
import itertools
import re

import numpy as np
import torch
from pstyle.models import deltas, latents, wplus
from pstyle.torch_utils import cpu_features, misc
from pstyle.torch_utils.fileio import naming

PRECISIONS = ('fp32', 'bf16', 'fp16')


class SeedRange(collections.abc.Sequence):
    """The integers of a range spec, held as `range`s: `--seeds 0-1000000000` costs nothing until iterated."""

    def __init__(self, ranges):
        self.ranges = tuple(ranges)

    def __len__(self):
        return sum(len(r) for r in self.ranges)

    def __iter__(self):
        return itertools.chain.from_iterable(self.ranges)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        index = index + len(self) if index < 0 else index
        for r in self.ranges:
            if 0 <= index < len(r):
                return r[index]
            index -= len(r)
        raise IndexError('seed index out of range')

    def __eq__(self, other):
        return isinstance(other, (list, tuple, SeedRange)) and len(self) == len(other) and list(self) == list(other)

    def __repr__(self):
        return f'SeedRange({list(self.ranges)})'


def parse_range(text):
    """'0-3,7,10-11' -> SeedRange equal to [0, 1, 2, 3, 7, 10, 11] (lazy: ranges are never expanded)."""
    if isinstance(text, (list, tuple)):
        return [int(v) for v in text]
    values = []
    for part in str(text).split(','):
        part = part.strip()
        if not part:
            continue
        match = re.fullmatch(r'(-?\d+)\s*-\s*(-?\d+)', part)
        if match:
            lo, hi = int(match.group(1)), int(match.group(2))
            if hi < lo:
                raise ValueError(f'range "{part}" runs backwards')
            values.append(range(lo, hi + 1))
        elif re.fullmatch(r'-?\d+', part):
            values.append(range(int(part), int(part) + 1))
        else:
            raise ValueError(f'cannot parse "{part}" in "{text}": expected integers and ranges like 0-7,10')
    if not values:
        raise ValueError(f'no values in "{text}"')
    return SeedRange(values)


def pick_device(device=None):
    """'cuda' when available unless asked otherwise."""
    if device in (None, 'auto'):
        return torch.device(misc.default_device())
    try:
        picked = torch.device(device)
    except (RuntimeError, TypeError):  # torch's parser: one line for the user instead of its traceback
        raise ValueError(f'--device {device!r}: not a device (auto, cpu, cuda, cuda:1, ...)') from None
    if picked.type == 'cuda' and not torch.cuda.is_available():
        raise ValueError(f'--device {device}: no CUDA device is available here (use cpu or auto)')
    return picked


def compute_dtype(precision, device):
    """fp32 everywhere; bf16 is the fast CPU path (AMX), fp16 the CUDA one."""
    if precision not in PRECISIONS:
        raise ValueError(f'precision must be one of {PRECISIONS}, got {precision!r}')
    if precision == 'fp16' and device.type != 'cuda':
        raise ValueError('fp16 needs a CUDA device; on the CPU use --precision bf16')
    if precision == 'bf16' and device.type == 'cpu':
        cpu_features.warn_if_slow_bf16()
    return {'fp32': None, 'bf16': torch.bfloat16, 'fp16': torch.float16}[precision]


def class_labels(G, class_idx, n, device):
    """One-hot labels for a conditional G; an error when a label is missing or superfluous."""
    c = torch.zeros([n, G.c_dim], device=device)
    if G.c_dim == 0:
        if class_idx is not None:
            raise ValueError('this network is unconditional: drop --class')
        return c
    if class_idx is None:
        raise ValueError(f'this network is conditional ({G.c_dim} classes): pass --class')
    if not 0 <= class_idx < G.c_dim:
        raise ValueError(f'--class must be in [0, {G.c_dim - 1}], got {class_idx}')
    c[:, class_idx] = 1
    return c


def to_uint8(img):
    """[N, C, H, W] float in ~[-1, 1] -> [N, H, W, C] uint8 numpy, quantized as NVIDIA does."""
    img = (img.float() * 127.5 + 128).clamp(0, 255).to(torch.uint8)
    return img.permute(0, 2, 3, 1).cpu().numpy()


@torch.no_grad()
def synthesize(G, ws, noise_mode='const', precision='fp32', batch_size=8, noise=None):
    """W+ latents [N, num_ws, w_dim] -> images [N, C, H, W] float32 on the CPU, in batches, at a precision
    name (fp32, bf16, fp16); the network picks its execution order (`render` with fused_modconv=None)."""
    dtype = compute_dtype(precision, misc.device_of(G))
    return render(G, ws, noise, noise_mode, dtype=dtype, fused_modconv=None, batch_size=batch_size).cpu()


@torch.no_grad()
def seeds_to_ws(G, seeds, truncation_psi=1.0, truncation_cutoff=None, class_idx=None):
    """Seeds -> W+ [N, num_ws, w_dim] (mapping in fp32; it is cheap and sets the image identity)."""
    device = misc.device_of(G)
    z = misc.seed_latents(seeds, G.z_dim, device)
    c = class_labels(G, class_idx, len(seeds), device)
    return G.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff)


def generate_images(G, seeds, truncation_psi=1.0, truncation_cutoff=None, class_idx=None, noise_mode='const',
                    precision='fp32', batch_size=8, progress=False):
    """Yield `(seed, uint8 [H, W, C])` for each seed as it is made (seeds are read lazily, `batch_size` at a
    time, so nothing grows with their number); identical at any batch size."""
    bar = _progress(len(seeds) if hasattr(seeds, '__len__') else 0, progress)
    it = iter(seeds)
    while chunk := list(itertools.islice(it, batch_size)):
        ws = seeds_to_ws(G, chunk, truncation_psi, truncation_cutoff, class_idx)
        images = to_uint8(synthesize(G, ws, noise_mode=noise_mode, precision=precision, batch_size=batch_size))
        for seed, image in zip(chunk, images):
            yield seed, image
        bar.update(len(chunk))
    bar.close()


def _progress(total, enabled):
    from tqdm import tqdm
    return tqdm(total=total, unit='img', disable=not enabled or total < 2)


@torch.no_grad()
def render_projected(G, path, noise_mode='const', precision='fp32', batch_size=8, pti=False, network_sha256=None,
                     force=False):
    """(names, uint8 [N, H, W, C]) for saved latents; with `noise_mode='const'` the per-image noise maps
    that `pstyle project` optimised and saved are used, so the reconstructions come back exactly.
    With `pti`, image k is rendered by G plus its pivotal-tuning delta (models.deltas.delta_paths).
    Latents recorded for another network are refused unless `force` (`latents.check_network`)."""
    record = latents.load_projected(path, G)
    latents.check_network(record, path, deltas.weights_sha256(G), network_sha256, force)
    ws, names = record['ws'], record['names']
    noise = None
    if noise_mode == 'const' and str(path).endswith('.npz'):
        noise = latents.load_projected_noise(path, G)
    if pti:
        paths = deltas.delta_paths(path, record['stored_names'])
        images = [_render_ws(deltas.load_tuned_generator(G, paths[name]), ws[k:k + 1],
                             {n: v[k:k + 1] for n, v in noise.items()} if noise else None, noise_mode, precision, 1)
                  for k, name in enumerate(record['stored_names'])]
        return names, np.concatenate(images)
    return names, _render_ws(G, ws, noise, noise_mode, precision, batch_size)


def _render_ws(G, ws, noise, noise_mode, precision, batch_size):
    if noise is None:
        return to_uint8(synthesize(G, ws, noise_mode, precision, batch_size))
    dtype = compute_dtype(precision, misc.device_of(G))
    return to_uint8(render(G, ws, noise, noise_mode, dtype=dtype, batch_size=batch_size))


@torch.no_grad()
def style_mix_ws(G, row_seeds, col_seeds, col_styles, truncation_psi=1.0, class_idx=None):
    """W+ for a style-mixing grid: rows take the `col_styles` rows of W+ (a `wplus.select_rows` spec) from
    the column seed.

    Returns (ws_rows [R, num_ws, w_dim], ws_cols [C, ...], ws_mixed [R, C, num_ws, w_dim]).
    """
    col_styles = wplus.select_rows(G, col_styles)  # '0-6', 'coarse', 'res:4-8', ... or a list of indices
    ws_rows = seeds_to_ws(G, row_seeds, truncation_psi, class_idx=class_idx)
    ws_cols = seeds_to_ws(G, col_seeds, truncation_psi, class_idx=class_idx)
    mixed = ws_rows[:, None].repeat(1, len(col_seeds), 1, 1)  # [R, C, num_ws, w_dim]
    mixed[:, :, col_styles] = ws_cols[None, :, col_styles]
    return ws_rows, ws_cols, mixed


def image_grid(images, rows, cols):
    """uint8 [rows*cols, H, W, C] -> one uint8 [rows*H, cols*W, C] image."""
    images = np.asarray(images)
    n, h, w, ch = images.shape
    assert n == rows * cols, (n, rows, cols)
    return images.reshape(rows, cols, h, w, ch).transpose(0, 2, 1, 3, 4).reshape(rows * h, cols * w, ch)


def style_mix_grid(G, row_seeds, col_seeds, col_styles, truncation_psi=1.0, class_idx=None,
                   noise_mode='const', precision='fp32', batch_size=8):
    """The classic StyleGAN figure: a blank corner, column seeds on top, row seeds on the left,
    and each cell = row seed with `col_styles` from the column seed. uint8 [H, W, C]."""
    ws_rows, ws_cols, mixed = style_mix_ws(G, row_seeds, col_seeds, col_styles, truncation_psi, class_idx)
    R, C = len(row_seeds), len(col_seeds)
    render = lambda ws: to_uint8(synthesize(G, ws, noise_mode, precision, batch_size))
    top = render(ws_cols)
    left = render(ws_rows)
    cells = render(mixed.reshape(R * C, G.num_ws, G.w_dim)).reshape(R, C, *top.shape[1:])
    blank = np.full_like(top[0], 255)
    tiles = [blank, *top]
    for r in range(R):
        tiles += [left[r], *cells[r]]
    return image_grid(np.stack(tiles), R + 1, C + 1)


def save_image(array, path):
    from PIL import Image
    array = np.asarray(array)
    mode = 'L' if array.shape[-1] == 1 else 'RGB'
    with naming(path):  # A full disk names the image, not just ENOSPC.
        Image.fromarray(array[..., 0] if mode == 'L' else array, mode).save(path)


def noise_inputs(noise):
    """{'synthesis.b8.conv0': [N, 1, r, r], ...} (our saved layout) -> G.synthesis's `noise_inputs` argument."""
    return {name[len('synthesis.'):]: maps for name, maps in noise.items()} if noise else None


@torch.no_grad()
def render(G, ws, noise=None, noise_mode='const', dtype=None, fused_modconv=False, batch_size=None):
    """W+ [N, num_ws, w_dim] (+ per-image noise {layer: [N, 1, r, r]}) -> float images [N, C, H, W]."""
    device = misc.device_of(G)
    ws = torch.as_tensor(ws, dtype=torch.float32)
    misc.assert_shape(ws, [None, G.num_ws, G.w_dim])
    if not torch.isfinite(ws).all():
        raise ValueError('the latents contain NaN or Inf: nothing to render (a diverged projection or a bad file?)')
    batch_size = batch_size or max(1, ws.shape[0])
    out = []
    for start in range(0, ws.shape[0], batch_size):
        sl = slice(start, start + batch_size)
        sub = {k: v[sl].to(device, torch.float32) for k, v in noise.items()} if noise else None
        img = G.synthesis(ws[sl].to(device), noise_mode=noise_mode, dtype=dtype, fused_modconv=fused_modconv,
                          noise_inputs=noise_inputs(sub))
        out.append(img.float())
    return torch.cat(out)
