"""Our own format (save_network / load_network), format detection and config helpers."""

import json

import pytest
import torch

from pstyle.models.checkpoint import (CheckpointError, channel_kwargs, detect_format, load_network, network_info,
                                 save_network)
from pstyle.models.networks import Discriminator, Generator


def tiny_networks(seed=0, **synthesis_kwargs):
    torch.manual_seed(seed)
    synthesis_kwargs = synthesis_kwargs or dict(channel_base=128, channel_max=16)
    G = Generator(z_dim=8, c_dim=0, w_dim=8, img_resolution=16, img_channels=3,
                  mapping_kwargs=dict(num_layers=2), synthesis_kwargs=synthesis_kwargs)
    D = Discriminator(c_dim=0, img_resolution=16, img_channels=3, channel_base=128, channel_max=16)
    with torch.no_grad():
        for net in (G, D):
            for tensor in net.state_dict().values():
                if tensor.is_floating_point():
                    tensor.add_(0.1 * torch.randn_like(tensor))  # Nothing trivially zero.
    return G.eval(), D.eval()


def assert_same_networks(a, b):
    assert type(a) is type(b)
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


@pytest.mark.parametrize('suffix', ['.pt', '.pth', '.safetensors'])
def test_native_round_trip(tmp_path, suffix):
    G, D = tiny_networks()
    path = save_network(tmp_path / f'net{suffix}', G=G, D=D, G_ema=G)
    assert detect_format(path) == 'native'
    nets = load_network(path)
    assert nets['format'] == 'native' and nets['source'] == str(path)
    for name, ref in (('G', G), ('G_ema', G), ('D', D)):
        assert_same_networks(nets[name], ref)
    z = torch.randn([2, 8], generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(nets['G_ema'](z, None, noise_mode='const'), G(z, None, noise_mode='const'))
        img = G(z, None, noise_mode='const')
        assert torch.equal(nets['D'](img, None), D(img, None))
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # No temp file left behind.


def test_native_pt_is_weights_only_loadable(tmp_path):
    G, _ = tiny_networks()
    path = save_network(tmp_path / 'g.pt', G_ema=G)
    payload = torch.load(path, weights_only=True)
    config = json.loads(payload['config'])
    assert payload['format'] == 'portrait-stylegan'
    assert config['G_ema']['class_name'] == 'Generator'
    assert config['G_ema']['init_kwargs']['z_dim'] == 8
    assert set(payload['tensors']) == {f'G_ema.{k}' for k in G.state_dict()}


def test_native_safetensors_metadata(tmp_path):
    from safetensors import safe_open
    G, _ = tiny_networks()
    path = save_network(tmp_path / 'g.safetensors', G_ema=G)
    with safe_open(str(path), 'pt') as f:
        meta = f.metadata()
    assert meta['format'] == 'portrait-stylegan'
    assert json.loads(meta['config'])['G_ema']['init_kwargs']['img_resolution'] == 16


def test_channel_table_survives_json(tmp_path):
    G, _ = tiny_networks(channels_dict={4: 16, 8: 12, 16: 8})
    nets = load_network(save_network(tmp_path / 'g.safetensors', G_ema=G))
    assert nets['G_ema'].synthesis.channels_dict == {4: 16, 8: 12, 16: 8}
    assert_same_networks(nets['G_ema'], G)


def test_G_only_becomes_G_ema(tmp_path):
    G, _ = tiny_networks()
    nets = load_network(save_network(tmp_path / 'g.pt', G=G))
    assert_same_networks(nets['G_ema'], G)


def test_save_is_atomic_on_failure(tmp_path):
    G, _ = tiny_networks()
    path = save_network(tmp_path / 'g.pt', G_ema=G)
    before = path.read_bytes()
    G.init_kwargs['bad'] = object()  # Not JSON: the save must fail before touching the old file.
    with pytest.raises(CheckpointError, match='JSON'):
        save_network(path, G_ema=G)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ['g.pt']


def test_save_interrupted_mid_write(tmp_path, monkeypatch):
    G, _ = tiny_networks()
    path = save_network(tmp_path / 'g.pt', G_ema=G)
    before = path.read_bytes()

    def crashing_save(obj, f):
        f.write(b'partial')  # save_network hands torch.save an open file
        raise OSError('disk full')
    monkeypatch.setattr(torch, 'save', crashing_save)
    with pytest.raises(OSError, match='disk full'):
        save_network(path, G_ema=G)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ['g.pt']


def test_save_errors(tmp_path):
    G, _ = tiny_networks()
    with pytest.raises(CheckpointError, match='unknown extension'):
        save_network(tmp_path / 'g.pkl', G_ema=G)
    with pytest.raises(CheckpointError, match='at least one network'):
        save_network(tmp_path / 'g.pt')
    with pytest.raises(CheckpointError, match='cannot save a Linear'):
        save_network(tmp_path / 'g.pt', G_ema=torch.nn.Linear(2, 2))


def _write_payload(path, config, tensors):
    torch.save(dict(format='portrait-stylegan', version=1, config=json.dumps(config), tensors=tensors), path)
    return path


def _payload_of(G):
    config = {'G_ema': dict(class_name='Generator', init_kwargs=G.init_kwargs)}
    tensors = {f'G_ema.{k}': v.clone() for k, v in G.state_dict().items()}
    return config, tensors


def test_native_missing_tensor_named(tmp_path):
    G, _ = tiny_networks()
    config, tensors = _payload_of(G)
    del tensors['G_ema.synthesis.b8.conv0.weight']
    path = _write_payload(tmp_path / 'g.pt', config, tensors)
    with pytest.raises(CheckpointError, match=r'missing tensors: synthesis\.b8\.conv0\.weight'):
        load_network(path)


def test_native_wrong_shape_named(tmp_path):
    G, _ = tiny_networks()
    config, tensors = _payload_of(G)
    tensors['G_ema.mapping.fc1.weight'] = torch.zeros([3, 8])
    path = _write_payload(tmp_path / 'g.pt', config, tensors)
    with pytest.raises(CheckpointError, match=r'wrong shapes: mapping\.fc1\.weight \[3, 8\] \(expected \[8, 8\]\)'):
        load_network(path)


def test_native_unexpected_tensor_named(tmp_path):
    G, _ = tiny_networks()
    config, tensors = _payload_of(G)
    tensors['G_ema.synthesis.b64.conv0.weight'] = torch.zeros([1])
    path = _write_payload(tmp_path / 'g.pt', config, tensors)
    with pytest.raises(CheckpointError, match=r'unexpected tensors: synthesis\.b64\.conv0\.weight'):
        load_network(path)


def test_native_class_whitelist(tmp_path):
    G, _ = tiny_networks()
    config, tensors = _payload_of(G)
    config['G_ema']['class_name'] = 'os.system'
    path = _write_payload(tmp_path / 'g.pt', config, tensors)
    with pytest.raises(CheckpointError, match=r"class 'os.system' is not one of \['Discriminator', 'Generator'\]"):
        load_network(path)


def test_native_bad_init_kwargs(tmp_path):
    G, _ = tiny_networks()
    config, tensors = _payload_of(G)
    config['G_ema']['init_kwargs']['no_such_argument'] = 1
    path = _write_payload(tmp_path / 'g.pt', config, tensors)
    with pytest.raises(CheckpointError, match='cannot build Generator'):
        load_network(path)


def test_detect_fixture_formats(fixtures):
    assert detect_format(fixtures / 'nvlabs_uncond32.pkl') == 'nvidia-pickle'
    assert detect_format(fixtures / 'tf_uncond16.pkl') == 'tf-pickle'
    assert detect_format(fixtures / 'rosinality_32.pt') == 'rosinality'


def test_foreign_safetensors_rejected(tmp_path):
    from safetensors.torch import save_file
    path = tmp_path / 'model.safetensors'
    save_file({'w': torch.zeros(2)}, str(path))
    with pytest.raises(CheckpointError, match='without portrait-stylegan metadata'):
        detect_format(path)


def test_channel_kwargs():
    nvidia = {res: min(32768 // res, 512) for res in (4, 8, 16, 32, 64, 128, 256, 512, 1024)}
    assert channel_kwargs(nvidia) == dict(channel_base=32768, channel_max=512)
    assert channel_kwargs({4: 96, 8: 96, 16: 64}) == dict(channel_base=1024, channel_max=96)
    assert channel_kwargs({4: 512, 8: 512}) == dict(channel_base=32768, channel_max=512)
    assert channel_kwargs({4: 64, 8: 64, 16: 48, 32: 32}) == dict(channels_dict={4: 64, 8: 64, 16: 48, 32: 32})


def test_network_info(tmp_path):
    G, D = tiny_networks()
    info = network_info(load_network(save_network(tmp_path / 'n.pt', G_ema=G, D=D)))
    g = info['networks']['G_ema']
    assert info['format'] == 'native'
    assert (g['img_resolution'], g['w_dim'], g['num_ws'], g['mapping_layers']) == (16, 8, 6, 2)
    assert g['channels'] == {4: 16, 8: 16, 16: 8}
    assert g['num_params'] == sum(p.numel() for p in G.parameters())
    assert info['networks']['D']['channels'] == {16: 8, 8: 16, 4: 16}
    json.dumps(info)
