"""Drawing of `datasets/synthetic_portraits.py`: shapes as implicit functions, two paint styles.

Every part of the face is a boolean mask computed from per-pixel head coordinates (u, v), in head
half-widths, v pointing down, at SUPERSAMPLE x the output size; the image is box-downsampled at the
end, which anti-aliases every edge. Per-pixel maths is only + - * / and comparisons, the one cos/sin
(head tilt) is rounded to fixed point, and blurs and resizes are PIL's integer/IEEE code, so the
bytes do not depend on the machine's libm.
"""

import dataclasses

import numpy as np
import PIL.Image

from pstyle.datasets import portrait_paint

SUPERSAMPLE = 4
INK = np.array([0.13, 0.1, 0.12])


@dataclasses.dataclass
class Frame:
    """Pixel grids at the supersampled size S: head coordinates (u, v) and unrotated body ones."""
    S: int
    x: np.ndarray       # [S, S] image x in 0..1
    y: np.ndarray       # [S, S] image y in 0..1
    u: np.ndarray       # [S, S] head coordinates (rotated with the head)
    v: np.ndarray
    ub: np.ndarray      # [S, S] body coordinates (shifted only)
    vb: np.ndarray
    unit_px: float      # Pixels per head half-width at size S.


def _fixed(x):
    return round(float(x) * 2**20) / 2**20


def make_frame(a, S):
    y, x = (np.mgrid[0:S, 0:S] + 0.5) / S
    cx, cy = 0.5 + a.shift[0], 0.42 + a.shift[1]
    c, s = _fixed(np.cos(np.deg2rad(a.tilt))), _fixed(np.sin(np.deg2rad(a.tilt)))
    dx, dy = x - cx, y - cy
    u = (dx * c + dy * s) / a.head_size
    v = (-dx * s + dy * c) / a.head_size
    ub = (x - 0.5 - 0.5 * a.shift[0]) / a.head_size
    return Frame(S, x, y, u, v, ub, dy / a.head_size, a.head_size * S)


def _ellipse(u, v, cu, cv, ru, rv):
    du, dv = (u - cu) / ru, (v - cv) / rv
    return du * du + dv * dv <= 1


def _band(v, curve, half):
    return np.abs(v - curve) <= half


# ----------------------------------------------------------------------------
# Shapes.

def head_mask(f, a, grow=0.0):
    b = a.head_aspect + grow
    y = f.v / b
    taper = 1 - a.jaw_taper * np.clip(y, 0, None) ** 2    # Narrow only the lower half (jaw).
    x = f.u / ((1 + grow) * taper)
    x2, y2 = x * x, y * y
    q = 0.8 * a.squareness          # Blend circle -> superellipse (|x|^4 + |y|^4): a squarer jaw.
    return (1 - q) * (x2 + y2) + q * (x2 * x2 + y2 * y2) <= 1


def hair_masks(f, a):
    """(behind the head, in front of the head) masks of the hair style."""
    u, v, b, none = f.u, f.v, a.head_aspect, np.zeros_like(f.u, dtype=bool)
    st = a.hair_style
    if st == 'bald':
        return none, none
    thick = {'short': 0.14, 'bun': 0.08, 'curly': 0.2}.get(st, 0.17)
    cap = _ellipse(u, v, 0, -0.04, 1 + thick, b + 1.3 * thick)
    back = none
    if st == 'short':
        front = cap & (v < -0.5 * b + 0.55 * u * u - 0.15 * a.hair_part * u)
    elif st == 'bun':
        front = cap & (v < -0.62 * b + 0.55 * u * u)
        back = _ellipse(u, v, 0.25 * a.hair_part, -b - 0.22, 0.42, 0.38)
    elif st == 'curly':
        back, front = _curls(f, a)
    else:   # long / bob: a mass behind the head, a fringe or parting, locks framing the face.
        bottom = b + a.hair_length if st == 'long' else 0.45 + 0.3 * a.hair_length
        width = 1.22 if st == 'long' else 1.3
        back = _ellipse(u, v, 0, -0.04, width, b + 0.2) | ((np.abs(u) < width - 0.06 * v) & (v > 0) & (v < bottom))
        if st == 'long':
            hairline = -0.72 * b + 0.85 * np.abs(u - a.hair_part)
        else:
            hairline = -0.3 * b + 0.12 * u * u         # Straight fringe.
        locks = back & (np.abs(u) > 0.84 + 0.04 * v) & (v > -0.5)
        front = (cap & (v < hairline)) | locks
    return back, front


