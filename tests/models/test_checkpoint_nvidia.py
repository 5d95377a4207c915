"""NVIDIA network snapshots built in the test from tiny random networks, in NVIDIA's pickle layout:
`_reconstruct_persistent_obj(meta)` per module, tensors through torch's own pickling."""

import collections
import copy
import os
import pickle
import sys
import types

import pytest
import torch

from pstyle.models.checkpoint import CheckpointError, load_network
from pstyle.models.networks import Discriminator, Generator


def tiny_networks(seed=0):
    torch.manual_seed(seed)
    G = Generator(z_dim=8, c_dim=0, w_dim=8, img_resolution=16, img_channels=3,
                  mapping_kwargs=dict(num_layers=2), synthesis_kwargs=dict(channel_base=128, channel_max=16))
    D = Discriminator(c_dim=0, img_resolution=16, img_channels=3, channel_base=128, channel_max=16)
    with torch.no_grad():
        for net in (G, D):
            for tensor in net.state_dict().values():
                if tensor.is_floating_point():
                    tensor.add_(0.1 * torch.randn_like(tensor))
    return G.eval(), D.eval()


class Meta:
    """Pickles as NVIDIA's persistence does: torch_utils.persistence._reconstruct_persistent_obj(meta)."""

    def __init__(self, meta):
        self.meta = meta

    @property
    def state(self):
        return self.meta['state']

    def child(self, *names):
        node = self
        for name in names:
            node = node.state['_modules'][name]
        return node

    def __reduce__(self):
        return (sys.modules['torch_utils.persistence']._reconstruct_persistent_obj, (self.meta,))


def to_meta(module, module_src):
    state = dict(module.__dict__)
    kwargs = state.pop('init_kwargs', {})
    state.update(_init_args=(), _init_kwargs=copy.deepcopy(kwargs))
    state.update(_parameters=collections.OrderedDict(module._parameters), _buffers=collections.OrderedDict(module._buffers))
    state['_modules'] = collections.OrderedDict((k, to_meta(v, module_src)) for k, v in module._modules.items())
    return Meta(dict(type='class', version=6, module_src=module_src, class_name=type(module).__name__, state=state))


class Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f'echo pwned > {self.marker}',))


@pytest.fixture
def snapshot(tmp_path, monkeypatch):
    """write(data, name) -> path: pickles `data` with a stand-in torch_utils.persistence module."""
    fake = types.ModuleType('torch_utils.persistence')

    def _reconstruct_persistent_obj(meta):
        raise AssertionError('never called while writing')
    _reconstruct_persistent_obj.__module__ = 'torch_utils.persistence'
    _reconstruct_persistent_obj.__qualname__ = '_reconstruct_persistent_obj'
    fake._reconstruct_persistent_obj = _reconstruct_persistent_obj

    def write(data, name='snapshot.pkl'):
        with monkeypatch.context() as m:
            m.setitem(sys.modules, 'torch_utils.persistence', fake)
            path = tmp_path / name
            path.write_bytes(pickle.dumps(data))
        return path
    return write


@pytest.fixture
def marker(tmp_path):
    return tmp_path / 'executed.txt'


def snapshot_dict(G, D, marker):
    # module_src would create `marker` if anything ever ran it.
    src = f'import pathlib; pathlib.Path({str(marker)!r}).write_text("module_src executed")'
    return dict(G=to_meta(G, src), D=to_meta(D, src), G_ema=to_meta(G, src),
                training_set_kwargs=dict(resolution=16))


def test_snapshot_round_trip(snapshot, marker):
    G, D = tiny_networks()
    nets = load_network(snapshot(snapshot_dict(G, D, marker)))
    assert nets['format'] == 'nvidia-pickle'
    assert nets['training_set_kwargs'] == dict(resolution=16)
    for name, ref in (('G', G), ('G_ema', G), ('D', D)):
        ours = nets[name].state_dict()
        assert list(ours) == list(ref.state_dict())
        assert all(torch.equal(ours[k], v) for k, v in ref.state_dict().items())
    assert not marker.exists()


def test_missing_tensor_named(snapshot, marker):
    G, D = tiny_networks()
    data = snapshot_dict(G, D, marker)
    del data['G_ema'].child('synthesis', 'b8', 'conv0').state['_parameters']['weight']
    with pytest.raises(CheckpointError, match=r'G_ema in .* missing tensors: synthesis\.b8\.conv0\.weight'):
        load_network(snapshot(data))


def test_wrong_shape_named(snapshot, marker):
    G, D = tiny_networks()
    data = snapshot_dict(G, D, marker)
    data['D'].child('b4', 'fc').state['_parameters']['weight'] = torch.nn.Parameter(torch.zeros([16, 5]))
    with pytest.raises(CheckpointError, match=r'D in .* wrong shapes: b4\.fc\.weight \[16, 5\] \(expected \[16, 256\]\)'):
        load_network(snapshot(data))


def test_unknown_class_rejected(snapshot, marker):
    G, D = tiny_networks()
    data = snapshot_dict(G, D, marker)
    data['G_ema'].meta['class_name'] = 'Backdoor'
    with pytest.raises(CheckpointError, match="G_ema in .* is a 'Backdoor'; expected Generator or Discriminator"):
        load_network(snapshot(data))


def test_stylegan3_flat_kwargs(snapshot, marker):
    # stylegan3's networks_stylegan2.Generator records synthesis arguments flat, plus fused_modconv_default.
    G, D = tiny_networks()
    data = snapshot_dict(G, D, marker)
    kwargs = data['G_ema'].state['_init_kwargs']
    kwargs.update(kwargs.pop('synthesis_kwargs'), fused_modconv_default='inference_only')
    nets = load_network(snapshot(data))
    assert nets['G_ema'].synthesis.channels_dict == G.synthesis.channels_dict
    assert torch.equal(nets['G_ema'].synthesis.b16.torgb.weight, G.synthesis.b16.torgb.weight)


def test_stylegan3_alias_free_rejected(snapshot, marker):
    G, D = tiny_networks()
    data = snapshot_dict(G, D, marker)
    data['G_ema'].child('synthesis').state['_modules']['input'] = to_meta(torch.nn.Module(), '')
    data['G_ema'].child('synthesis').state['_modules']['input'].meta['class_name'] = 'SynthesisInput'
    with pytest.raises(CheckpointError, match='StyleGAN3 \\(alias-free\\) generator'):
        load_network(snapshot(data))


def test_missing_init_kwargs(snapshot, marker):
    G, D = tiny_networks()
    data = snapshot_dict(G, D, marker)
    data['G_ema'].state['_init_kwargs'] = {}
    with pytest.raises(CheckpointError, match='Generator in the pickle has no recorded init_kwargs'):
        load_network(snapshot(data))


def test_os_system_inside_snapshot(snapshot, marker):
    # The file is recognised as an NVIDIA snapshot; the restricted unpickler meets posix.system later.
    G, D = tiny_networks()
    data = snapshot_dict(G, D, marker)
    data['G_ema'].state['evil'] = Evil(marker)
    path = snapshot(data)
    with pytest.raises(CheckpointError, match=r'references the global (posix|os|nt)\.system'):
        load_network(path)
    assert not marker.exists()


def test_plain_module_rejected(snapshot, marker):
    G, D = tiny_networks()
    data = snapshot_dict(G, D, marker)
    data['G_ema'].child('mapping').state['_modules']['fc0'] = torch.nn.Linear(2, 2)
    with pytest.raises(CheckpointError, match=r'torch\.nn\.modules\.linear\.Linear'):
        load_network(snapshot(data))
