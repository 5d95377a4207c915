"""Winograd minimal-filtering convolutions for CPU inference (Lavin & Gray 2016, "Fast Algorithms for Convolutional
Neural Networks"; Winograd 1980).

F(m, r) computes m outputs of an r-tap correlation from m + r - 1 inputs with m + r - 1 multiplications instead of
m * r. In 2D, a tile of (m + r - 1)^2 inputs gives m^2 outputs: the channel mixing, which is where a convolution's
time goes, becomes (m + r - 1)^2 matrix products [tiles, C_in] x [C_in, C_out] instead of r^2 per output pixel.
F(4, 3) needs 36 products for 16 outputs of a 3x3 convolution where direct convolution needs 144: 4x fewer
multiply-adds, paid for by the input and output transforms (memory-bound passes over the activations).

The transform matrices are built here with exact rational arithmetic (Toom-Cook: evaluate at the points
0, 1, -1, 2, -2, ... and infinity, multiply, interpolate), the interpolation's denominators moved into the filter
transform so that the activation transforms have small integer entries.

`WinogradConv2d` replaces an `nn.Conv2d` with a 3x3 kernel, padding 1, stride 1 or 2, groups 1 and dilation 1 for
fp32 CPU inference, where oneDNN has no Winograd kernel on AVX2 machines:
- stride 1: F(m, 3) in both directions, (m + 2)^2 products per m^2 outputs instead of 9 m^2 (4x fewer at m = 4);
- stride 2: the polyphase split. Output (y, x) reads the padded input at (2y + dy, 2x + dx); grouped by the parity of
  (dy, dx) that is four stride-1 correlations over the input's four phases x[py::2, px::2], with the 2x2, 2x1, 1x2 and
  1x1 sub-kernels W[py::2, px::2]. Each is done as F(m, 2) or F(m, 1) (a plain product) per direction:
  (m + 1)^2 + 2 m (m + 1) + m^2 products per m^2 outputs, 1.8x fewer than 9 m^2 at m = 4.
All positions of all phases go through one batched product (`torch.bmm`); the tile transforms run in a small C++
plugin (torch_utils/ops/winograd.cpp, built with ninja on first use like the CUDA plugins). Results equal
`F.conv2d`'s up to fp32 rounding (relative error ~1e-6 at m = 2, ~1e-5 at m = 4). Anything else (autograd,
autocast, CUDA, another dtype, no C++ compiler) runs the original convolution, which the module keeps.
"""

import threading
from fractions import Fraction
from math import lcm

import torch
import torch.nn as nn
import torch.nn.functional as F

from pstyle.torch_utils.ops import _impl

_POINTS = (Fraction(0), Fraction(1), Fraction(-1), Fraction(2), Fraction(-2), Fraction(1, 2), Fraction(-1, 2),
           Fraction(3), Fraction(-3))


def _vandermonde(points, cols):
    """Rows (1, p, p^2, ..., p^(cols-1)) for each finite point, then (0, ..., 0, 1) for the point at infinity."""
    return [[p ** j for j in range(cols)] for p in points] + [[Fraction(0)] * (cols - 1) + [Fraction(1)]]


def _inverse(matrix):
    """Exact inverse of a square matrix of Fractions (Gauss-Jordan)."""
    n = len(matrix)
    a = [list(row) + [Fraction(int(i == j)) for j in range(n)] for i, row in enumerate(matrix)]
    for col in range(n):
        pivot = next(r for r in range(col, n) if a[r][col] != 0)
        a[col], a[pivot] = a[pivot], a[col]
        scale = a[col][col]
        a[col] = [v / scale for v in a[col]]
        for r in range(n):
            if r != col and a[r][col] != 0:
                factor = a[r][col]
                a[r] = [v - factor * w for v, w in zip(a[r], a[col])]
    return [row[n:] for row in a]


