"""The W+ layer-addressing table: which synthesis layers read each of the `num_ws` latent rows.

StyleGAN2's synthesis network reads one w row per modulated layer. Within block `b{r}` the rows go
to `conv0` (absent at 4x4), `conv1` and `torgb`; `torgb` of block r shares its row with `conv0` of
block 2r (NVIDIA's `SynthesisNetwork.forward` narrows overlapping slices), so a 1024x1024 generator
has 1 + 2 * 8 + 1 = 18 rows. Layer swapping and latent mixing both address layers through this table.

Each row's `resolution` is the resolution of the convolution that reads it (`conv0` of block 2r for
a shared row, the last block for the final ToRGB-only row), so the rows at or below resolution r are
exactly the rows that shape the feature maps of blocks b4..b{r}.

Each row also has a `block` (the synthesis block whose convolution reads it, b{resolution}) and `owned`:
the tensors that follow this row when generators are blended, frozen per block or tuned per row. A
convolution's tensors follow the row it reads; ToRGB, `const`, the resnet `skip` and block filters follow
their own block's `conv1` row (not the row ToRGB reads, which belongs to block 2r), so rows of blocks
b4..b{r} own exactly the tensors of those blocks. The final ToRGB-only row owns nothing.

Every row selection goes through `select_rows` (and `select_params` for tensors): one spec language for
`pstyle style-mix --styles`, `--pti-layers`, FreezeG and blending:

    4-7, 9          row indices (the old form)
    res:8-32, res:16    rows whose resolution is in the range
    b16             rows of block b16 (its conv0 and conv1 rows)
    coarse, middle, fine    StyleGAN's bands (Karras et al. 2019, Sec. 3.1: 4-8, 16-32, 64-1024 at 1024),
                    relative to the network's resolution
    b8.conv0, synthesis.b4.torgb    the row a layer reads
Parts are joined by commas; the selection is their union, in row order.
"""

import dataclasses
import fnmatch
import math
import re

import numpy as np


@dataclasses.dataclass(frozen=True)
class WLayer:
    index: int              # Row of W+.
    resolution: int         # Resolution of the convolution that reads this row.
    layers: tuple           # Modules reading this row, e.g. ('synthesis.b8.conv0', 'synthesis.b4.torgb').
    params: tuple           # Parameter and buffer names (G state_dict names) of those modules.
    block: int = 0          # The synthesis block whose convolution reads this row (b{block}).
    owned: tuple = ()       # State names that follow this row: its convolution's, plus ToRGB, const, skip and
                            # filters of the block for its conv1 row.

    def as_dict(self):
        return dataclasses.asdict(self)


def _synthesis(G):
    return G.synthesis if hasattr(G, 'synthesis') else G


def layer_table(G):
    """List of `WLayer`, one per W+ row, for a Generator (or a SynthesisNetwork)."""
    synthesis = _synthesis(G)
    prefix = 'synthesis.' if synthesis is not G else ''
    rows = [dict(layers=[], resolution=None) for _ in range(synthesis.num_ws)]
    w_idx = 0
    for res in synthesis.block_resolutions:
        block = getattr(synthesis, f'b{res}')
        idx = w_idx
        for name in ['conv0', 'conv1', 'torgb']:
            if not hasattr(block, name):
                continue
            rows[idx]['layers'].append(f'{prefix}b{res}.{name}')
            # A convolution defines the row's resolution; a ToRGB only when no convolution reads the row.
            if name != 'torgb' or rows[idx]['resolution'] is None:
                rows[idx]['resolution'] = res
            idx += 1
        w_idx += block.num_conv
    state_names = [prefix + name for name in synthesis.state_dict().keys()]
    table = []
    for index, row in enumerate(rows):
        # Order: the convolution first, then the ToRGB that shares the row.
        layers = tuple(sorted(row['layers'], key=lambda n: n.endswith('torgb')))
        params = tuple(k for k in state_names if any(k.startswith(layer + '.') for layer in layers))
        table.append(dict(index=index, resolution=int(row['resolution']), layers=layers, params=params,
                          block=int(row['resolution'])))
    owned = _ownership(table, state_names, prefix)
    return [WLayer(**row, owned=owned[row['index']]) for row in table]


def _ownership(table, state_names, prefix):
    """{row index: owned state names}: a convolution's tensors follow the row it reads; every other tensor
    of block b{r} (ToRGB, const, skip, filters) follows the row of b{r}.conv1."""
    owner, conv1_row = {}, {}
    for row in table:
        for layer in row['layers']:
            if layer.endswith('.conv1'):
                conv1_row[layer[len(prefix):].split('.')[0]] = row['index']
        for name in row['params']:
            if '.torgb.' not in name:
                owner[name] = row['index']
    for name in state_names:
        block = name[len(prefix):].split('.')[0]
        if name not in owner and block in conv1_row:
            owner[name] = conv1_row[block]
    return {row['index']: tuple(n for n in state_names if owner.get(n) == row['index']) for row in table}

