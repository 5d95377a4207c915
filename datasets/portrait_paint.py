"""The two paint styles of the synthetic portraits: `photo` (soft shading, texture, soft shadows) and
`toon` (flat posterized palette, cel shadows, ink outlines, paper texture).

Both take the same layers from `datasets/portrait_render.py`, so image k in the two styles has the
same shapes; only colours, shading and lines differ. Images are float [S, S, 3] in 0..1.
"""

import numpy as np
import PIL.Image
import PIL.ImageFilter

SKIN = ('neck', 'ears', 'head')
HAIR = ('hair_back', 'hair_locks', 'hair_front', 'facial_hair')
LIGHT = (-0.55, -0.45)      # Light comes from the upper left (head units per unit of shading).


def blur(mask, radius_px):
    """Gaussian blur of a [S, S] mask in 0..1 through PIL's 8-bit box blurs (the same on every machine)."""
    im = PIL.Image.fromarray(np.round(np.asarray(mask, np.float64) * 255).astype(np.uint8), 'L')
    return np.asarray(im.filter(PIL.ImageFilter.GaussianBlur(radius_px)), np.float64) / 255


def shift(arr, dx, dy):
    """Move a [S, S] array by whole pixels (right, down), filling with zeros."""
    out = np.zeros_like(arr)
    dx, dy, S = int(round(dx)), int(round(dy)), arr.shape[0]
    out[max(dy, 0):S + min(dy, 0), max(dx, 0):S + min(dx, 0)] = arr[max(-dy, 0):S - max(dy, 0), max(-dx, 0):S - max(dx, 0)]
    return out


def noise(rng, cells, S, aspect=1):
    """Smooth noise of [S, S] in about -1..1 from a [cells, cells * aspect] grid (bilinear, float)."""
    grid = rng.standard_normal([cells, cells * aspect]).astype(np.float32)
    return np.asarray(PIL.Image.fromarray(grid, 'F').resize((S, S), PIL.Image.Resampling.BILINEAR), np.float64)


def bbox(alpha):
    """Slices of the smallest box holding alpha > 0 (None when empty): paint only where a layer is."""
    rows, cols = np.flatnonzero(alpha.any(1)), np.flatnonzero(alpha.any(0))
    if not len(rows):
        return None
    return slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)


def _union(lays, names):
    out = np.zeros(lays[0][1].shape, bool)
    for name, mask, _ in lays:
        if name in names:
            out |= mask
    return out


def _first(lays, name):
    return next(m for n, m, _ in lays if n == name)


def _interior(mask, f):
    """About 1 deep inside a shape, 0.5 on its edge: the roundness of skin, hair and cloth."""
    return blur(mask, 0.3 * f.unit_px)


def _directional(f):
    """Light falloff across the head: > 0 on the lit side."""
    return np.clip(LIGHT[0] * f.u + LIGHT[1] * f.v / 1.3, -1, 1) * 0.5


def _shade_fields(f, lays):
    """Per-group shading in about 0.6..1.1, shared by both styles (toon thresholds it into cels)."""
    skin, hair = _union(lays, SKIN), _union(lays, HAIR)
    light = _directional(f)
    return {'skin': 0.72 + 0.3 * _interior(skin, f) + 0.16 * light,
            'hair': 0.62 + 0.42 * _interior(hair, f) + 0.14 * light,
            'shirt': 0.7 + 0.3 * _interior(_first(lays, 'shirt'), f) + 0.1 * light}


def _group(name):
    return 'skin' if name in SKIN else 'hair' if name in HAIR else 'shirt' if name == 'shirt' else None


# ----------------------------------------------------------------------------
# Photo.

# Soft-edged features: blur radius in head units, and opacity.
_PHOTO_SOFT = {'cheeks': (0.08, 0.16), 'nose': (0.05, 0.35), 'nose_line': (0.02, 0.45), 'nostrils': (0.012, 0.7),
               'brow': (0.012, 0.9), 'lash': (0.008, 0.95), 'mouth_line': (0.01, 0.8), 'lens': (0.0, 0.12),
               'eye_light': (0.0, 0.85), 'facial_hair': (0.02, 0.92)}


