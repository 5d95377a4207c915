"""The W+ layer-addressing table: which synthesis layers read each of the `num_ws` latent rows.

StyleGAN2's synthesis network reads one w row per modulated layer. Within block `b{r}` the rows go
to `conv0` (absent at 4x4), `conv1` and `torgb`; `torgb` of block r shares its row with `conv0` of
block 2r (NVIDIA's `SynthesisNetwork.forward` narrows overlapping slices), so a 1024x1024 generator
has 1 + 2 * 8 + 1 = 18 rows. Layer swapping and latent mixing both address layers through this table.

Each row's `resolution` is the resolution of the convolution that reads it (`conv0` of block 2r for
a shared row, the last block for the final ToRGB-only row), so the rows at or below resolution r are
exactly the rows that shape the feature maps of blocks b4..b{r}.
"""

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class WLayer:
    index: int              # Row of W+.
    resolution: int         # Resolution of the convolution that reads this row.
    layers: tuple           # Modules reading this row, e.g. ('synthesis.b8.conv0', 'synthesis.b4.torgb').
    params: tuple           # Parameter and buffer names (G state_dict names) of those modules.

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
        table.append(WLayer(index=index, resolution=int(row['resolution']), layers=layers, params=params))
    return table


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
