"""NVIDIA network snapshots (stylegan2-ada-pytorch, stylegan3's StyleGAN2 config) without running them.

A snapshot is a plain `pickle.dump` of `dict(G=..., D=..., G_ema=..., augment_pipe=..., ...)` whose
networks are `torch_utils.persistence` objects: each unpickles through
`_reconstruct_persistent_obj(meta)`, which in NVIDIA's code *executes* `meta['module_src']`. Here the
pickle is read by `RestrictedUnpickler`, whose `find_class` resolves only a whitelist of harmless
globals, and `_reconstruct_persistent_obj` is replaced by a function that merely records
`meta['class_name']` and `meta['state']`. Our own class is then built from the recorded `init_kwargs`
and every tensor is copied by its state_dict name with a shape check. `module_src` is never looked at.
"""

import collections
import io
import pickle
import warnings

import numpy as np
import torch
from pstyle.models.augment import AugmentPipe
from pstyle.models.formats import CheckpointError, build_network, check_config_size, copy_state, memory_budget

# ----------------------------------------------------------------------------
# Safe stand-ins for the globals a snapshot references.


class PersistentStub:
    """What `_reconstruct_persistent_obj(meta)` returns here: the class name and the object's __dict__."""

    def __init__(self, class_name, state, version=None):
        self.class_name = class_name
        self.state = state
        self.version = version

    def __repr__(self):
        return f'PersistentStub({self.class_name!r})'


class EasyDictStub(dict):
    """Stand-in for `dnnlib.util.EasyDict` (a dict with attribute access); converted to dict after loading."""


def _reconstruct_persistent_obj(meta):
    # NVIDIA's version exec()s meta['module_src']; this one only keeps the data.
    if not isinstance(meta, dict) or meta.get('type') != 'class' or not isinstance(meta.get('class_name'), str):
        raise CheckpointError('malformed torch_utils.persistence object in the pickle')
    if not isinstance(meta.get('state'), dict):
        raise CheckpointError(f'persistent object {meta["class_name"]!r} has no state dict')
    return PersistentStub(meta['class_name'], meta['state'], meta.get('version'))


def _load_storage_from_bytes(data):
    """`torch.storage._load_from_bytes`: the storage is a nested legacy torch.save; read it tensors-only."""
    if not isinstance(data, (bytes, bytearray)):
        raise CheckpointError('malformed tensor storage in the pickle')
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')  # TypedStorage deprecation notices.
        try:
            storage = torch.load(io.BytesIO(data), map_location='cpu', weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, AssertionError, EOFError, ValueError, KeyError, TypeError) as e:
            raise CheckpointError(f'malformed tensor storage in the pickle ({type(e).__name__}: {e})') from None
    if not isinstance(storage, (torch.storage.TypedStorage, torch.UntypedStorage)):
        raise CheckpointError('malformed tensor storage in the pickle')
    return storage


def _check_rebuild_args(storage, offset, size, stride, hooks):
    if not isinstance(storage, torch.storage.TypedStorage):
        raise CheckpointError('malformed tensor in the pickle: its storage is not a tensor storage')
    ints = [offset, *size, *stride]
    if not all(isinstance(v, int) and v >= 0 for v in ints) or len(size) != len(stride):
        raise CheckpointError('malformed tensor in the pickle: bad offset, size or stride')
    if hooks:
        raise CheckpointError('refusing to load a tensor that carries backward hooks')
    # torch would grow the storage to fit the view, exposing uninitialised memory: refuse instead.
    extent = 0 if 0 in size else offset + sum((n - 1) * st for n, st in zip(size, stride)) + 1
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')  # TypedStorage deprecation notices.
        available = storage.size()
    if extent > available:
        raise CheckpointError(f'malformed tensor in the pickle: a view of shape {list(size)} reaches element {extent} '
                              f'of a storage holding {available}')


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad, backward_hooks, metadata=None):
    """`torch._utils._rebuild_tensor_v2` with its arguments checked; torch bounds-checks the view."""
    _check_rebuild_args(storage, storage_offset, size, stride, backward_hooks)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        return torch._utils._rebuild_tensor_v2(storage, storage_offset, tuple(size), tuple(stride),
                                               bool(requires_grad), collections.OrderedDict())


def _rebuild_tensor(storage, storage_offset, size, stride):
    return _rebuild_tensor_v2(storage, storage_offset, size, stride, False, None)