def index_resolutions(G):
    """[num_ws] array: the resolution of each W+ row."""
    return np.array([row.resolution for row in layer_table(G)], dtype=np.int64)


def indices_up_to(G, resolution):
    """W+ rows read by the convolutions of blocks at or below `resolution`."""
    return [row.index for row in layer_table(G) if row.resolution <= resolution]


def format_table(G):
    """The table as aligned text, for `pstyle layers` and the README."""
    lines = [f'{"index":>5}  {"res":>5}  layers']
    for row in layer_table(G):
        lines.append(f'{row.index:>5}  {row.resolution:>5}  {", ".join(row.layers)}')
    return '\n'.join(lines)


# ----------------------------------------------------------------------------
# Row selections: the one spec parser.

class SelectionError(ValueError):
    """A row selection that does not parse or does not fit the network."""


# StyleGAN (Karras et al. 2019, Sec. 3.1): coarse 4-8, middle 16-32, fine 64-1024 at 1024x1024, as
# bands of the relative level t = (log2 res - 2) / (log2 img_resolution - 2) so they scale to any network.
BANDS = {'coarse': (0.0, 0.25), 'middle': (0.25, 0.5), 'fine': (0.5, 1.0 + 1e-9)}
SPEC_HELP = 'row indices (4-7), res:8-32, b16, coarse, middle, fine or a layer name (b8.conv0)'


def select_rows(G, spec):
    """Row spec ('4-7,res:64-128', or a list of parts / indices) -> sorted W+ row indices."""
    table = layer_table(G)
    parts = _spec_parts(spec)
    rows = set()
    for part in parts:
        rows.update(_part_rows(G, table, part, spec))
    return sorted(rows)


def select_params(G, spec):
    """Parameter names (registration order) selected by a row spec or by glob patterns of names
    ('synthesis.*', 'mapping.fc0.weight'): the `owned` tensors of the selected rows, the tensors of a
    named layer ('b8.torgb'), and every parameter matching a glob part."""
    table = layer_table(G)
    names = [n for n, _ in G.named_parameters()]
    layers = {layer for row in table for layer in row.layers}
    owned, globs = set(), []
    for part in _spec_parts(spec):
        layer = part if part.startswith('synthesis.') else f'synthesis.{part}'
        if layer in layers:  # A layer name: that layer's own tensors, not its row's.
            globs.append(layer + '.*')
        elif any(c in part for c in '*?[') or part in names:
            globs.append(part)
        else:
            owned.update(n for i in _part_rows(G, table, part, spec) for n in table[i].owned)
    return [n for n in names if n in owned or any(fnmatch.fnmatchcase(n, g) for g in globs)]


def _spec_parts(spec):
    items = spec if isinstance(spec, (list, tuple)) else str(spec).split(',')
    parts = [str(p).strip() for p in items if str(p).strip()]
    if not parts:
        raise SelectionError(f'no rows in "{spec}": expected {SPEC_HELP}')
    return parts


def _part_rows(G, table, part, spec):
    num_ws = len(table)
    if m := re.fullmatch(r'(\d+)(?:\s*-\s*(\d+))?', part):
        lo, hi = int(m[1]), int(m[2] or m[1])
        if hi < lo:
            raise SelectionError(f'range "{part}" runs backwards')
        if hi >= num_ws:
            raise SelectionError(f'W+ rows {part} out of range: this network has W+ indices 0-{num_ws - 1}')
        return range(lo, hi + 1)
    resolutions = sorted({row.resolution for row in table})
    if m := re.fullmatch(r'res:(\d+)(?:-(\d+))?', part):
        lo, hi = int(m[1]), int(m[2] or m[1])
        bad = [r for r in (lo, hi) if r not in resolutions]
        if bad:
            raise SelectionError(f'"{part}": {bad[0]} is not a resolution of this network '
                                 f'({", ".join(map(str, resolutions))})')
        if hi < lo:
            raise SelectionError(f'range "{part}" runs backwards')
        return [row.index for row in table if lo <= row.resolution <= hi]
    if m := re.fullmatch(r'b(\d+)', part):
        if int(m[1]) not in resolutions:
            raise SelectionError(f'"{part}": this network has blocks {", ".join(f"b{r}" for r in resolutions)}')
        return [row.index for row in table if row.block == int(m[1])]
    if part in BANDS:
        lo, hi = BANDS[part]
        top = max(math.log2(G.img_resolution) - 2, 1)
        rows = [row.index for row in table if lo <= (math.log2(row.resolution) - 2) / top < hi]
        if not rows:
            raise SelectionError(f'"{part}" selects no rows of this {G.img_resolution}x{G.img_resolution} network')
        return rows
    layer = part if part.startswith('synthesis.') else f'synthesis.{part}'
    rows = [row.index for row in table if layer in row.layers or part in row.layers]
    if rows:
        return rows
    raise SelectionError(f'cannot parse "{part}" in "{spec}": expected {SPEC_HELP}')