def winograd_matrices(m, r):
    """(BT [a, a], G [a, r], AT [m, a]) of F(m, r), a = m + r - 1, as float64 tensors.

    For an input tile d [a] and filter g [r]: y = AT @ ((G @ g) * (BT @ d)) gives y_i = sum_k d[i + k] g[k]
    (correlation, as conv2d computes). In 2D: Y = AT (G g G^T * BT d B) A.
    """
    a = m + r - 1
    if r == 1:                                                                   # F(m, 1): no transform at all.
        eye = torch.eye(m, dtype=torch.float64)
        return eye, torch.ones(m, 1, dtype=torch.float64), eye
    if not 2 <= a <= len(_POINTS) + 1:
        raise ValueError(f'F({m}, {r}) needs {a - 1} interpolation points; at most {len(_POINTS)} are defined')
    points = _POINTS[:a - 1]
    # Linear convolution s = g * h (deg r-1, m-1) by evaluation at the points: s = V^-1 [(Vg g) . (Vh h)].
    # Correlation F(m, r) is its transpose in (h, s): y = Vh^T [(Vg g) . (V^-T d)].
    bt = [list(col) for col in zip(*_inverse(_vandermonde(points, a)))]      # (V^-1)^T
    g = _vandermonde(points, r)
    at = [list(col) for col in zip(*_vandermonde(points, m))]                # Vh^T
    for i, row in enumerate(bt):                                               # Denominators of BT into G.
        scale = lcm(*(v.denominator for v in row))
        bt[i] = [v * scale for v in row]
        g[i] = [v / scale for v in g[i]]
    as_tensor = lambda rows: torch.tensor([[float(v) for v in row] for row in rows], dtype=torch.float64)
    return as_tensor(bt), as_tensor(g), as_tensor(at)


def input_transform_ref(x, bt_y, bt_x, m, stride, off_y, off_x, th, tw):
    """PyTorch version of the plugin's input transform: x [N, H, W, C] -> v [ay*ax, N*th*tw, C], index j*ay + i,
    from the samples x[stride*(ty*m + u) + off_y, stride*(tx*m + q) + off_x] (zero outside the image)."""
    ay, ax = bt_y.shape[0], bt_x.shape[0]
    n, h, w, c = x.shape
    top, left = max(0, -off_y), max(0, -off_x)
    bottom = max(0, stride * ((th - 1) * m + ay - 1) + off_y + 1 - h)
    right = max(0, stride * ((tw - 1) * m + ax - 1) + off_x + 1 - w)
    x = F.pad(x, (0, 0, left, right, top, bottom))[:, off_y + top::stride, off_x + left::stride]
    rows = torch.tensordot(bt_y, _windows(x, 1, ay, th, m), dims=1)         # [ay, N, th, W', C]
    v = torch.tensordot(bt_x, _windows(rows, 3, ax, tw, m), dims=1)         # [ax, ay, N, th, tw, C]
    return v.reshape(ay * ax, n * th * tw, c)


def output_transform_ref(prod, at_y, at_x, n, th, tw, ho, wo):
    """PyTorch version of the plugin's output transform: prod [ay*ax, T, K] -> y [N, Ho, Wo, K] (no bias)."""
    m, ay = at_y.shape
    ax, k = at_x.shape[1], prod.shape[-1]
    cols = torch.tensordot(at_y, prod.reshape(ax, ay, -1), dims=([1], [1]))  # [p, j, T*K]
    y = torch.tensordot(at_x, cols, dims=([1], [1]))                         # [q, p, T*K]
    return y.reshape(m, m, n, th, tw, k).permute(2, 3, 1, 4, 0, 5).reshape(n, th * m, tw * m, k)[:, :ho, :wo]


def _windows(x, dim, a, count, step):
    """[a, ...]: the `count` windows of length a along `dim`, starting at 0, step, 2 step, ..., stacked by the
    position inside the window."""
    index = (slice(None),) * dim + (slice(None, None, step),)
    return torch.stack([x.narrow(dim, j, (count - 1) * step + 1)[index] for j in range(a)])