def _rebuild_parameter(data, requires_grad, backward_hooks, state=None):
    """`torch._utils._rebuild_parameter[_with_state]`; extra Python state on a Parameter is dropped."""
    if not isinstance(data, torch.Tensor) or backward_hooks:
        raise CheckpointError('malformed parameter in the pickle')
    return torch.nn.Parameter(data, requires_grad=bool(requires_grad))


def _latin1_encode(text, encoding='latin1'):
    # numpy 1.x pickles array bytes as `_codecs.encode(str, 'latin1')`; no other codec is needed.
    if not isinstance(text, str) or encoding not in ('latin1', 'latin-1'):
        raise CheckpointError('refusing _codecs.encode with anything but a latin1 string')
    return text.encode('latin1')


def _numpy_globals():
    """numpy's array/scalar reconstructors under the numpy 1.x and 2.x module names."""
    multiarray = np._core.multiarray if hasattr(np, '_core') else np.core.multiarray
    out = {}
    for module in ('numpy.core.multiarray', 'numpy._core.multiarray'):
        out[(module, '_reconstruct')] = multiarray._reconstruct
        out[(module, 'scalar')] = multiarray.scalar
    out[('numpy', 'ndarray')] = np.ndarray
    out[('numpy', 'dtype')] = np.dtype
    out[('_codecs', 'encode')] = _latin1_encode
    return out


BASE_GLOBALS = {
    ('collections', 'OrderedDict'): collections.OrderedDict,
    ('builtins', 'set'): set,
    ('builtins', 'frozenset'): frozenset,
    ('builtins', 'slice'): slice,
    ('dnnlib.util', 'EasyDict'): EasyDictStub,
    ('dnnlib', 'EasyDict'): EasyDictStub,
    **_numpy_globals(),
}

NVIDIA_GLOBALS = {
    **BASE_GLOBALS,
    ('torch_utils.persistence', '_reconstruct_persistent_obj'): _reconstruct_persistent_obj,
    ('torch._utils', '_rebuild_tensor'): _rebuild_tensor,
    ('torch._utils', '_rebuild_tensor_v2'): _rebuild_tensor_v2,
    ('torch._utils', '_rebuild_parameter'): _rebuild_parameter,
    ('torch._utils', '_rebuild_parameter_with_state'): _rebuild_parameter,
    ('torch.storage', '_load_from_bytes'): _load_storage_from_bytes,
}


class RestrictedUnpickler(pickle.Unpickler):
    """An Unpickler that resolves only the globals in `allowed` ({(module, name): object})."""

    def __init__(self, file, allowed, source='<pickle>'):
        super().__init__(file)
        self.allowed = allowed
        self.source = source

    def find_class(self, module, name):
        obj = self.allowed.get((module, name))
        if obj is None:
            raise CheckpointError(
                f'refusing to load {self.source}: the pickle references the global {module}.{name}, '
                f'which is not on the whitelist of data-only types (nothing from the file was executed)')
        return obj

    def persistent_load(self, pid):
        raise CheckpointError(f'refusing to load {self.source}: unexpected persistent id in the pickle')


def restricted_load(path, allowed):
    """Unpickle `path` with `RestrictedUnpickler`; corrupt or truncated files raise CheckpointError."""
    with open(path, 'rb') as f:
        try:
            return RestrictedUnpickler(f, allowed, source=str(path)).load()
        except CheckpointError:
            raise
        except (EOFError, pickle.UnpicklingError, ValueError, TypeError, AttributeError, IndexError,
                KeyError, RuntimeError, MemoryError, OverflowError, UnicodeDecodeError, AssertionError) as e:
            raise CheckpointError(f'{path} is truncated or not a valid pickle ({type(e).__name__}: {e})') from None


