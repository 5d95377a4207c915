"""What every network file reader shares: the error type, the class whitelist, building a network from
its config, and copying tensors with every missing, mis-shaped and unexpected name listed.

The converters (`convert_nvidia`, `convert_tf`, `convert_rosinality`) and `checkpoint` all build on this
module and on nothing of each other's, so the format dispatcher (`checkpoint`) sits above them.

Memory stays bounded on hostile files: a configuration is checked for size and sane values, then the
network is built on the `meta` device (shapes only, no memory) and compared with the stored tensors'
names and shapes, and its size with the bytes the file actually stores, before anything is allocated.
"""

import fnmatch

import numpy as np
import torch

from pstyle.models import networks


class CheckpointError(ValueError):
    """A network file that cannot be loaded: unknown format, unsafe content, bad or missing tensors."""


# ----------------------------------------------------------------------------
# Building networks and copying tensors (shared by all converters).

def network_classes():
    """The only classes a file may name."""
    return {'Generator': networks.Generator, 'Discriminator': networks.Discriminator}


MAX_CONFIG_VALUES = 10_000     # Values in one network's init_kwargs (a real one has about 30).
MAX_CONFIG_DEPTH = 16
CONFIG_BOUNDS = dict(img_resolution=(4, 8192), img_channels=(1, 64), z_dim=(0, 1 << 16), w_dim=(1, 1 << 16),
                     c_dim=(0, 1 << 16))
SLACK_BYTES = 64 << 20        # Buffers a file may leave out (noise maps, filters) on top of twice its tensors.


def check_config_size(obj, what):
    """Refuse a configuration with more than MAX_CONFIG_VALUES values or nested deeper than MAX_CONFIG_DEPTH,
    counting a shared object every time it is reached (a pickle can nest references exponentially)."""
    stack, count = [(obj, 0)], 0
    while stack:
        value, depth = stack.pop()
        count += 1
        if count > MAX_CONFIG_VALUES or depth > MAX_CONFIG_DEPTH:
            raise CheckpointError(f'{what}: the configuration has more than {MAX_CONFIG_VALUES} values or is nested '
                                  f'deeper than {MAX_CONFIG_DEPTH} levels; not a network configuration')
        if isinstance(value, dict):
            stack.extend((v, depth + 1) for item in value.items() for v in item)
        elif isinstance(value, (list, tuple, set, frozenset)):
            stack.extend((v, depth + 1) for v in value)


def _check_bounds(init_kwargs, what):
    for key, (lo, hi) in CONFIG_BOUNDS.items():
        value = init_kwargs.get(key)
        if value is not None and (not isinstance(value, (int, np.integer)) or isinstance(value, bool) or not lo <= value <= hi):
            raise CheckpointError(f'{what}: {key}={_short(value)} is outside the supported range {lo}..{hi}')
    res = init_kwargs.get('img_resolution')
    if res is not None and res & (res - 1):
        raise CheckpointError(f'{what}: img_resolution={res} is not a power of two')


def _short(value, limit=300):
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + '...'


def stored_bytes(values):
    """Bytes that tensors and arrays occupy in memory as loaded (storages shared by views counted once).
    A view that repeats a small storage (stride 0) declares a big shape but stores almost nothing."""
    seen, total = set(), 0
    for value in values:
        if isinstance(value, torch.Tensor):
            storage = value.untyped_storage()
            key = (storage.data_ptr(), storage.nbytes())
            if key not in seen:
                seen.add(key)
                total += storage.nbytes()
        elif isinstance(value, np.ndarray):
            total += value.nbytes
    return total


def memory_budget(values):
    """The most bytes a network built for these stored tensors may take."""
    return 2 * stored_bytes(values) + SLACK_BYTES


