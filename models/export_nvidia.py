"""Write networks as an NVIDIA network snapshot (stylegan2-ada-pytorch / stylegan3 `legacy.load_network_pkl`).

The file is what NVIDIA's training loop writes: a pickle of `dict(G, D, G_ema, augment_pipe=None,
training_set_kwargs=None)` whose networks are `torch_utils.persistence` objects, each stored as
`_reconstruct_persistent_obj(meta)` with `meta = dict(type='class', version=6, module_src, class_name,
state)`. `module_src` is the text of `models/nvidia_module_src.py` (our code, torch only), which NVIDIA's
loader executes to rebuild the classes before restoring each object's `__dict__` (`state`). Our own
loader (`models/convert_nvidia.py`) reads the same file without executing anything.

Writing needs no NVIDIA code: the networks are mirrored into the classes of `nvidia_module_src`, and a
pickler emits `torch_utils.persistence._reconstruct_persistent_obj` and `dnnlib.util.EasyDict` by name.
"""

import copy
import pickle
import types
from pathlib import Path

import torch
from pstyle.models import nvidia_module_src as NV
from pstyle.models.formats import CheckpointError
from pstyle.torch_utils.fileio import atomic_path

PERSISTENCE_VERSION = 6  # `torch_utils.persistence._version` in stylegan2-ada-pytorch and stylegan3.
MODULE_SRC = Path(NV.__file__).read_text(encoding='utf-8')
EXPORTED_CLASSES = {name: getattr(NV, name) for name in (
    'FullyConnectedLayer', 'Conv2dLayer', 'MappingNetwork', 'SynthesisLayer', 'ToRGBLayer', 'SynthesisBlock',
    'SynthesisNetwork', 'Generator', 'DiscriminatorBlock', 'MinibatchStdLayer', 'DiscriminatorEpilogue',
    'Discriminator')}


def _reconstruct_persistent_obj(meta):
    """Never called: pickled by name, it stands for NVIDIA's `torch_utils.persistence` function."""
    raise RuntimeError('placeholder for torch_utils.persistence._reconstruct_persistent_obj')


class EasyDict(dict):
    """Pickled as `dnnlib.util.EasyDict`: NVIDIA's code sets nested `init_kwargs` by attribute
    (`legacy.load_network_pkl(force_fp16=True)` does `kwargs.synthesis_kwargs.num_fp16_res = 4`)."""


_FOREIGN_GLOBALS = {
    _reconstruct_persistent_obj: ('torch_utils.persistence', '_reconstruct_persistent_obj'),
    EasyDict: ('dnnlib.util', 'EasyDict'),
}


class SnapshotPickler(pickle._Pickler):  # The Python pickler: its save_global can be redirected.
    """Pickles mirrored networks as NVIDIA's persistent objects; refuses any other module."""

    def reducer_override(self, obj):
        if type(obj) is EasyDict:
            return EasyDict, (dict(obj),)
        if isinstance(obj, torch.nn.Module):
            class_name = type(obj).__name__
            if not isinstance(obj, EXPORTED_CLASSES.get(class_name, ())):
                raise CheckpointError(f'cannot write {class_name} to an NVIDIA snapshot: not a class of nvidia_module_src')
            # NVIDIA's persistent __reduce__: the state is the object's __dict__ (tensors, submodules, attributes).
            meta = dict(type='class', version=PERSISTENCE_VERSION, module_src=MODULE_SRC, class_name=class_name,
                        state=dict(obj.__dict__))
            return _reconstruct_persistent_obj, (meta,)
        return NotImplemented

    def save_global(self, obj, name=None):
        target = _FOREIGN_GLOBALS.get(obj) if isinstance(obj, type) or callable(obj) else None
        if target is None:
            return super().save_global(obj, name)
        if self.proto < 4:
            raise pickle.PicklingError('SnapshotPickler needs pickle protocol 4 or higher')
        module, qualname = target  # What pickle writes for an importable global (protocol >= 4).
        self.save(module)
        self.save(qualname)
        self.write(pickle.STACK_GLOBAL)
        self.memoize(obj)
        return None

    # The type dispatch table holds the base class's save_global for functions: point it at ours.
    dispatch = {**pickle._Pickler.dispatch, types.FunctionType: save_global}


def _easydicts(value):
    """Nested dicts -> EasyDict, as the values of NVIDIA's recorded init_kwargs."""
    if isinstance(value, dict):
        return EasyDict({k: _easydicts(v) for k, v in value.items()})
    return value


def mirror(net, what='network'):
    """Our Generator/Discriminator -> the same network as an `nvidia_module_src` object (tensors copied)."""
    cls = EXPORTED_CLASSES.get(type(net).__name__)
    if type(net).__name__ not in ('Generator', 'Discriminator') or cls is None:
        raise CheckpointError(f'{what}: cannot export a {type(net).__name__}; expected Generator or Discriminator')
    kwargs = {k: _easydicts(v) for k, v in copy.deepcopy(net.init_kwargs).items()}
    try:
        out = cls(**kwargs)
        out.load_state_dict({k: v.detach().to('cpu') for k, v in net.state_dict().items()}, strict=True)
    except (TypeError, ValueError, KeyError, RuntimeError, AssertionError) as e:
        raise CheckpointError(f'{what}: cannot express {type(net).__name__}(**{net.init_kwargs}) with NVIDIA\'s '
                              f'classes: {e}') from None
    return out.eval().requires_grad_(False)


def export_nvidia(path, G_ema, G=None, D=None):
    """Write `dict(G, D, G_ema, augment_pipe=None, training_set_kwargs=None)` as an NVIDIA snapshot, atomically.

    NVIDIA's loader requires all three networks: without G the generator slot holds a copy of G_ema; without
    D the export is refused.
    """
    if D is None:
        raise CheckpointError('an NVIDIA snapshot needs a discriminator (legacy.load_network_pkl requires G, D and '
                              'G_ema), and the source has none')
    data = dict(G=mirror(G if G is not None else G_ema, 'G'), D=mirror(D, 'D'), G_ema=mirror(G_ema, 'G_ema'),
                augment_pipe=None, training_set_kwargs=None)
    with atomic_path(path) as tmp:
        with open(tmp, 'wb') as f:
            SnapshotPickler(f, protocol=4).dump(data)
    return Path(path)
