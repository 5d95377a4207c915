"""A synthetic training set the project can make on its own: coloured shapes on soft backgrounds.

Used by the tests and by the FID-curve experiment (`docs/training_curve.md`), where no real
portraits can be downloaded. Image k depends only on (seed, k).
"""

from pathlib import Path

import numpy as np
import PIL.Image
import PIL.ImageDraw

SHAPES = ('ellipse', 'rectangle', 'triangle')


def shape_image(rng, resolution):
    """One RGB uint8 [H, W, 3] image: a vertical two-colour gradient and 1-3 filled shapes."""
    top, bottom = rng.randint(0, 256, size=3), rng.randint(0, 256, size=3)
    t = np.linspace(0, 1, resolution)[:, None, None]
    bg = (top * (1 - t) + bottom * t).repeat(resolution, axis=1).astype(np.uint8)  # [H, W, 3]
    img = PIL.Image.fromarray(bg, 'RGB')
    draw = PIL.ImageDraw.Draw(img)
    for _ in range(rng.randint(1, 4)):
        kind = SHAPES[rng.randint(len(SHAPES))]
        size = rng.uniform(0.25, 0.6) * resolution
        cx, cy = rng.uniform(size / 2, resolution - size / 2, size=2)
        box = [cx - size / 2, cy - size / 2, cx + size / 2, cy + size / 2]
        color = tuple(int(v) for v in rng.randint(0, 256, size=3))
        if kind == 'ellipse':
            draw.ellipse(box, fill=color)
        elif kind == 'rectangle':
            draw.rectangle(box, fill=color)
        else:
            draw.polygon([(cx, box[1]), (box[0], box[3]), (box[2], box[3])], fill=color)
    return np.asarray(img)


def make_shapes_dataset(dest, num_images=1000, resolution=32, seed=0):
    """Write `num_images` PNGs (img00000000.png, ...) into folder `dest`; returns the folder."""
    if resolution < 8 or resolution & (resolution - 1):
        raise ValueError(f'resolution must be a power of two >= 8, got {resolution}')
    if num_images < 1:
        raise ValueError(f'num_images must be at least 1, got {num_images}')
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    for k in range(num_images):
        rng = np.random.RandomState([seed, k])
        PIL.Image.fromarray(shape_image(rng, resolution)).save(dest / f'img{k:08d}.png')
    return dest
