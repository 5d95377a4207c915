"""Per-layer weight blending of two generators with the same architecture (layer swapping).

Toonify (Pinkney & Adler 2020, "Resolution Dependent GAN Interpolation for Controllable Image
Synthesis Between Domains") takes the low-resolution layers of a base model and the high-resolution
layers of its fine-tune. Here every tensor of the result is `lerp(A, B, w)` with `w` the weight of the
W+ row that owns the tensor (`parameter_weights`); weights exactly 0 or 1 copy A or B bit for bit.

Ownership (documented in the README, tested in tests/stylize/test_stylize_blend.py):
- A convolution (`b{r}.conv0`, `b{r}.conv1`) -- weight, bias, affine, noise_strength, noise_const,
  resample_filter -- follows the W+ row it reads (`models/wplus.layer_table`, whose `owned` field holds
  this ownership for every row).
- ToRGB of block r follows its *own block*: the row of `b{r}.conv1`, not the row it reads (which it
  shares with `b{2r}.conv0`, resolution 2r). Following the row it reads would put `b{r}.torgb` on
  the B side of a swap at r -- an off-by-one between "blocks at <= r" and "rows at <= r". Following
  the block, a hard swap at r takes every tensor of blocks b4..b{r} from A and nothing else.
- Block tensors (`b{r}.const`, `b{r}.resample_filter`, the resnet `b{r}.skip`) follow `b{r}.conv1`.
- The mapping network and `w_avg` come from A by default (`mapping='from-a'`), so latents projected
  into A stay valid; 'from-b' takes B's; 'blend' lerps them at the mean of the row weights.
"""

import copy

import numpy as np
import torch
from pstyle.models import wplus

MAPPING_MODES = ('from-a', 'from-b', 'blend')
# Constructor arguments that change numerics only at run time, not the meaning of the tensors:
# they may differ between A and B (the result keeps A's). Everything else must match.
RUNTIME_KWARGS = ('num_fp16_res', 'conv_clamp', 'w_avg_beta', 'fp16_channels_last')


class ArchitectureMismatch(ValueError):
    """Two generators that cannot be blended tensor for tensor."""


# ----------------------------------------------------------------------------
# Compatibility.

# SynthesisBlock / SynthesisLayer arguments SynthesisNetwork passes through unrecorded when defaulted.
BLOCK_DEFAULTS = dict(architecture='skip', resample_filter=[1, 3, 3, 1], conv_clamp=None, fp16_channels_last=False,
                      use_noise=True, activation='lrelu', kernel_size=3, channels_last=False)


def effective_kwargs(G):
    """{'mapping.lr_multiplier': 0.01, 'synthesis.architecture': 'skip', ...}: every constructor
    argument that shapes G, with defaults filled in, wherever the caller put it."""
    out = {f'mapping.{k}': v for k, v in getattr(G.mapping, 'init_kwargs', {}).items()}
    synthesis = {**BLOCK_DEFAULTS, **getattr(G.synthesis, 'init_kwargs', {})}
    out.update({f'synthesis.{k}': v for k, v in synthesis.items()})
    return out


def check_compatible(G_a, G_b):
    """Raise ArchitectureMismatch naming the first tensor (key and both shapes) or constructor
    argument that differs; return the list of run-time-only differences (A's values are kept)."""
    state_a, state_b = G_a.state_dict(), G_b.state_dict()
    for key in state_a:
        if key not in state_b:
            raise ArchitectureMismatch(f'cannot blend: {key} {list(state_a[key].shape)} is in A but not in B')
        if state_a[key].shape != state_b[key].shape:
            raise ArchitectureMismatch(f'cannot blend: {key} has shape {list(state_a[key].shape)} in A '
                                       f'but {list(state_b[key].shape)} in B')
    for key in state_b:
        if key not in state_a:
            raise ArchitectureMismatch(f'cannot blend: {key} {list(state_b[key].shape)} is in B but not in A')
    kw_a, kw_b = effective_kwargs(G_a), effective_kwargs(G_b)
    runtime = []
    for key in sorted(set(kw_a) | set(kw_b)):
        va, vb = kw_a.get(key), kw_b.get(key)
        if _same(va, vb):
            continue
        if key.split('.')[-1] in RUNTIME_KWARGS:
            runtime.append(f'{key}: A={va!r}, B={vb!r} (keeping A\'s)')
            continue
        raise ArchitectureMismatch(f'cannot blend: constructor argument {key} is {va!r} in A but {vb!r} in B')
    return runtime


def _same(a, b):
    # JSON round trips turn tuples into lists; [1, 3, 3, 1] and (1, 3, 3, 1) are the same filter.
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return list(a) == list(b)
    return a == b


