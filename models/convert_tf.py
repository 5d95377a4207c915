"""Original TensorFlow StyleGAN2 pickles `(G, D, Gs)` -> our Generator/Discriminator, without TensorFlow.

Each item is a `dnnlib.tflib.network.Network` whose pickled state holds `static_kwargs`, nested
`components` (G: `mapping`, `synthesis`) and `variables`, a list of (name, numpy array) pairs. The
unpickler maps that class to `NetworkStub`, which only keeps the state; `build_module_src` is never
run. Sizes and channel counts come from the variable shapes, options from `static_kwargs`.

Layout conversions (TF -> PyTorch, as in NVIDIA's stylegan2-ada-pytorch `legacy.py`):
convolutions [kh, kw, in, out] -> [out, in, kh, kw]; dense [in, out] -> [out, in]; up-sampling
convolutions are stored flipped (TF's transposed convolution) and are flipped back; `mod_bias` lacks
the +1 of the PyTorch affine bias; noise maps `noise<i>` [1, 1, r, r] -> `noise_const` [r, r]. Both
implementations store raw weights and apply equalized-lr gains at run time, so values copy directly.
"""

import re

import numpy as np
import torch
from pstyle.models.convert_nvidia import BASE_GLOBALS, plain, restricted_load
from pstyle.models.formats import (
    CheckpointError,
    _short,
    build_network,
    channel_kwargs,
    check_config_size,
    copy_state,
    memory_budget,
)


class NetworkStub:
    """Stand-in for `dnnlib.tflib.network.Network`: holds the pickled state, runs nothing."""

    def __setstate__(self, state):
        if not isinstance(state, dict) or not isinstance(state.get('variables'), (list, tuple)):
            raise CheckpointError('malformed dnnlib.tflib Network state in the pickle')
        self.name = state.get('name')
        check_config_size(state.get('static_kwargs'), f'TF network {_short(state.get("name"))}')
        self.static_kwargs = plain(dict(state.get('static_kwargs') or {}))
        self.components = dict(state.get('components') or {})
        self.own_variables = list(state['variables'])

    def variables(self, prefix=''):
        """{'mapping/Dense0/weight': array, ...}: own variables plus those of the components."""
        out = {}
        for name, value in self.own_variables:
            if not isinstance(value, np.ndarray):
                raise CheckpointError(f'TF variable {prefix}{name} is not an array')
            out[prefix + name] = value
        for comp_name, comp in self.components.items():
            if not isinstance(comp, NetworkStub):
                raise CheckpointError(f'TF component {comp_name} is not a Network')
            out.update(comp.variables(prefix + comp_name + '/'))
        return out

    def all_static_kwargs(self):
        kwargs = {}
        for comp in self.components.values():
            kwargs.update(comp.static_kwargs)
        kwargs.update(self.static_kwargs)
        return kwargs


TF_GLOBALS = {**BASE_GLOBALS, ('dnnlib.tflib.network', 'Network'): NetworkStub}


# ----------------------------------------------------------------------------
# Weight transforms.

def _conv(x):
    return x.transpose(3, 2, 0, 1)                     # [kh, kw, in, out] -> [out, in, kh, kw]


def _conv_up(x):
    return x[::-1, ::-1].transpose(3, 2, 0, 1)         # TF's transposed conv stores the kernel flipped.


def _dense(x):
    return x.transpose()                               # [in, out] -> [out, in]


def _same(x):
    return x


def _mod_bias(x):
    return x + 1                                       # PyTorch's affine bias starts at 1 (bias_init=1).


def _layer_source(scope, param, conv_fn):
    return {'weight': (f'{scope}/weight', conv_fn), 'bias': (f'{scope}/bias', _same),
            'noise_strength': (f'{scope}/noise_strength', _same),
            'affine.weight': (f'{scope}/mod_weight', _dense), 'affine.bias': (f'{scope}/mod_bias', _mod_bias)}.get(param)