def build_network(class_name, init_kwargs, what='network', tensors=None, keep_missing=(), max_bytes=None):
    """`cls(**init_kwargs)` for a whitelisted class name, with a clear error on bad arguments.

    Before anything is allocated: the configuration's size and bounds are checked, and the network built
    on the meta device must match `tensors` ({name: tensor}; names in `keep_missing` may be absent) and
    take at most `max_bytes`."""
    cls = network_classes().get(class_name)
    if cls is None:
        raise CheckpointError(f'{what}: class {_short(class_name)} is not one of {sorted(network_classes())}')
    if not isinstance(init_kwargs, dict):
        raise CheckpointError(f'{what}: init_kwargs must be a dict, got {type(init_kwargs).__name__}')
    check_config_size(init_kwargs, what)
    _check_bounds(init_kwargs, what)
    with torch.device('meta'):
        shell = _construct(cls, init_kwargs, what)
    expected = shell.state_dict()
    if tensors is not None:
        problems = state_problems(expected, tensors, keep_missing)
        if problems:
            raise CheckpointError(f'{what} does not fit {class_name}: ' + '; '.join(problems))
    nbytes = sum(t.numel() * t.element_size() for t in expected.values())
    if max_bytes is not None and nbytes > max_bytes:
        raise CheckpointError(f'{what}: the configuration declares a {class_name} of {nbytes / 2 ** 20:.1f} MB, but the '
                              f'file stores only tensors for {max_bytes / 2 ** 20:.1f} MB; refusing to build it')
    return _construct(cls, init_kwargs, what)


def _construct(cls, init_kwargs, what):
    try:
        return cls(**init_kwargs)
    except (TypeError, ValueError, AssertionError, KeyError, IndexError, OverflowError, ZeroDivisionError,
            RuntimeError, NotImplementedError) as e:
        raise CheckpointError(f'{what}: cannot build {cls.__name__}(**{_short(init_kwargs)}): {e}') from None


def _listing(items, limit=8):
    items = list(items)
    more = f' ... and {len(items) - limit} more' if len(items) > limit else ''
    return ', '.join(items[:limit]) + more


def state_problems(expected, tensors, keep_missing=()):
    """Missing, mis-shaped and unexpected names of `tensors` against the state dict `expected`."""
    missing = [k for k in expected if k not in tensors and not any(fnmatch.fnmatch(k, p) for p in keep_missing)]
    unexpected = [k for k in tensors if k not in expected]
    wrong = [f'{k} {list(tensors[k].shape)} (expected {list(expected[k].shape)})'
             for k in expected if k in tensors and tuple(tensors[k].shape) != tuple(expected[k].shape)]
    problems = []
    if missing:
        problems.append(f'missing tensors: {_listing(missing)}')
    if wrong:
        problems.append(f'wrong shapes: {_listing(wrong)}')
    if unexpected:
        problems.append(f'unexpected tensors: {_listing(unexpected)}')
    return problems


def copy_state(net, tensors, what='network', keep_missing=()):
    """Load `tensors` ({state_dict name: tensor}) into `net`, checking names and shapes first.

    Names matching a glob in `keep_missing` (e.g. '*.resample_filter', buffers derived from the
    config) may be absent and keep the value `net` was built with.
    """
    expected = net.state_dict()
    problems = state_problems(expected, tensors, keep_missing)
    if problems:
        raise CheckpointError(f'{what} does not fit {type(net).__name__}: ' + '; '.join(problems))
    state = {k: tensors[k].detach() if k in tensors else v for k, v in expected.items()}
    net.load_state_dict(state, strict=True)
    return net


def channel_kwargs(table, default_base=32768):
    """{resolution: channels} -> channel_base/channel_max when NVIDIA's min(base // res, max)
    reproduces the table (so configs stay familiar), else an explicit `channels_dict`."""
    table = {int(r): int(c) for r, c in table.items()}
    cmax = max(table.values())
    candidates = [c * r for r, c in table.items() if c < cmax] or [default_base, cmax * max(table)]
    for base in candidates:
        if all(min(base // r, cmax) == c for r, c in table.items()):
            return dict(channel_base=base, channel_max=cmax)
    return dict(channels_dict=dict(sorted(table.items())))