def _curls(f, a):
    u, v, b = f.u, f.v, a.head_aspect
    back = _ellipse(u, v, 0, -0.15, 1.18, b + 0.05)
    for i in range(15):     # Curl circles around the head from ear to ear, over the top.
        t = np.deg2rad(-200 + 220 * i / 14)
        back |= _ellipse(u, v, _fixed(1.18 * np.cos(t)), _fixed((b + 0.05) * np.sin(t)) - 0.15, 0.34, 0.34)
    front = _ellipse(u, v, 0, -0.04, 1.2, b + 0.26) & (v < -0.62 * b + 0.5 * u * u)
    for i in range(9):      # Curls along the hairline.
        cu = -0.9 + 1.8 * i / 8
        front |= _ellipse(u, v, cu, -0.62 * b + 0.5 * cu * cu, 0.16, 0.16)
    return back, front & (v < 0.2)


def body_masks(f, a):
    """(neck, shirt) masks."""
    b = a.head_aspect
    neck = (np.abs(f.u) < 0.42 + 0.1 * np.clip(f.v - b, 0, None)) & (f.v > 0) & (f.v < b + 1.6)
    top = b + 0.55
    shoulders = _ellipse(f.ub, f.vb, 0, top + 1.0, 2.5, 1.0) | ((f.vb > top + 1.0) & (np.abs(f.ub) < 2.5))
    if a.neckline == 'round':
        cut = _ellipse(f.ub, f.vb, 0, top, 0.6, 0.32)
    else:
        cut = (f.vb < top + 0.7 - 1.4 * np.abs(f.ub)) & (f.vb > top - 0.5)
    return neck, shoulders & ~cut


def eye_masks(f, a, side):
    """Masks of one eye (side = -1 left, 1 right): white, iris, pupil, highlight, lash line."""
    ex, ey, rx = side * a.eye_spacing, a.eye_height, a.eye_size
    ry = rx * a.eye_open
    x = (f.u - ex) / rx
    lid = ry * (1 - x * x)              # Almond: two parabolas meeting at the corners.
    white = (np.abs(x) <= 1) & (np.abs(f.v - ey) <= lid)
    r = 0.95 * ry
    ix, iy = ex + a.gaze[0] * 0.45 * rx, ey + a.gaze[1] * 0.3 * ry
    iris = white & _ellipse(f.u, f.v, ix, iy, r, r)
    pupil = white & _ellipse(f.u, f.v, ix, iy, 0.45 * r, 0.45 * r)
    light = white & _ellipse(f.u, f.v, ix - 0.35 * r, iy - 0.35 * r, 0.22 * r, 0.22 * r)
    lash = (np.abs(x) <= 1.1) & (f.v <= ey - lid + 0.012) & (f.v >= ey - lid - 0.045)
    return white, iris, pupil, light, lash


def brow_mask(f, a, side):
    ex = side * a.eye_spacing
    top = a.eye_height - a.eye_size * a.eye_open - 0.14
    half = 1.2 * a.eye_size
    x = (f.u - ex) / half
    arch = 0.09 if a.brow_style == 'arched' else 0.04
    curve = top - arch * (1 - x * x) - a.brow_tilt * x * side
    thick = {'thin': 0.022, 'thick': 0.05, 'arched': 0.032}[a.brow_style]
    taper = 1.15 - 0.45 * np.clip(x * side, 0, None)          # Thicker at the inner end.
    return (np.abs(x) <= 1) & _band(f.v, curve, thick * taper)


