"""Synthetic portraits the project can make on its own: procedurally drawn faces, two renderings.

The demo generators (`docs/demo_networks.md`) are trained on these so that the photo -> portrait
job works offline. Every face is a `PortraitAttributes` drawn from `np.random.RandomState([seed, k])`;
`render_portrait` draws it as a soft-shaded `photo` or as a flat, inked `toon`. Both renderings of
image k show the same face, which is what a photo -> toon fine-tune needs. The drawing itself lives
in `datasets/portrait_render.py`.
"""

import dataclasses
from pathlib import Path

import numpy as np
import PIL.Image

from pstyle.datasets import portrait_render

STYLES = ('photo', 'toon')
HEAD_SHAPES = ('oval', 'round', 'long', 'square', 'heart')
HAIR_STYLES = ('bald', 'short', 'long', 'bob', 'curly', 'bun')
BROW_STYLES = ('thin', 'thick', 'arched')
NOSE_STYLES = ('button', 'long', 'wide')
GLASSES = ('none', 'round', 'square')
FACIAL_HAIR = ('none', 'moustache', 'beard')
NECKLINES = ('round', 'v')
BACKGROUNDS = ('flat', 'vertical', 'radial')

# Light to dark skin; a tone is a random point on this polyline, so every shade between occurs.
SKIN_TONES = np.array([[255, 224, 200], [241, 194, 160], [224, 172, 130], [198, 134, 96],
                       [160, 100, 66], [112, 68, 42], [74, 46, 30]], dtype=np.float64)
HAIR_COLORS = np.array([[24, 20, 18], [60, 40, 28], [105, 70, 42], [150, 80, 40],
                        [222, 186, 110], [190, 75, 30], [150, 150, 150], [232, 228, 220]], dtype=np.float64)
HAIR_COLOR_P = [0.24, 0.2, 0.14, 0.1, 0.12, 0.08, 0.07, 0.05]
EYE_COLORS = np.array([[70, 45, 25], [40, 30, 20], [60, 110, 160], [80, 120, 70], [120, 100, 60]], dtype=np.float64)


@dataclasses.dataclass(frozen=True)
class PortraitAttributes:
    """One face. Lengths are in head half-widths (head width = 2), angles in degrees, colours RGB 0-255."""
    head_shape:   str       # HEAD_SHAPES
    head_size:    float     # Head half-width as a fraction of the image width.
    head_aspect:  float     # Head half-height / half-width.
    squareness:   float     # 0 = ellipse, 1 = rounded box (jaw and temples).
    jaw_taper:    float     # How much the lower face narrows towards the chin.
    skin:         tuple     # RGB.
    hair_style:   str       # HAIR_STYLES
    hair_color:   tuple     # RGB.
    hair_length:  float     # Extra length below the chin for 'long' hair.
    hair_part:    float     # Horizontal position of the parting (-0.5..0.5).
    eye_color:    tuple     # Iris RGB.
    eye_size:     float     # Eye half-width.
    eye_open:     float     # Eye half-height / half-width.
    eye_spacing:  float     # Distance of each eye from the centre line.
    eye_height:   float     # Vertical position of the eye line (positive = down).
    gaze:         tuple     # Iris offset (x, y) in -1..1 of its free travel.
    brow_style:   str       # BROW_STYLES
    brow_tilt:    float     # Outer ends up (> 0) or down (< 0).
    nose_style:   str       # NOSE_STYLES
    nose_size:    float     # Scale of the nose.
    mouth_width:  float     # Mouth half-width.
    smile:        float     # -0.4 (frown) .. 1 (broad smile).
    mouth_open:   bool      # Open smile showing teeth.
    lip_color:    tuple     # RGB.
    glasses:      str       # GLASSES
    glasses_color: tuple    # RGB.
    facial_hair:  str       # FACIAL_HAIR
    shirt_color:  tuple     # RGB.
    neckline:     str       # NECKLINES
    background:   str       # BACKGROUNDS
    bg_colors:    tuple     # Two RGB colours (top/inner, bottom/outer).
    shift:        tuple     # Head centre offset (x, y), fraction of the image.
    tilt:         float     # Head roll in degrees.
    texture_seed: int       # Seeds the fine texture (skin grain, hair strands, paper).


def _rgb(c):
    return tuple(int(round(x)) for x in np.clip(c, 0, 255))


def _pick(rng, options, p=None):
    return options[rng.choice(len(options), p=p)]


def _random_color(rng, lo=30, hi=230):
    return _rgb(rng.uniform(lo, hi, size=3))