def paint_photo(f, a, lays, bg, rng):
    S, unit = f.S, f.unit_px
    r = (f.x - 0.5) ** 2 + (f.y - 0.45) ** 2
    img = bg * (1 - 0.35 * r)[..., None]            # Lens vignette.
    figure = _union(lays, ('hair_back', 'neck', 'shirt', 'head'))
    img *= (1 - 0.3 * shift(blur(figure, 0.15 * unit), 0.12 * unit, 0.08 * unit))[..., None]    # Cast shadow.
    shades = _shade_fields(f, lays)
    grain = np.kron(rng.standard_normal([S // 4, S // 4]), np.ones([4, 4]))  # Survives the 4x box downsample.
    strands = noise(rng, 6, S, aspect=12).T * 0.6 + noise(rng, 24, S) * 0.4    # Vertical streaks.
    iris_tex = noise(rng, 16, S)
    sheen = np.clip(1 - ((f.v + 0.75 * a.head_aspect) / 0.25) ** 2, 0, 1) * np.clip(1 - (f.u / 0.9) ** 2, 0, 1)
    for name, mask, col in lays:
        if name in _PHOTO_SOFT:
            radius, opacity = _PHOTO_SOFT[name]
            alpha = (blur(mask, radius * unit) if radius else mask.astype(float)) * opacity
        else:
            alpha = mask.astype(float)
        box = bbox(alpha)
        if box is None:
            continue
        g, rgb = _group(name), col
        if g is not None:
            rgb = col * shades[g][box][..., None]
        if g == 'skin':
            rgb = rgb * (1 + 0.012 * grain[box])[..., None]
        elif g == 'hair':
            rgb = rgb * (1 + 0.16 * strands[box])[..., None] + (0.22 * sheen[box] * (0.4 + 0.6 * col.mean()))[..., None]
        elif name == 'iris':
            rgb = col * (1 + 0.15 * iris_tex[box])[..., None]
        a_ = alpha[box][..., None]
        img[box] = img[box] * (1 - a_) + rgb * a_
    return _photo_shadows(f, lays, img) * (1 + 0.02 * grain)[..., None]


def _photo_shadows(f, lays, img):
    """Soft shadows that one shape casts on another."""
    unit = f.unit_px
    head, neck, hair = _first(lays, 'head'), _first(lays, 'neck'), _first(lays, 'hair_front')
    chin = shift(blur(head, 0.12 * unit), 0, 0.18 * unit) * (neck & ~head)
    fringe = shift(blur(hair, 0.06 * unit), 0.02 * unit, 0.08 * unit) * (head & ~hair)
    lid = _union(lays, ('lash',))
    lid = shift(blur(lid, 0.03 * unit), 0, 0.04 * unit) * _union(lays, ('eye_white', 'iris'))
    dark = 1 - 0.45 * chin - 0.3 * fringe - 0.35 * lid
    return img * dark[..., None]


# ----------------------------------------------------------------------------
# Toon.

# Drawn only as ink (no fill, no outline of their own).
_TOON_INK = ('nose_line', 'nostrils', 'lash', 'mouth_line')
# Not drawn in the toon style: soft photo-only features.
_TOON_SKIP = ('cheeks', 'nose', 'lens', 'eye_light')
# Filled but not outlined: at 64 px an inked eye or tooth would be all ink (the lash line draws the eye).
_TOON_NO_EDGE = ('eye_white', 'iris', 'pupil', 'teeth')


def toon_color(col):
    """Flat palette: a little more saturation, then each channel snapped to 1/10 steps."""
    col = np.asarray(col, np.float64)
    col = np.clip(col.mean() + 1.3 * (col - col.mean()), 0, 1)
    return np.round(col * 10) / 10


def paint_toon(f, a, lays, bg, rng):
    S = f.S
    img = np.round(bg * 7) / 7                      # Posterized background bands.
    label = np.zeros([S, S], np.int32)
    shades = _shade_fields(f, lays)
    ink = np.zeros([S, S], bool)
    for i, (name, mask, col) in enumerate(lays):
        if name in _TOON_SKIP:
            continue
        if name in _TOON_INK:
            ink |= mask
            continue
        c = toon_color(col)
        rgb = np.broadcast_to(c, img.shape)
        g = _group(name)
        if g is not None:       # Two-tone cel shading: one crisp shadow colour.
            rgb = np.where((shades[g] < 0.8)[..., None], c * 0.8, c)
        img = np.where(mask[..., None], rgb, img)
        if name not in _TOON_NO_EDGE:
            label[mask] = i + 1
    light = _union(lays, ('eye_light',)) & (label > 0)
    img[light] = 1.0
    edges = np.zeros([S, S], bool)
    edges[:, 1:] |= label[:, 1:] != label[:, :-1]
    edges[1:, :] |= label[1:, :] != label[:-1, :]
    width = 2 * (S // 128) + 1      # About 1.25 output pixels at 64 and 128.
    if width >= 3:
        edges = np.asarray(PIL.Image.fromarray(edges.astype(np.uint8) * 255, 'L').filter(PIL.ImageFilter.MaxFilter(width))) > 0
    img = np.where((edges | ink)[..., None], np.array([0.12, 0.09, 0.11]), img)
    paper = 0.95 + 0.04 * noise(rng, 6, S) + 0.025 * noise(rng, S // 8, S)
    return (img * 0.94 + 0.06 * np.array([1.0, 0.96, 0.88])) * paper[..., None]