def nose_masks(f, a):
    """(shadow region, ink line, nostrils)."""
    ny, s = 0.3 * a.head_aspect + 0.5 * a.eye_height, a.nose_size
    rx, ry = {'button': (0.08, 0.06), 'long': (0.07, 0.055), 'wide': (0.13, 0.06)}[a.nose_style]
    rx, ry = rx * s, ry * s
    tip = _ellipse(f.u, f.v, 0, ny, rx, ry)
    ring = _ellipse(f.u, f.v, 0, ny, rx + 0.022, ry + 0.022) & ~tip & (f.v > ny)
    bridge_top = a.eye_height + (0.02 if a.nose_style == 'long' else 0.2)
    bridge = (np.abs(f.u - 0.05) < 0.035) & (f.v > bridge_top) & (f.v < ny)
    nostrils = _ellipse(f.u, f.v, -0.7 * rx, ny + 0.035, 0.028, 0.018) | _ellipse(f.u, f.v, 0.7 * rx, ny + 0.035, 0.028, 0.018)
    if a.nose_style == 'long':
        ring |= bridge & (f.u > 0.05)           # A long nose gets one side of its bridge inked.
    return tip | bridge, ring, nostrils


def mouth_masks(f, a):
    """(lips, inside, teeth, line) masks; `inside` and `teeth` are empty for a closed mouth."""
    my = 0.6 * a.head_aspect
    x = f.u / a.mouth_width
    arc = np.clip(1 - x * x, 0, None)
    inx = np.abs(x) <= 1
    top = my + 0.1 * a.smile * arc
    if a.mouth_open:
        bottom = top + (0.05 + 0.12 * max(a.smile, 0)) * arc
        inside = inx & (f.v > top) & (f.v < bottom)
        teeth = inside & (f.v < top + 0.05 * arc)
        lips = inx & (f.v > top - 0.045 * arc) & (f.v < bottom + 0.06 * arc) & ~inside
        line = np.zeros_like(inside)
    else:
        inside = teeth = np.zeros_like(inx)
        lips = inx & (f.v > top - 0.04 * arc - 0.006) & (f.v < top + 0.055 * arc + 0.006)
        line = inx & _band(f.v, top, 0.012)
    return lips, inside, teeth, line


def glasses_masks(f, a):
    """(frame, lenses) masks."""
    if a.glasses == 'none':
        none = np.zeros_like(f.u, dtype=bool)
        return none, none
    R, t, ey = a.eye_size + 0.09, 0.028, a.eye_height
    frame = np.zeros_like(f.u, dtype=bool)
    lens = np.zeros_like(frame)
    for side in (-1, 1):
        x, y = (f.u - side * a.eye_spacing) / R, (f.v - ey) / (0.8 * R)
        x2, y2 = x * x, y * y
        d = x2 + y2 if a.glasses == 'round' else 0.3 * (x2 + y2) + 0.7 * (x2 * x2 + y2 * y2)
        inner = d <= (1 - t / R) ** 2
        frame |= (d <= (1 + t / R) ** 2) & ~inner
        lens |= inner
    frame |= _band(f.v, ey - 0.03, t) & (np.abs(f.u) < a.eye_spacing - 0.9 * R)        # Bridge.
    frame |= _band(f.v, ey - 0.05, t) & (np.abs(f.u) > a.eye_spacing + 0.95 * R) & (np.abs(f.u) < 1.0)
    return frame, lens


def facial_hair_mask(f, a):
    if a.facial_hair == 'none':
        return np.zeros_like(f.u, dtype=bool)
    my, w = 0.6 * a.head_aspect, a.mouth_width
    tash = _ellipse(f.u, f.v, 0, my - 0.06, w + 0.07, 0.065) & (f.v < my - 0.01 + 0.04 * (f.u / w) ** 2)
    if a.facial_hair == 'moustache':
        return tash
    beard = head_mask(f, a, grow=0.05) & (f.v > my - 0.12 - 0.35 * f.u * f.u)     # Jaw line up to the ears.
    mouth_hole = _ellipse(f.u, f.v, 0, my + 0.05 * max(a.smile, 0), w + 0.02, 0.07 + 0.05 * a.mouth_open)
    return tash | (beard & ~mouth_hole)