def generator_source(key):
    """(TF variable name, transform) for one of our Generator's state_dict keys, or None."""
    if key == 'mapping.w_avg':
        return 'dlatent_avg', _same
    if m := re.fullmatch(r'mapping\.fc(\d+)\.(weight|bias)', key):
        return f'mapping/Dense{m[1]}/{m[2]}', _dense if m[2] == 'weight' else _same
    if key == 'synthesis.b4.const':
        return 'synthesis/4x4/Const/const', lambda x: x[0]   # [1, C, 4, 4] -> [C, 4, 4]
    if m := re.fullmatch(r'synthesis\.b(\d+)\.skip\.weight', key):
        return f'synthesis/{m[1]}x{m[1]}/Skip/weight', _conv_up
    m = re.fullmatch(r'synthesis\.b(\d+)\.(conv0|conv1|torgb)\.(.+)', key)
    if not m:
        return None
    res, layer, param = int(m[1]), m[2], m[3]
    if param == 'noise_const':
        # Noise inputs are numbered over all layers: 4x4 conv is 0, then conv0/conv1 of each block.
        log2 = int(np.log2(res))
        return f'synthesis/noise{2 * log2 - (5 if layer == "conv0" else 4)}', lambda x: x[0, 0]
    scope = {'conv0': 'Conv0_up', 'conv1': 'Conv' if res == 4 else 'Conv1', 'torgb': 'ToRGB'}[layer]
    return _layer_source(f'synthesis/{res}x{res}/{scope}', param, _conv_up if layer == 'conv0' else _conv)


def discriminator_source(key):
    """(TF variable name, transform) for one of our Discriminator's state_dict keys, or None."""
    if m := re.fullmatch(r'b(\d+)\.(fromrgb|conv0|conv1|skip|conv)\.(weight|bias)', key):
        res, layer, param = m[1], m[2], m[3]
        scope = {'fromrgb': 'FromRGB', 'conv0': 'Conv0', 'conv1': 'Conv1_down', 'skip': 'Skip', 'conv': 'Conv'}[layer]
        return f'{res}x{res}/{scope}/{param}', _conv if param == 'weight' else _same
    if m := re.fullmatch(r'b4\.(fc|out)\.(weight|bias)', key):
        scope = '4x4/Dense0' if m[1] == 'fc' else 'Output'
        return f'{scope}/{m[2]}', _dense if m[2] == 'weight' else _same
    return None


def convert_variables(net, variables, source_fn, what):
    """Fill `net` from TF variables via `source_fn`; every variable must be used, every tensor found."""
    tensors, used, missing = {}, set(), []
    for key in net.state_dict():
        if key.endswith('resample_filter'):
            continue  # Derived from the config, not stored by TF.
        src = source_fn(key)
        if src is None or src[0] not in variables:
            missing.append(f'{key} (TF {src[0]})' if src else key)
            continue
        tf_name, fn = src
        used.add(tf_name)
        # np.array copies and, unlike ascontiguousarray, keeps 0-d shapes (noise_strength).
        tensors[key] = torch.from_numpy(np.array(fn(variables[tf_name]), dtype=np.float32, order='C'))
    unused = sorted(set(variables) - used)
    if missing or unused:
        parts = ([f'missing TF variables for {", ".join(missing[:8])}'] if missing else []) + \
                ([f'TF variables with no counterpart: {", ".join(unused[:8])}'] if unused else [])
        raise CheckpointError(f'{what}: ' + '; '.join(parts))
    return copy_state(net, tensors, what=what, keep_missing=('*resample_filter',))


# ----------------------------------------------------------------------------
# Configs from shapes + static_kwargs.

def _resolutions(variables, prefix=''):
    return sorted({int(m[1]) for name in variables if (m := re.match(prefix + r'(\d+)x\1/', name))})


def _check_static(kw, what):
    if kw.get('label_size', 0):
        raise CheckpointError(f'{what}: conditional TF networks (label_size={kw["label_size"]}) are not supported')
    if float(kw.get('fmap_decay', 1.0)) != 1.0:
        raise CheckpointError(f'{what}: fmap_decay={kw["fmap_decay"]} has no PyTorch counterpart (only 1.0)')
    if not kw.get('normalize_latents', True):
        raise CheckpointError(f'{what}: normalize_latents=False is not supported')


def _common_kwargs(kw):
    """TF options shared by G and D -> our argument names (only those that are set)."""
    out = {}
    if 'resample_kernel' in kw and kw['resample_kernel'] is not None:
        out['resample_filter'] = [float(v) for v in kw['resample_kernel']]
    if kw.get('conv_clamp') is not None:
        out['conv_clamp'] = kw['conv_clamp']
    return out


