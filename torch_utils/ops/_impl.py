"""Choosing between the `ref` and `cuda` implementations of the ops; plugin lookup."""

import os
from pathlib import Path

from pstyle.torch_utils import cpu_features

_OPS_DIR = Path(__file__).resolve().parent
_IMPLS = (None, 'ref', 'cuda')

# Sources of each plugin, relative to this folder (headers are hashed too, so edits rebuild).
PLUGIN_SOURCES = {
    'bias_act': dict(sources=['bias_act.cpp', 'bias_act.cu'], headers=['bias_act.h']),
    'upfirdn2d': dict(sources=['upfirdn2d.cpp', 'upfirdn2d.cu'], headers=['upfirdn2d.h']),
    'winograd': dict(sources=['winograd.cpp'], headers=[], cflags=lambda: _simd_flags()),  # CPU (torch_utils/winograd.py)
}


def _simd_flags():
    """-mavx2 -mfma where this CPU has them (x86-64's baseline is SSE2): the C++ plugins are built per machine."""
    flags = cpu_features.cpu_flags()
    return ['-fopenmp'] + (['-mavx2', '-mfma'] if {'avx2', 'fma'} <= flags else [])


def ref_forced():
    """True when `PSTYLE_OPS_REF` is set to anything but '', '0', 'false' or 'no'."""
    return os.environ.get('PSTYLE_OPS_REF', '').strip().lower() not in ('', '0', 'false', 'no')


def use_cuda(impl, x):
    """Whether to try the CUDA path: asked for (or auto), tensor on a GPU, and not forced to `ref`.

    Like NVIDIA's ops, impl='cuda' on a CPU tensor quietly runs `ref`.
    """
    if impl not in _IMPLS:
        raise ValueError(f"impl must be None, 'ref' or 'cuda', got {impl!r}")
    return impl != 'ref' and x.device.type == 'cuda' and not ref_forced()


def get_plugin(name):
    """Compiled extension `name` (built and cached on first use), or None after one warning."""
    from pstyle.torch_utils import custom_ops  # noqa: I001  Deferred: nothing about building happens at import.
    spec = PLUGIN_SOURCES[name]
    return custom_ops.get_plugin(
        module_name=f'pstyle_{name}_plugin',
        sources=[str(_OPS_DIR / s) for s in spec['sources']],
        headers=[str(_OPS_DIR / h) for h in spec['headers']],
        cflags=spec['cflags']() if 'cflags' in spec else (),
    )
