"""One per-layer control for layer swapping, weight blending and latent mixing.

A layer-weight vector holds one float per W+ row (`num_ws` values in [0, 1]): 0 takes the row from
A (the base generator / the content latent), 1 from B (the styled generator / the style latent).
Rows are addressed through the W+ table of `models/wplus.py`, where each row's `resolution` is the
resolution of the convolution that reads it. The vector can be given

- per index:        `--weights 0,0,0,0,0,0,0,1,1,...`   (exactly num_ws floats)
- by resolution:    `--swap-res 32`                     rows with resolution <= 32 -> 0, the rest -> 1
- smoothly:         `--swap-res 32 --blend-width 0.5`   w(row) = sigmoid((log2 res - log2 swap_res - 1/2) / width)
- by a preset:      `--preset structure|fine|color`     bands of resolution levels, relative to the network
- by a row selection: `--rows fine` / `--rows res:64-1024` / `--rows b16,b32`   B on the selected rows, A elsewhere
                    (any `models/wplus.select_rows` spec)

and then scaled by a style strength (`w * s`) and/or made colour-preserving (the `color` band set to 0).
"""

import dataclasses
import math

import numpy as np
from pstyle.models import wplus

# Presets: B (1) on a band of resolution levels, A (0) elsewhere. A row's relative level is
# t = (log2 res - 2) / (log2 img_resolution - 2): 0 at 4x4, 1 at the output resolution, so a preset
# means the same thing at 1024 (the comments) and for a 32x32 test network.
PRESETS = {
    # Coarse styles (StyleGAN, Sec. 3.1: pose, face shape, hair style): t <= 1/3, i.e. 4-16 at 1024.
    'structure': dict(lo=0.0, hi=1 / 3, help='B at the coarse rows (4-16 at 1024): pose and face shape from B'),
    # Fine styles (StyleGAN, Sec. 3.1: "mainly the color scheme and microstructure"): t >= 1/2, 64-1024 at 1024.
    'fine':      dict(lo=0.5, hi=1.0, help='B at the fine rows (64-1024 at 1024): texture and colour from B, like --swap-res 32'),
    # The finest band, t >= 3/4 (256-1024 at 1024): colour scheme and micro-texture, no shapes.
    'color':     dict(lo=0.75, hi=1.0, help='B at the finest rows (256-1024 at 1024): colour and micro-texture only'),
    # Every row: the whole of B (a few-shot style delta is used this way by default, as JoJoGAN).
    'all':       dict(lo=0.0, hi=1.0, help='B at every row'),
}
COLOR_PRESET = 'color'  # --preserve-color sets exactly these rows to 0 (content / base).
DEFAULT_PRESET = 'fine'


class LayerWeightError(ValueError):
    """A layer-weight specification that does not fit the network."""


@dataclasses.dataclass(frozen=True)
class WeightSpec:
    """How the per-row weights were asked for; at most one of weights / swap_res / preset / rows is set
    (none = DEFAULT_PRESET). JSON-ready through `as_dict` for manifests."""
    weights: tuple = None           # num_ws floats in [0, 1].
    swap_res: int = None            # Rows with resolution <= swap_res from A.
    blend_width: float = None       # Logistic transition around swap_res, in octaves; None/0 = hard.
    preset: str = None              # One of PRESETS.
    style_strength: float = 1.0     # Multiplies every weight.
    preserve_color: bool = False    # The `color` rows come from A whatever the spec says.
    rows: str = None                # A W+ row selection (wplus.select_rows) taken from B.

    def as_dict(self):
        return dataclasses.asdict(self)

    def describe(self):
        if self.weights is not None:
            base = 'weights ' + ','.join(f'{v:g}' for v in self.weights)
        elif self.rows is not None:
            base = f'rows {self.rows}'
        elif self.swap_res is not None:
            base = f'swap-res {self.swap_res}' + (f' blend-width {self.blend_width:g}' if self.blend_width else '')
        else:
            base = f'preset {self.preset or DEFAULT_PRESET}'
        extra = (f', strength {self.style_strength:g}' if self.style_strength != 1 else '') + \
                (', preserve-color' if self.preserve_color else '')
        return base + extra


# ----------------------------------------------------------------------------
# Parsing.

def parse_weight_list(text, num_ws=None):
    """'0,0,0.5,1' (or a sequence of numbers) -> tuple of floats, checked for length and range."""
    if isinstance(text, str):
        parts = [p.strip() for p in text.replace(' ', ',').split(',') if p.strip()]
        values = []
        for part in parts:
            try:
                values.append(float(part))
            except ValueError:
                raise LayerWeightError(f'--weights: cannot parse "{part}" as a number') from None
    else:
        values = [float(v) for v in text]
    if num_ws is not None and len(values) != num_ws:
        raise LayerWeightError(f'--weights needs exactly {num_ws} values (one per W+ row of this network), got {len(values)}')
    bad = [v for v in values if not (0.0 <= v <= 1.0)]  # Also rejects nan.
    if bad:
        raise LayerWeightError(f'--weights must be in [0, 1] (0 = A/base/content, 1 = B/styled/style), got {bad[0]:g}')
    return tuple(values)