def generator_kwargs(stub, variables, what):
    kw = stub.all_static_kwargs()
    _check_static(kw, what)
    resolutions = _resolutions(variables, 'synthesis/')
    num_layers = len([n for n in variables if re.fullmatch(r'mapping/Dense\d+/weight', n)])
    if not resolutions or num_layers == 0:
        raise CheckpointError(f'{what}: no synthesis/<r>x<r>/ or mapping/Dense<i> variables; not a StyleGAN2 generator')
    chans = {4: variables['synthesis/4x4/Const/const'].shape[1]} if 'synthesis/4x4/Const/const' in variables else {}
    chans.update({r: variables[f'synthesis/{r}x{r}/Conv1/weight'].shape[3]
                  for r in resolutions if f'synthesis/{r}x{r}/Conv1/weight' in variables})
    torgb = variables.get(f'synthesis/{resolutions[-1]}x{resolutions[-1]}/ToRGB/weight')
    mapping = dict(num_layers=num_layers, lr_multiplier=kw.get('mapping_lrmul', 0.01),
                   activation=kw.get('mapping_nonlinearity', 'lrelu'), w_avg_beta=kw.get('dlatent_avg_beta', 0.995))
    if num_layers > 1:
        mapping['layer_features'] = int(variables['mapping/Dense0/weight'].shape[1])
    synthesis = dict(channel_kwargs(chans), architecture=kw.get('architecture', 'skip'), **_common_kwargs(kw))
    if 'nonlinearity' in kw:
        synthesis['activation'] = kw['nonlinearity']
    if 'use_noise' in kw:
        synthesis['use_noise'] = bool(kw['use_noise'])
    return dict(z_dim=int(variables['mapping/Dense0/weight'].shape[0]),
                w_dim=int(variables[f'mapping/Dense{num_layers - 1}/weight'].shape[1]), c_dim=0,
                img_resolution=resolutions[-1], img_channels=int(torgb.shape[3]) if torgb is not None else 3,
                mapping_kwargs=mapping, synthesis_kwargs=synthesis)


def discriminator_kwargs(stub, variables, what):
    kw = stub.all_static_kwargs()
    _check_static(kw, what)
    resolutions = _resolutions(variables)
    if not resolutions or '4x4/Conv/weight' not in variables:
        raise CheckpointError(f'{what}: no <r>x<r>/ or 4x4/Conv variables; not a StyleGAN2 discriminator')
    chans = {4: variables['4x4/Conv/weight'].shape[3]}
    chans.update({r: variables[f'{r}x{r}/Conv0/weight'].shape[3] for r in resolutions if f'{r}x{r}/Conv0/weight' in variables})
    fromrgb = variables.get(f'{resolutions[-1]}x{resolutions[-1]}/FromRGB/weight')
    epilogue = dict(mbstd_group_size=kw.get('mbstd_group_size', 4), mbstd_num_channels=kw.get('mbstd_num_features', 1))
    block = dict(activation=kw['nonlinearity']) if 'nonlinearity' in kw else {}
    return dict(c_dim=0, img_resolution=resolutions[-1], img_channels=int(fromrgb.shape[2]) if fromrgb is not None else 3,
                architecture=kw.get('architecture', 'resnet'), **channel_kwargs(chans),
                epilogue_kwargs=epilogue, block_kwargs=block, **_common_kwargs(kw))


def convert_generator(stub, what='TF generator'):
    variables = stub.variables()
    net = build_network('Generator', generator_kwargs(stub, variables, what), what=what,
                        max_bytes=memory_budget(variables.values()))
    return convert_variables(net, variables, generator_source, what)


def convert_discriminator(stub, what='TF discriminator'):
    variables = stub.variables()
    net = build_network('Discriminator', discriminator_kwargs(stub, variables, what), what=what,
                        max_bytes=memory_budget(variables.values()))
    return convert_variables(net, variables, discriminator_source, what)


def load_tf_pickle(path):
    """{'G', 'D', 'G_ema'} from a TF StyleGAN2 pickle `(G, D, Gs)` (or a bare `Gs`)."""
    data = restricted_load(path, TF_GLOBALS)
    if isinstance(data, NetworkStub):
        data = (None, None, data)
    if not isinstance(data, (tuple, list)) or len(data) != 3:
        raise CheckpointError(f'{path}: expected the tuple (G, D, Gs) of TF networks, got {type(data).__name__}')
    out = {}
    for key, stub in zip(('G', 'D', 'G_ema'), data):
        if stub is None:
            continue
        if not isinstance(stub, NetworkStub):
            raise CheckpointError(f'{path}: item {key} is a {type(stub).__name__}, not a TF Network')
        convert = convert_discriminator if key == 'D' else convert_generator
        out[key] = convert(stub, what=f'{key} ({stub.name}) in {path}')
    return out
