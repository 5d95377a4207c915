"""The metric registry: name -> function, the options every metric reads, and NVIDIA's counted names.

    @register('mean_brightness', needs=('generated',))
    def mean_brightness(ctx, opts):
        return dict(mean_brightness=...), dict(num_gen=len(ctx.gen_src))   # values, record extras

`metrics.api.run_metrics` looks every requested name up here (the built-in ones register in
`metrics.builtin`); `pstyle metrics` and the training loop go through it.
"""

import dataclasses
from typing import Callable, Optional

from .resize import DEFAULT_PROTOCOL

NEEDS = ('network', 'pairs', 'generated', 'real')   # in the order the request is checked


@dataclasses.dataclass
class MetricOptions:
    """Every option a metric reads; plain values only, so a request serializes to JSON (`to_json`)."""
    num_gen:            int = 50000         # Images generated from a network (seeds 0..N-1).
    gen_seeds:          Optional[list] = None   # Explicit seeds instead of 0..num_gen-1.
    max_real:           Optional[int] = None    # Use only the first N real images.
    protocol:           str = DEFAULT_PROTOCOL  # Resize/quantization protocol (metrics.resize).
    inception_weights:  Optional[str] = None
    vgg_weights:        Optional[str] = None
    seed:               int = 2020          # KID subsets, IS shuffling, PPL sampling.
    truncation_psi:     float = 1.0
    truncation_cutoff:  Optional[int] = None
    class_idx:          Optional[int] = None
    noise_mode:         str = 'const'
    kid_subsets:        int = 100
    kid_subset_size:    int = 1000
    is_splits:          int = 10
    is_shuffle:         bool = True
    pr_k:               int = 3
    ppl_samples:        int = 50000
    ppl_epsilon:        float = 1e-4
    ppl_space:          str = 'w'
    ppl_sampling:       str = 'end'
    ppl_crop:           bool = True
    ppl_batch_size:     int = 2
    lpips_net:          str = 'vgg'
    identity_model:     str = 'dlib'
    arcface_weights:    Optional[str] = None
    batch_size:         int = 64
    num_workers:        Optional[int] = None
    device:             Optional[str] = None    # Default: cuda when available.
    use_cache:          bool = True
    progress:           bool = False
    results_file:       Optional[str] = None    # Append one JSON line per metric here.
    exact:              bool = False        # Unfolded Inception BatchNorm (bit-exact with torch-fidelity).

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class Metric:
    name: str
    fn: Callable                # fn(ctx: metrics.api.MetricContext, opts: MetricOptions) -> (values, extras)
    needs: tuple = ()           # subset of NEEDS: inputs the request must give
    counted: Optional[str] = None   # counted-name form: 'real' (fid50k[_full]), 'pr' (pr50k3[_full]), 'gen' (is50k)
    features: tuple = ()        # (extractor, 'real'|'generated', feature name or fn(extractor) -> name);
                                # one pass per extractor and set computes the union for all requested metrics


REGISTRY: dict = {}


def register(name: str, needs=(), counted=None, features=()):
    """Decorator: make `fn(ctx, opts) -> (values, extras)` computable as metric `name`."""
    unknown = set(needs) - set(NEEDS)
    if unknown:
        raise ValueError(f'metric {name!r}: unknown needs {sorted(unknown)}; choose from {", ".join(NEEDS)}')

    def wrap(fn):
        REGISTRY[name] = Metric(name, fn, tuple(needs), counted, tuple(features))
        return fn
    return wrap


def names() -> tuple:
    return tuple(REGISTRY)


def lookup(requested) -> list:
    """Names (a list or 'a,b') -> [Metric] in registry order; unknown names list the registered ones."""
    if isinstance(requested, str):
        requested = requested.split(',')
    wanted = [m.strip().lower() for m in requested if m.strip()]
    unknown = [m for m in wanted if m not in REGISTRY]
    if unknown or not wanted:
        raise ValueError(f'unknown metric(s) {", ".join(unknown) or "(none given)"}; choose from {", ".join(REGISTRY)}')
    return [m for name, m in REGISTRY.items() if name in wanted]