def sample_attributes(rng) -> PortraitAttributes:
    """Draw every attribute independently from `rng` (a np.random.RandomState)."""
    t = rng.uniform(0, len(SKIN_TONES) - 1)
    i = min(int(t), len(SKIN_TONES) - 2)
    skin = SKIN_TONES[i] + (t - i) * (SKIN_TONES[i + 1] - SKIN_TONES[i])
    shape = _pick(rng, HEAD_SHAPES)
    aspect = {'round': 1.12, 'long': 1.42}.get(shape, 1.28) + rng.uniform(-0.06, 0.06)
    hair = HAIR_COLORS[rng.choice(len(HAIR_COLORS), p=HAIR_COLOR_P)] * rng.uniform(0.85, 1.15, size=3)
    if rng.uniform() < 0.06:    # Dyed hair, now and then.
        hair = rng.uniform(40, 230, size=3)
    lips = skin * 0.8 + np.array([60, 0, 10]) * rng.uniform(0.3, 1.0)
    return PortraitAttributes(
        head_shape=shape, head_size=rng.uniform(0.15, 0.2), head_aspect=aspect,
        squareness={'square': 0.8, 'heart': 0.1}.get(shape, 0.0) + rng.uniform(0, 0.15),
        jaw_taper={'heart': 0.4, 'square': 0.05}.get(shape, 0.18) + rng.uniform(-0.05, 0.05),
        skin=_rgb(skin), hair_style=_pick(rng, HAIR_STYLES, p=[0.1, 0.22, 0.22, 0.16, 0.15, 0.15]),
        hair_color=_rgb(hair), hair_length=rng.uniform(0.4, 1.6), hair_part=rng.uniform(-0.5, 0.5),
        eye_color=_rgb(_pick(rng, EYE_COLORS) * rng.uniform(0.8, 1.2)),
        eye_size=rng.uniform(0.18, 0.25), eye_open=rng.uniform(0.5, 0.8),
        eye_spacing=rng.uniform(0.36, 0.46), eye_height=rng.uniform(-0.08, 0.06),
        gaze=(rng.uniform(-1, 1), rng.uniform(-0.5, 0.5)),
        brow_style=_pick(rng, BROW_STYLES), brow_tilt=rng.uniform(-0.12, 0.12),
        nose_style=_pick(rng, NOSE_STYLES), nose_size=rng.uniform(0.8, 1.25),
        mouth_width=rng.uniform(0.22, 0.36), smile=rng.uniform(-0.4, 1.0),
        mouth_open=bool(rng.uniform() < 0.35), lip_color=_rgb(lips),
        glasses=_pick(rng, GLASSES, p=[0.65, 0.2, 0.15]),
        glasses_color=_rgb(_pick(rng, [[20, 20, 20], [90, 55, 30], [170, 30, 40], [190, 160, 80]])),
        facial_hair=_pick(rng, FACIAL_HAIR, p=[0.75, 0.1, 0.15]),
        shirt_color=_random_color(rng), neckline=_pick(rng, NECKLINES),
        background=_pick(rng, BACKGROUNDS), bg_colors=(_random_color(rng, 40, 250), _random_color(rng, 20, 240)),
        shift=(rng.uniform(-0.06, 0.06), rng.uniform(-0.04, 0.04)), tilt=rng.uniform(-12, 12),
        texture_seed=int(rng.randint(0, 2**31 - 1)))


def render_portrait(attrs: PortraitAttributes, style='photo', resolution=64):
    """Draw `attrs` as uint8 [resolution, resolution, 3]; `style` is 'photo' or 'toon'."""
    if style not in STYLES:
        raise ValueError(f"style must be one of {', '.join(STYLES)}, got {style!r}")
    if resolution < 16 or resolution & (resolution - 1):
        raise ValueError(f'resolution must be a power of two >= 16, got {resolution}')
    return portrait_render.render(attrs, style, resolution)


def portrait_image(seed, k, style='photo', resolution=64):
    """Image k of the set with this seed; it depends on nothing else (not on the dataset size)."""
    return render_portrait(sample_attributes(np.random.RandomState([seed, k])), style, resolution)


def make_portraits_dataset(dest, num_images=1000, resolution=64, seed=0, style='photo'):
    """Write `num_images` PNGs (img00000000.png, ...) into folder `dest`; returns the folder."""
    if num_images < 1:
        raise ValueError(f'num_images must be at least 1, got {num_images}')
    portrait_image(seed, 0, style, resolution)      # Validates style and resolution before any write.
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    for k in range(num_images):
        PIL.Image.fromarray(portrait_image(seed, k, style, resolution)).save(dest / f'img{k:08d}.png')
    return dest
