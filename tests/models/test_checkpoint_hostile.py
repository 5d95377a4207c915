"""Hostile and malformed network files, crafted here (each a few KB): bounded memory and time, and one
CheckpointError naming the problem; never a huge allocation, a raw traceback or uninitialised weights."""

import collections
import io
import json
import re
import struct
import zipfile

import pytest
import torch

from pstyle.models import export_nvidia
from pstyle.models.checkpoint import CheckpointError, load_network, save_network
from pstyle.models.convert_rosinality import export_rosinality, generator_to_rosinality


@pytest.fixture
def G(tiny_network_factory):
    return tiny_network_factory()


def nvidia_pickle(path, G_nv):
    with open(path, 'wb') as f:
        export_nvidia.SnapshotPickler(f, protocol=4).dump(dict(G_ema=G_nv))
    return path


def test_a_pickle_with_exponentially_nested_kwargs_is_refused_at_once(tmp_path, G):
    G_nv = export_nvidia.mirror(G)
    bomb = []
    for _ in range(40):  # 2**40 values once expanded; a few hundred bytes pickled (shared references).
        bomb = [bomb, bomb]
    G_nv._init_kwargs['synthesis_kwargs']['bomb'] = bomb
    path = nvidia_pickle(tmp_path / 'bomb.pkl', G_nv)
    with pytest.raises(CheckpointError, match=r'Generator in the pickle: the configuration has more than 10000 values '
                                              r'or is nested deeper than 16 levels'):
        load_network(path)


def test_a_pickle_declaring_30000_channels_is_refused_before_building(tmp_path, G):
    G_nv = export_nvidia.mirror(G)
    G_nv._init_kwargs['synthesis_kwargs'].update(channel_base=30000 * 16, channel_max=30000)  # 32 GB if built.
    with pytest.raises(CheckpointError, match=r'G_ema in .* does not fit Generator: wrong shapes: mapping|'
                                              r'G_ema in .* does not fit Generator: wrong shapes: synthesis'):
        load_network(nvidia_pickle(tmp_path / 'wide.pkl', G_nv))


def safetensors_with_header(path, edit):
    """A safetensors file whose JSON header went through `edit(header) -> header`."""
    raw = path.read_bytes()
    (size,) = struct.unpack('<Q', raw[:8])
    header = json.dumps(edit(json.loads(raw[8:8 + size]))).encode()
    out = path.with_name('edited.safetensors')
    out.write_bytes(struct.pack('<Q', len(header)) + header + raw[8 + size:])
    return out


def test_a_safetensors_config_declaring_a_huge_network_is_refused_before_building(tmp_path, G):
    path = save_network(tmp_path / 'g.safetensors', G_ema=G)

    def huge(header):
        config = json.loads(header['__metadata__']['config'])
        config['G_ema']['init_kwargs'].update(img_resolution=8192, synthesis_kwargs=dict(channel_base=1 << 30, channel_max=30000))
        header['__metadata__']['config'] = json.dumps(config)
        return header
    with pytest.raises(CheckpointError, match=r'G_ema in .*edited.safetensors does not fit Generator: missing tensors: '):
        load_network(safetensors_with_header(path, huge))

    def out_of_range(header):
        config = json.loads(header['__metadata__']['config'])
        config['G_ema']['init_kwargs'].update(img_resolution=1 << 40)
        header['__metadata__']['config'] = json.dumps(config)
        return header
    with pytest.raises(CheckpointError, match=r'img_resolution=1099511627776 is outside the supported range 4..8192'):
        load_network(safetensors_with_header(path, out_of_range))


def test_safetensors_metadata_that_is_a_list_is_refused(tmp_path, G):
    path = save_network(tmp_path / 'g.safetensors', G_ema=G)
    edited = safetensors_with_header(path, lambda h: dict(h, __metadata__=['format', 'portrait-stylegan']))
    with pytest.raises(CheckpointError, match=r'malformed safetensors header \(__metadata__ must map names to strings\)'):
        load_network(edited)


def test_a_rosinality_file_declaring_30000_channels_in_repeated_views_is_refused(tmp_path, G):
    sd = generator_to_rosinality(G)
    sd['input.input'] = torch.zeros(1).expand(1, 30000, 4, 4)  # 4 bytes stored, 30000 channels declared.
    torch.save(dict(g_ema=sd), tmp_path / 'wide.pt')
    with pytest.raises(CheckpointError, match=r'g_ema in .*wide.pt: the configuration declares a Generator of '
                                              r'\d+\.\d MB, but the file stores only tensors for \d+\.\d MB'):
        load_network(tmp_path / 'wide.pt')


@pytest.mark.parametrize('key, value, message', [
    ('style.1.weight', torch.zeros(16), r'style.1.weight has shape \[16\]; expected 2 dimensions'),
    ('input.input', torch.zeros(32), r'input.input has shape \[32\]; expected 4 dimensions'),
    ('convs.0.conv.blur.kernel', torch.ones(4), r'blur kernel of shape \[4\]; expected a small square 2-D kernel'),
    ('style.2.bias', 'not a tensor', r'entries that are not named tensors: style.2.bias'),
])
def test_rosinality_tensors_of_the_wrong_kind_are_refused(tmp_path, G, key, value, message):
    sd = generator_to_rosinality(G)
    sd[key] = value
    torch.save(dict(g_ema=sd), tmp_path / 'bad.pt')
    with pytest.raises(CheckpointError, match=r'g_ema in .*bad.pt: .*' + message):
        load_network(tmp_path / 'bad.pt')