# ----------------------------------------------------------------------------
# Ownership: which W+ row's weight each tensor follows.

def parameter_owners(G):
    """{state_dict name: W+ row index, or 'mapping'} for every parameter and buffer of G: the W+ table's
    `owned` names (`models/wplus.py`), the mapping network for the rest."""
    owners = {name: row.index for row in wplus.layer_table(G) for name in row.owned}
    for name in G.state_dict():
        if name in owners:
            continue
        if not name.startswith('mapping.'):
            raise KeyError(f'{name}: no owner defined for this tensor (neither mapping nor a synthesis block)')
        owners[name] = 'mapping'
    return owners


def mapping_weight(row_weights, mapping):
    if mapping not in MAPPING_MODES:
        raise ValueError(f'mapping must be one of {", ".join(MAPPING_MODES)}, got {mapping!r}')
    return {'from-a': 0.0, 'from-b': 1.0, 'blend': float(np.mean(row_weights))}[mapping]


def parameter_weights(G, row_weights, mapping='from-a'):
    """{state_dict name: weight in [0, 1]} from the per-row weights [num_ws]."""
    row_weights = np.asarray(row_weights, dtype=np.float64)
    if row_weights.shape != (G.num_ws,):
        raise ValueError(f'expected {G.num_ws} row weights (num_ws), got shape {list(row_weights.shape)}')
    w_map = mapping_weight(row_weights, mapping)
    return {name: (w_map if owner == 'mapping' else float(row_weights[owner]))
            for name, owner in parameter_owners(G).items()}


# ----------------------------------------------------------------------------
# Blending.

def _hollow_copy(G):
    """A deep copy of G's module structure whose parameters and buffers are empty placeholders:
    the tensors are filled in by `blend_generators` with one allocation each, never copied twice."""
    memo = {}
    for _, tensor in G.named_parameters():
        memo[id(tensor)] = torch.nn.Parameter(torch.empty(0), requires_grad=tensor.requires_grad)
    for _, tensor in G.named_buffers():
        memo[id(tensor)] = torch.empty(0)
    return copy.deepcopy(G, memo)


def _set_tensor(G, name, value):
    module_name, _, attr = name.rpartition('.')
    module = G.get_submodule(module_name)
    if attr in module._parameters:
        module._parameters[attr] = torch.nn.Parameter(value, requires_grad=module._parameters[attr].requires_grad)
    else:
        module._buffers[attr] = value


@torch.no_grad()
def blend_generators(G_a, G_b, row_weights, mapping='from-a', copy_tensors=True):
    """A new generator (A's class and init_kwargs) whose every tensor is lerp(A, B, w_owner).

    Weights exactly 0 and 1 take A's or B's tensor unchanged (bit for bit). Neither input is
    modified. With copy_tensors=False those tensors share storage with A and B instead of being
    copied: faster and lighter (a figure with ten columns at 1024 holds one copy of the weights,
    not ten), for a result that is only rendered or saved, never trained or edited in place.
    """
    check_compatible(G_a, G_b)
    weights = parameter_weights(G_a, row_weights, mapping)
    state_a, state_b = G_a.state_dict(), G_b.state_dict()
    G = _hollow_copy(G_a)
    for name, a in state_a.items():
        w, b = weights[name], state_b[name].to(device=a.device)
        if w == 0.0:
            value = a.clone() if copy_tensors else a
        elif w == 1.0:
            value = b.to(dtype=a.dtype, copy=copy_tensors)
        elif not a.is_floating_point():
            raise ArchitectureMismatch(f'cannot blend {name}: {a.dtype} tensors can only be copied (weight 0 or 1)')
        else:
            # In float32 even for half tensors: nothing needs the rounding of a half-precision lerp.
            value = torch.lerp(a.float(), b.float(), w).to(a.dtype)
        _set_tensor(G, name, value)
    for name, tensor in list(G_a.named_parameters()) + list(G_a.named_buffers()):
        if name not in state_a:  # Non-persistent buffers (none in NVIDIA's layout): A's.
            _set_tensor(G, name, tensor.detach().clone() if copy_tensors else tensor.detach())
    return G


def blend_summary(G, row_weights, mapping='from-a'):
    """JSON-ready counts of parameters taken from A, from B and blended, for manifests."""
    weights = parameter_weights(G, row_weights, mapping)
    state = G.state_dict()
    count = dict(from_a=0, from_b=0, blended=0)
    for name, w in weights.items():
        key = 'from_a' if w == 0 else 'from_b' if w == 1 else 'blended'
        count[key] += state[name].numel()
    return dict(mapping=mapping, mapping_weight=mapping_weight(row_weights, mapping), **count)