def layers(f, a):
    """[(name, mask, rgb 0..1)] back to front; the painters add shading and texture by name."""
    skin, hair = np.array(a.skin) / 255, np.array(a.hair_color) / 255
    brow = 0.7 * hair + 0.3 * skin * 0.3
    hair_back, hair_front = hair_masks(f, a)
    neck, shirt = body_masks(f, a)
    ears = _ellipse(f.u, f.v, -0.97, a.eye_height + 0.15, 0.16, 0.27) | _ellipse(f.u, f.v, 0.97, a.eye_height + 0.15, 0.16, 0.27)
    nose, nose_line, nostrils = nose_masks(f, a)
    cheeks = _ellipse(f.u, f.v, -0.55, 0.35 * a.head_aspect, 0.2, 0.13) | _ellipse(f.u, f.v, 0.55, 0.35 * a.head_aspect, 0.2, 0.13)
    out = [('hair_back', hair_back & ~neck, hair), ('neck', neck, skin * 0.92), ('shirt', shirt, np.array(a.shirt_color) / 255),
           ('ears', ears, skin), ('head', head_mask(f, a), skin),
           ('cheeks', cheeks, np.array([0.9, 0.45, 0.45])), ('nose', nose, skin * 0.82),
           ('nose_line', nose_line, skin * 0.5), ('nostrils', nostrils, skin * 0.35)]
    if a.hair_style in ('long', 'bob'):     # Locks hanging in front of the shoulders.
        out.append(('hair_locks', hair_back & (np.abs(f.u) > 0.8) & (f.v > 0.2) & ~neck, hair))
    lips, inside, teeth, line = mouth_masks(f, a)
    out += [('lips', lips, np.array(a.lip_color) / 255), ('mouth', inside, np.array([0.35, 0.08, 0.1])),
            ('teeth', teeth, np.array([0.95, 0.93, 0.88])), ('mouth_line', line, np.array(a.lip_color) / 255 * 0.55),
            ('facial_hair', facial_hair_mask(f, a), hair)]
    for side in (-1, 1):
        white, iris, pupil, light, lash = eye_masks(f, a, side)
        out += [('eye_white', white, np.array([0.94, 0.93, 0.91])), ('iris', iris, np.array(a.eye_color) / 255),
                ('pupil', pupil, np.array([0.05, 0.04, 0.05])), ('eye_light', light, np.ones(3)),
                ('lash', lash, INK), ('brow', brow_mask(f, a, side), brow)]
    out.append(('hair_front', hair_front, hair))
    frame, lens = glasses_masks(f, a)
    out += [('lens', lens, np.ones(3)), ('glasses', frame, np.array(a.glasses_color) / 255)]
    return out


def background(f, a):
    c0, c1 = np.array(a.bg_colors[0]) / 255, np.array(a.bg_colors[1]) / 255
    if a.background == 'flat':
        t = np.zeros_like(f.x)
    elif a.background == 'vertical':
        t = f.y
    else:
        dx, dy = f.x - 0.5, f.y - 0.4
        t = np.clip(np.sqrt(dx * dx + dy * dy) / 0.7, 0, 1)
    return c0 + t[..., None] * (c1 - c0)      # [S, S, 3]


def render(a, style, resolution):
    """uint8 [resolution, resolution, 3]; see `synthetic_portraits.render_portrait`."""
    f = make_frame(a, resolution * SUPERSAMPLE)
    paint = portrait_paint.paint_photo if style == 'photo' else portrait_paint.paint_toon
    img = paint(f, a, layers(f, a), background(f, a), np.random.RandomState(a.texture_seed))
    img = np.clip(np.round(img * 255), 0, 255).astype(np.uint8)
    return np.asarray(PIL.Image.fromarray(img, 'RGB').reduce(SUPERSAMPLE))