def transform_filters(kernel, g_y, g_x):
    """kernel [K, C, ry, rx] -> U [ay*ax, C, K], U[j*ay + i] = (G_y kernel G_x^T)[i, j] (computed in float64)."""
    u = torch.einsum('ij,kcjl,ml->mikc', g_y, kernel.double(), g_x)          # [j (column), i (row), K, C]
    return u.reshape(-1, kernel.shape[0], kernel.shape[1]).transpose(1, 2).contiguous()


MIN_TILES = {1: 16, 2: 64}   # Fewer tiles per image: the products would mostly read filters; direct is faster.
_SCRATCH = threading.local()


def _scratch(name, numel):
    """A reused fp32 CPU buffer of at least `numel` elements for this thread (the transforms' intermediates: fresh
    multi-megabyte allocations cost a page fault per 4 KiB on every call)."""
    buffers = _SCRATCH.__dict__.setdefault('buffers', {})
    buf = buffers.get(name)
    if buf is None or buf.numel() < numel:
        buf = buffers[name] = torch.empty(numel)
    return buf[:numel]


def _plugin():
    return None if _impl.ref_forced() else _impl.get_plugin('winograd')


class _Phase:
    """One stride-1 correlation of the split: input sample offsets, transform matrices, rows of the product."""

    def __init__(self, kernel, m, off_y, off_x, start):
        bt_y, self.g_y, at_y = winograd_matrices(m, kernel.shape[2])
        bt_x, self.g_x, at_x = winograd_matrices(m, kernel.shape[3])
        self.matrices = [t.float() for t in (bt_y, bt_x, at_y, at_x)]
        self.off_y, self.off_x = off_y, off_x
        self.positions = bt_y.shape[0] * bt_x.shape[0]
        self.rows = slice(start, start + self.positions)