def test_a_string_latent_avg_is_refused(tmp_path, G):
    export_rosinality(tmp_path / 'g.pt', G)
    payload = torch.load(tmp_path / 'g.pt', weights_only=True)
    payload['latent_avg'] = 'mean of 4096 samples'
    torch.save(payload, tmp_path / 'bad.pt')
    with pytest.raises(CheckpointError, match=r'latent_avg is a str; expected a tensor \[16\] or \[1, 16\]'):
        load_network(tmp_path / 'bad.pt')


class OversizedView:
    """Pickles as a [16] tensor over a storage of 4 floats (torch would grow the storage to fit)."""

    def __reduce__(self):
        return torch._utils._rebuild_tensor_v2, (torch.zeros(4).storage(), 0, (16,), (1,), False, collections.OrderedDict())


def test_a_tensor_view_larger_than_its_storage_is_refused(tmp_path, G):
    G_nv = export_nvidia.mirror(G)
    G_nv.mapping._buffers['w_avg'] = OversizedView()  # w_avg is [16]: only the storage is short.
    with pytest.raises(CheckpointError, match=r'a view of shape \[16\] reaches element 16 of a storage holding 4'):
        load_network(nvidia_pickle(tmp_path / 'view.pkl', G_nv))


def test_a_torch_zip_view_larger_than_its_storage_is_refused(tmp_path, G):
    buf = io.BytesIO()
    torch.save(dict(g_ema=dict(generator_to_rosinality(G), **{'style.1.bias': torch.arange(4.)})), buf)
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(buf.getvalue())) as zin, zipfile.ZipFile(out, 'w') as zout:
        for name in zin.namelist():
            data = zin.read(name)
            if name.endswith('data.pkl'):  # The one [4] tensor's size (BININT1 4, TUPLE1) becomes [4096].
                assert data.count(b'K\x00K\x04\x85') == 1
                data = data.replace(b'K\x00K\x04\x85', b'K\x00M\x00\x10\x85')
            zout.writestr(name, data)
    (tmp_path / 'view.pt').write_bytes(out.getvalue())
    with pytest.raises(CheckpointError, match=r'view.pt is truncated or not a valid torch file \(RuntimeError: .*resize'):
        load_network(tmp_path / 'view.pt')


@pytest.mark.parametrize('value', [float('nan'), float('inf')])
def test_non_finite_weights_are_refused_naming_the_tensor(tmp_path, G, value):
    G.synthesis.b8.conv1.weight.data[0, 0, 0, 0] = value
    path = save_network(tmp_path / 'g.pt', G_ema=G)
    with pytest.raises(CheckpointError, match=r'g.pt: G_ema.synthesis.b8.conv1.weight holds non-finite values \(NaN or Inf\); '
                                              r'the network would produce NaN images'):
        load_network(path)
    with pytest.warns(UserWarning, match=r'G_ema.synthesis.b8.conv1.weight holds non-finite values .*allow_nonfinite=True'):
        nets = load_network(path, allow_nonfinite=True)
    assert not torch.isfinite(nets['G_ema'].synthesis.b8.conv1.weight).all()


class DamagedStorage:
    """Pickles as NVIDIA's nested storage bytes whose storage key was altered (torch asserts on it)."""

    def __reduce__(self):
        buf = io.BytesIO()
        torch.save(torch.arange(4.).storage(), buf, _use_new_zipfile_serialization=False)
        key = re.findall(rb'\d{8,}', buf.getvalue())[0]
        return torch.storage._load_from_bytes, (buf.getvalue().replace(key, key[:-1] + b'x', 1),)


def test_damaged_nested_storage_bytes_in_a_pickle_are_refused(tmp_path, G):
    G_nv = export_nvidia.mirror(G)
    G_nv.mapping._buffers['w_avg'] = DamagedStorage()
    with pytest.raises(CheckpointError, match=r'malformed tensor storage in the pickle \(AssertionError: storage key'):
        load_network(nvidia_pickle(tmp_path / 'storage.pkl', G_nv))


def test_a_torch_file_whose_pickle_reads_a_missing_memo_entry_is_refused(tmp_path, G):
    buf = io.BytesIO()
    torch.save(dict(g_ema=generator_to_rosinality(G)), buf)
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(buf.getvalue())) as zin, zipfile.ZipFile(out, 'w') as zout:
        for name in zin.namelist():
            zout.writestr(name, b'\x80\x02h\x05.' if name.endswith('data.pkl') else zin.read(name))  # BINGET 5, STOP
    (tmp_path / 'memo.pt').write_bytes(out.getvalue())
    with pytest.raises(CheckpointError, match=r'memo.pt is truncated or not a valid torch file \(KeyError: 5\)'):
        load_network(tmp_path / 'memo.pt')