def plain(obj):
    """EasyDicts -> dicts, tuples kept, recursively; numpy scalars -> Python numbers (for JSON)."""
    if isinstance(obj, dict):
        return {k: plain(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [plain(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(plain(v) for v in obj)
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


# ----------------------------------------------------------------------------
# Persistent objects -> our networks.

# Constructor arguments NVIDIA records that only select a run-time code path (no effect on weights).
RUNTIME_ONLY_KWARGS = ('fused_modconv_default',)


def stub_tensors(stub, prefix=''):
    """{state_dict name: tensor} of a persistent object, as `module.state_dict()` would list them."""
    state = stub.state
    out = {}
    for name, param in state.get('_parameters', {}).items():
        if param is not None:
            out[prefix + name] = param
    skip = set(state.get('_non_persistent_buffers_set', ()))
    for name, buf in state.get('_buffers', {}).items():
        if buf is not None and name not in skip:
            out[prefix + name] = buf
    for name, child in state.get('_modules', {}).items():
        if child is None:
            continue
        if not isinstance(child, PersistentStub):
            raise CheckpointError(f'unsupported submodule {prefix + name} of type {type(child).__name__}')
        out.update(stub_tensors(child, prefix + name + '.'))
    for name, value in out.items():
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(f'{name} is not a tensor in the pickle')
    return out


def stub_kwargs(stub):
    """The recorded constructor keyword arguments, made plain and stripped of run-time-only options."""
    state = stub.state
    if state.get('_init_args'):
        raise CheckpointError(f'{stub.class_name} was constructed with positional arguments; only keyword '
                              f'arguments (as NVIDIA\'s training code uses) are supported')
    check_config_size(state.get('_init_kwargs'), f'{stub.class_name} in the pickle')
    kwargs = plain(dict(state.get('_init_kwargs') or {}))
    if not kwargs:
        raise CheckpointError(f'{stub.class_name} in the pickle has no recorded init_kwargs')
    for key in RUNTIME_ONLY_KWARGS:
        kwargs.pop(key, None)
        if isinstance(kwargs.get('synthesis_kwargs'), dict):
            kwargs['synthesis_kwargs'].pop(key, None)
    return kwargs


def _check_stylegan2(stub, name):
    # stylegan3's alias-free generator shares the class name 'Generator' but not the layout.
    synthesis = stub.state.get('_modules', {}).get('synthesis')
    if isinstance(synthesis, PersistentStub) and 'input' in synthesis.state.get('_modules', {}):
        raise CheckpointError(f'{name} is a StyleGAN3 (alias-free) generator; only StyleGAN2 networks are supported')


def rebuild(stub, name, source):
    """Our Generator/Discriminator from a persistent stub, every tensor copied with a shape check."""
    if stub.class_name not in ('Generator', 'Discriminator'):
        raise CheckpointError(f'{name} in {source} is a {stub.class_name!r}; expected Generator or Discriminator')
    _check_stylegan2(stub, name)
    tensors = stub_tensors(stub)
    net = build_network(stub.class_name, stub_kwargs(stub), what=f'{name} in {source}', tensors=tensors,
                        max_bytes=memory_budget(tensors.values()))
    copy_state(net, tensors, what=f'{name} in {source}')
    return net


def _augment_pipe(stub):
    """AugmentPipe: our training/augment.py object when that module provides one, else its config."""
    kwargs = stub_kwargs(stub)
    p = stub.state.get('_buffers', {}).get('p')
    p = float(p) if isinstance(p, torch.Tensor) and p.numel() == 1 else None
    try:
        pipe = AugmentPipe(**kwargs)
    except (ImportError, TypeError, ValueError):
        return dict(class_name='AugmentPipe', init_kwargs=kwargs, p=p)
    if p is not None:
        pipe.p.copy_(torch.as_tensor(p))
    return pipe


def load_nvidia_pickle(path):
    """{'G', 'D', 'G_ema', 'augment_pipe', 'training_set_kwargs' when present} from a snapshot."""
    data = restricted_load(path, NVIDIA_GLOBALS)
    if isinstance(data, PersistentStub):
        data = {'G_ema': data}  # A pickled bare generator.
    if not isinstance(data, dict):
        raise CheckpointError(f'{path}: expected a dict of networks, got {type(data).__name__}')
    out = {}
    for key in ('G', 'D', 'G_ema'):
        if isinstance(data.get(key), PersistentStub):
            out[key] = rebuild(data[key], key, path)
    if isinstance(data.get('augment_pipe'), PersistentStub):
        out['augment_pipe'] = _augment_pipe(data['augment_pipe'])
    if isinstance(data.get('training_set_kwargs'), dict):
        check_config_size(data['training_set_kwargs'], f'training_set_kwargs in {path}')
        out['training_set_kwargs'] = plain(dict(data['training_set_kwargs']))
    return out