class WinogradConv2d(nn.Module):
    """Inference replacement of a 3x3, padding-1, stride-1 or -2 `nn.Conv2d` (groups 1, dilation 1).

    fp32 CPU tensors without autograd or autocast, whose output has at least `min_tiles` m x m tiles per image
    (default MIN_TILES: 16 at stride 1, 64 at stride 2, where the filters are larger and the saving smaller), take
    the Winograd path (output channels_last, as oneDNN returns for channels_last inputs); anything else runs
    `self.conv`, the original convolution. The transformed filters ((m + 2)^2 / 9 times the weights' memory at
    stride 1, ((m + 1)^2 + 2 m (m + 1) + m^2) / 9 at stride 2) are built on the first call that uses them, so
    convolutions that only see small maps cost no memory. On small maps the products would read those filters
    for few tiles, and direct convolution is faster.
    `impl`: 'auto' (the plugin, else the original convolution) or 'ref' (the PyTorch transforms, for tests).
    """

    def __init__(self, conv, m=4, impl='auto', min_tiles=None):
        super().__init__()
        if not supports(conv):
            raise ValueError(f'WinogradConv2d takes a 3x3 conv with padding 1, stride 1 or 2, groups 1; got {conv}')
        if impl not in ('auto', 'ref'):
            raise ValueError(f"impl must be 'auto' or 'ref', got {impl!r}")
        self.conv, self.m, self.impl, self.stride = conv, m, impl, conv.stride[0]
        self.min_tiles = min_tiles if min_tiles is not None else MIN_TILES[self.stride]
        self.phases, self.filters = None, None

    def _prepare(self):
        """The phases and the transformed filters [P, C, K] (once)."""
        weight = self.conv.weight.detach()
        if self.stride == 1:
            parts = [(weight, -1, -1)]
        else:                                       # Phase (py, px): taps (py + 2 qy, px + 2 qx), samples 2 Y + p - 1.
            parts = [(weight[:, :, py::2, px::2], py - 1, px - 1) for py in (0, 1) for px in (0, 1)]
        phases, filters, start = [], [], 0
        for kernel, off_y, off_x in parts:
            phase = _Phase(kernel, self.m, off_y, off_x, start)
            filters.append(transform_filters(kernel, phase.g_y, phase.g_x))
            phases.append(phase)
            start += phase.positions
        self.phases = phases                        # Before `filters`: a concurrent call tests `filters` alone.
        self.filters = torch.cat(filters).to(weight.dtype)

    def _winograd_ok(self, x, th, tw):
        return (th * tw >= self.min_tiles and x.device.type == 'cpu' and x.dtype == torch.float32
                and self.conv.weight.dtype == torch.float32
                and not (torch.is_grad_enabled() and (x.requires_grad or self.conv.weight.requires_grad))
                and not torch.is_autocast_enabled('cpu'))

    def forward(self, x):
        n, c, h, w = x.shape
        ho, wo = ((h + 1) // 2, (w + 1) // 2) if self.stride == 2 else (h, w)
        th, tw = -(-ho // self.m), -(-wo // self.m)
        plugin = _plugin() if self.impl == 'auto' else None
        if not self._winograd_ok(x, th, tw) or (plugin is None and self.impl == 'auto'):
            return self.conv(x)
        if self.filters is None:
            self._prepare()
        xh = x.permute(0, 2, 3, 1).contiguous()                                 # No copy for channels_last x.
        bias = None if self.conv.bias is None else self.conv.bias.detach()
        if plugin is not None:
            positions, tiles = self.filters.shape[0], n * th * tw
            v = _scratch('v', positions * tiles * c).view(positions, tiles, c)
            for ph in self.phases:
                bt_y, bt_x = ph.matrices[:2]
                plugin.input_transform(xh, bt_y, bt_x, self.m, self.stride, ph.off_y, ph.off_x, th, tw, v[ph.rows])
            prod = _scratch('prod', positions * tiles * self.conv.out_channels).view(positions, tiles, -1)
            torch.bmm(v, self.filters, out=prod)
            y = x.new_empty(n, ho, wo, self.conv.out_channels)
            none = x.new_empty(0)
            for i, ph in enumerate(self.phases):                    # The bias once; later phases accumulate.
                at_y, at_x = ph.matrices[2:]
                plugin.output_transform(prod[ph.rows], at_y, at_x, bias if bias is not None and i == 0 else none,
                                        y, i > 0, th, tw)
        else:
            v = torch.cat([input_transform_ref(xh, *ph.matrices[:2], self.m, self.stride, ph.off_y, ph.off_x, th, tw)
                           for ph in self.phases])
            prod = torch.bmm(v, self.filters)
            y = sum(output_transform_ref(prod[ph.rows], *ph.matrices[2:], n, th, tw, ho, wo) for ph in self.phases)
            y = (y + bias if bias is not None else y).contiguous()
        return y.permute(0, 3, 1, 2)                                              # NCHW view of channels_last data


def supports(conv):
    """Whether WinogradConv2d can replace `conv`."""
    return (isinstance(conv, nn.Conv2d) and conv.kernel_size == (3, 3) and conv.padding == (1, 1)
            and conv.stride in ((1, 1), (2, 2)) and conv.dilation == (1, 1) and conv.groups == 1
            and conv.padding_mode == 'zeros')


def use_winograd(module, tiles=(4, 2), min_channels=128, impl='auto'):
    """Replace, in place, every convolution of `module` that WinogradConv2d supports and that has at least
    `min_channels` input and output channels; `tiles`: m for stride 1 and for stride 2 (0: leave those alone).
    Returns the number replaced."""
    count = 0
    for name, child in list(module.named_children()):
        if supports(child) and min(child.in_channels, child.out_channels) >= min_channels \
                and tiles[child.stride[0] - 1]:
            setattr(module, name, WinogradConv2d(child, tiles[child.stride[0] - 1], impl))
            count += 1
        elif not isinstance(child, WinogradConv2d):
            count += use_winograd(child, tiles, min_channels, impl)
    return count


def active_count(module):
    """How many WinogradConv2d modules of `module` have run the Winograd path (built their filters)."""
    return sum(1 for m in module.modules() if isinstance(m, WinogradConv2d) and m.filters is not None)
