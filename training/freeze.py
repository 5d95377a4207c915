"""FreezeD and FreezeG by exact module names.

FreezeD (Mo et al. 2020, "Freeze the Discriminator: a Simple Baseline for Fine-Tuning GANs"):
the first k layers of D counted from the top (input) resolution, with the layer numbering of NVIDIA's
`DiscriminatorBlock` (`first_layer_idx`; per block: fromrgb, conv0, conv1, skip), so `--freezed k`
freezes the same tensors as NVIDIA's `--freezed k`.

FreezeG (as popularised by the Toonify / FreezeG fine-tuning recipes): the generator blocks
b4 .. b<res> (the coarse layers that fix pose and face shape), optionally with the mapping network;
the blocks are those of the W+ table's rows `res:4-<res>` (`models/wplus.py`), whose `owned` tensors are
exactly the blocks' tensors.

Frozen modules get `requires_grad_(False)` and are left out of the optimizers and of the G_ema
update, so their tensors stay bit-identical in G, D and G_ema.
"""

import torch

from pstyle.models import wplus

# Layer order inside NVIDIA's DiscriminatorBlock; `first_layer_idx` counts in this order.
D_BLOCK_LAYERS = ('fromrgb', 'conv0', 'conv1', 'skip')


def d_layer_names(D):
    """Every freezable D layer as (module name, layer index), from the top resolution down."""
    out = []
    for res in D.block_resolutions:
        block = getattr(D, f'b{res}')
        present = [name for name in D_BLOCK_LAYERS if hasattr(block, name)]
        if len(present) != block.num_layers:
            raise AssertionError(f'b{res}: expected {block.num_layers} layers, found {present}')
        out += [(f'b{res}.{name}', block.first_layer_idx + i) for i, name in enumerate(present)]
    return out


def freezed_modules(D, freeze_layers):
    """Names of the first `freeze_layers` D layers (FreezeD)."""
    layers = d_layer_names(D)
    if not 0 <= freeze_layers <= len(layers):
        raise ValueError(f'--freezed must be between 0 and {len(layers)} (the number of D layers above the '
                         f'4x4 epilogue), got {freeze_layers}')
    return [name for name, idx in layers if idx < freeze_layers]


def freezeg_modules(G, resolution, mapping=False):
    """Names of G's synthesis blocks b4 .. b<resolution> (FreezeG), plus 'mapping' if asked."""
    names = []
    if resolution:
        valid = list(G.synthesis.block_resolutions)
        if resolution not in valid:
            raise ValueError(f'--freezeg must be one of the generator resolutions {valid} (or 0 for none), '
                             f'got {resolution}')
        table = wplus.layer_table(G)   # the blocks of the rows res:4-R, which own exactly those blocks' tensors
        rows = wplus.select_rows(G, f'res:{valid[0]}-{resolution}')
        names = [f'synthesis.b{block}' for block in sorted({table[i].block for i in rows})]
    if mapping:
        names.append('mapping')
    return names


def freeze_modules(net, module_names):
    """requires_grad_(False) on the named submodules; returns the frozen parameter names."""
    modules = dict(net.named_modules())
    missing = [name for name in module_names if name not in modules]
    if missing:
        raise ValueError(f'{type(net).__name__} has no modules {missing}')
    frozen = []
    for name in module_names:
        for pname, param in modules[name].named_parameters():
            param.requires_grad_(False)
            frozen.append(f'{name}.{pname}')
    return frozen


def trainable_params(net):
    """(name, parameter) pairs still trainable after freezing, in registration order."""
    return [(name, p) for name, p in net.named_parameters() if p.requires_grad]


def snapshot_tensors(net, names):
    """Detached copies of the named parameters (to check that frozen tensors do not move)."""
    params = dict(net.named_parameters())
    return {name: params[name].detach().clone() for name in names}


def assert_unchanged(net, reference):
    """Raise naming every tensor of `reference` that is no longer bit-identical in `net`."""
    params = dict(net.named_parameters())
    changed = [name for name, value in reference.items() if not torch.equal(params[name].detach(), value)]
    if changed:
        raise AssertionError(f'frozen tensors changed: {changed}')