def make_spec(weights=None, swap_res=None, blend_width=None, preset=None, style_strength=1.0, preserve_color=False,
              rows=None):
    """Check that the knobs combine sensibly (network-independent checks) and return a WeightSpec."""
    given = [name for name, v in [('--weights', weights), ('--swap-res', swap_res), ('--preset', preset),
                                  ('--rows', rows)] if v is not None]
    if len(given) > 1:
        raise LayerWeightError(f'give only one of --weights, --swap-res and --preset, or --rows (got {" and ".join(given)})')
    if blend_width is not None:
        if swap_res is None:
            raise LayerWeightError('--blend-width needs --swap-res (the centre of the transition)')
        if not (blend_width >= 0 and math.isfinite(blend_width)):
            raise LayerWeightError(f'--blend-width must be >= 0 (octaves), got {blend_width}')
    if swap_res is not None:
        swap_res = int(swap_res)
        if swap_res < 4 or swap_res & (swap_res - 1):
            raise LayerWeightError(f'--swap-res must be a power of two >= 4, got {swap_res}')
    if preset is not None and preset not in PRESETS:
        raise LayerWeightError(f'unknown preset {preset!r}; choose one of {", ".join(PRESETS)}')
    if not (0.0 <= style_strength <= 1.0):
        raise LayerWeightError(f'--style-strength must be in [0, 1], got {style_strength}')
    if weights is not None:
        weights = parse_weight_list(weights)
    return WeightSpec(weights=weights, swap_res=swap_res, blend_width=blend_width, preset=preset,
                      style_strength=float(style_strength), preserve_color=bool(preserve_color),
                      rows=None if rows is None else str(rows))


# ----------------------------------------------------------------------------
# Resolving against a network.

def relative_levels(G):
    """[num_ws] float: each row's level t in [0, 1] (0 = 4x4, 1 = img_resolution)."""
    res = wplus.index_resolutions(G).astype(np.float64)
    top = math.log2(G.img_resolution) - 2
    return (np.log2(res) - 2) / max(top, 1)


def swap_weights(G, swap_res):
    """Hard swap: 0 (A) for rows read at resolution <= swap_res, 1 (B) above."""
    check_resolution(G, swap_res)
    return (wplus.index_resolutions(G) > swap_res).astype(np.float64)


def smooth_weights(G, swap_res, blend_width):
    """Logistic transition centred half an octave above swap_res, `blend_width` octaves wide:
    w = sigmoid((log2 res - log2 swap_res - 1/2) / width). width -> 0 gives the hard swap."""
    check_resolution(G, swap_res)
    if not blend_width:
        return swap_weights(G, swap_res)
    x = (np.log2(wplus.index_resolutions(G)) - math.log2(swap_res) - 0.5) / blend_width
    return 1.0 / (1.0 + np.exp(-x))


def preset_weights(G, name):
    """1 on the preset's band of relative levels, 0 elsewhere."""
    band = PRESETS[name]
    t = relative_levels(G)
    eps = 1e-9  # Levels like 1/3 are not exact in binary.
    return ((t >= band['lo'] - eps) & (t <= band['hi'] + eps)).astype(np.float64)


def check_resolution(G, swap_res):
    if swap_res > G.img_resolution:
        raise LayerWeightError(f'--swap-res {swap_res} is above this network\'s resolution {G.img_resolution}')


def resolve(G, spec):
    """WeightSpec -> [num_ws] float64 weights in [0, 1] for generator G."""
    if spec.weights is not None:
        w = np.array(parse_weight_list(spec.weights, G.num_ws), dtype=np.float64)
    elif spec.rows is not None:
        w = np.zeros(G.num_ws)
        w[wplus.select_rows(G, spec.rows)] = 1.0
    elif spec.swap_res is not None:
        w = smooth_weights(G, spec.swap_res, spec.blend_width)
    else:
        w = preset_weights(G, spec.preset or DEFAULT_PRESET)
    if spec.style_strength != 1.0:
        w = w * spec.style_strength
    if spec.preserve_color:
        w = np.where(preset_weights(G, COLOR_PRESET) > 0, 0.0, w)
    assert w.shape == (G.num_ws,) and np.all((w >= 0) & (w <= 1)), w
    return w


def resolve_weights(G, weights=None, swap_res=None, blend_width=None, preset=None, style_strength=1.0,
                    preserve_color=False, rows=None):
    """Convenience: the knobs as keyword arguments -> [num_ws] float64."""
    return resolve(G, make_spec(weights, swap_res, blend_width, preset, style_strength, preserve_color, rows))


def format_weights(G, weights):
    """The W+ table with the resolved weight of each row (and who owns the ToRGB of each block)."""
    weights = np.asarray(weights, dtype=np.float64)
    assert weights.shape == (G.num_ws,), weights.shape
    lines = [f'{"index":>5}  {"res":>5}  {"weight":>6}  {"from":<5}  layers']
    for row, w in zip(wplus.layer_table(G), weights):
        source = 'A' if w == 0 else 'B' if w == 1 else 'A+B'
        lines.append(f'{row.index:>5}  {row.resolution:>5}  {w:>6.3f}  {source:<5}  {", ".join(row.layers)}')
    lines.append('weight 0 = A (base / content), 1 = B (styled / style). In generator blending each ToRGB '
                 'follows its own block (the weight of that block\'s conv1 row).')
    return '\n'.join(lines)
