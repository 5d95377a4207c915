"""What every network file reader shares: the error type, the class whitelist, building a network from
its config, and copying tensors with every missing, mis-shaped and unexpected name listed.

The converters (`convert_nvidia`, `convert_tf`, `convert_rosinality`) and `checkpoint` all build on this
module and on nothing of each other's, so the format dispatcher (`checkpoint`) sits above them.
"""

import fnmatch

from pstyle.models import networks


class CheckpointError(ValueError):
    """A network file that cannot be loaded: unknown format, unsafe content, bad or missing tensors."""


# ----------------------------------------------------------------------------
# Building networks and copying tensors (shared by all converters).

def network_classes():
    """The only classes a file may name."""
    return {'Generator': networks.Generator, 'Discriminator': networks.Discriminator}


def build_network(class_name, init_kwargs, what='network'):
    """`cls(**init_kwargs)` for a whitelisted class name, with a clear error on bad arguments."""
    cls = network_classes().get(class_name)
    if cls is None:
        raise CheckpointError(f'{what}: class {class_name!r} is not one of {sorted(network_classes())}')
    if not isinstance(init_kwargs, dict):
        raise CheckpointError(f'{what}: init_kwargs must be a dict, got {type(init_kwargs).__name__}')
    try:
        return cls(**init_kwargs)
    except (TypeError, ValueError, AssertionError, KeyError) as e:
        raise CheckpointError(f'{what}: cannot build {class_name}(**{init_kwargs}): {e}') from None


def _listing(items, limit=8):
    items = list(items)
    more = f' ... and {len(items) - limit} more' if len(items) > limit else ''
    return ', '.join(items[:limit]) + more


def copy_state(net, tensors, what='network', keep_missing=()):
    """Load `tensors` ({state_dict name: tensor}) into `net`, checking names and shapes first.

    Names matching a glob in `keep_missing` (e.g. '*.resample_filter', buffers derived from the
    config) may be absent and keep the value `net` was built with.
    """
    expected = net.state_dict()
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
