"""Bad and hostile input: a clear CheckpointError, and nothing from the file ever executed."""

import io
import os
import pickle

import pytest
import torch

from pstyle.models.checkpoint import CheckpointError, detect_format, load_network
from pstyle.models.convert_nvidia import restricted_load
from pstyle.models.convert_tf import TF_GLOBALS, convert_discriminator, convert_generator

SYSTEM = r'(posix|nt|os)\.system'


class Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f'echo pwned > {self.marker}',))


def test_os_system_pickle_refused(tmp_path):
    marker = tmp_path / 'pwned.txt'
    path = tmp_path / 'network.pkl'
    path.write_bytes(pickle.dumps({'G_ema': Evil(marker)}))
    with pytest.raises(CheckpointError, match=f'^refusing to load .*global {SYSTEM}, which is not on the whitelist') as e:
        load_network(path)
    assert 'truncated' not in str(e.value)  # a refusal, not damage
    with pytest.raises(CheckpointError, match=SYSTEM):
        detect_format(path)
    assert not marker.exists()


def test_pstyle_info_on_an_image_says_it_is_an_image_not_a_network(tmp_path):
    from click.testing import CliRunner
    from PIL import Image
    from pstyle.cli import main
    Image.new('RGB', (8, 8)).save(tmp_path / 'me.png')
    Image.new('RGB', (8, 8)).save(tmp_path / 'me.jpg')
    result = CliRunner().invoke(main, ['info', str(tmp_path / 'me.png')])
    assert result.exit_code == 1 and 'me.png is an image (PNG), not a network' in result.output
    assert 'truncated' not in result.output
    with pytest.raises(CheckpointError, match=r'me\.jpg is an image \(JPEG\), not a network'):
        load_network(tmp_path / 'me.jpg')


def test_os_system_in_torch_file_refused(tmp_path):
    marker = tmp_path / 'pwned.txt'
    path = tmp_path / 'network.pt'
    torch.save({'g_ema': Evil(marker)}, path)
    with pytest.raises(CheckpointError, match=r'weights_only=True\) rejected it: it references the global ' + SYSTEM):
        load_network(path)
    assert not marker.exists()


def test_restricted_unpickler_names_global(tmp_path):
    path = tmp_path / 'x.pkl'
    path.write_bytes(pickle.dumps(io.BytesIO(b'')))
    with pytest.raises(CheckpointError, match=r'_io\.BytesIO'):
        restricted_load(path, TF_GLOBALS)


def test_truncated_nvidia_pickle(fixtures, tmp_path):
    data = (fixtures / 'nvlabs_uncond32.pkl').read_bytes()
    path = tmp_path / 'truncated.pkl'
    path.write_bytes(data[:len(data) // 2])
    with pytest.raises(CheckpointError, match='truncated or not a valid pickle'):
        load_network(path)


def test_truncated_tf_pickle(fixtures, tmp_path):
    data = (fixtures / 'tf_uncond16.pkl').read_bytes()
    path = tmp_path / 'truncated.pkl'
    path.write_bytes(data[:len(data) - 100])
    with pytest.raises(CheckpointError, match='truncated or not a valid pickle'):
        load_network(path)


def test_truncated_torch_file(fixtures, tmp_path):
    data = (fixtures / 'rosinality_32.pt').read_bytes()
    path = tmp_path / 'truncated.pt'
    path.write_bytes(data[:len(data) // 2])
    with pytest.raises(CheckpointError, match='truncated or not a valid torch file'):
        load_network(path)


def test_html_page_saved_as_pkl(tmp_path):
    path = tmp_path / 'ffhq.pkl'
    path.write_text('\n<!DOCTYPE html>\n<html><head><title>Quota exceeded</title></head></html>\n')
    with pytest.raises(CheckpointError, match='is an HTML/XML page, not a network file'):
        load_network(path)


@pytest.mark.parametrize('content, message', [
    (b'', 'is empty'),
    (b'\x00\x01garbage' * 10, 'truncated or not a valid pickle'),
    (pickle.dumps({'weights': [1, 2, 3]}), 'neither an NVIDIA network snapshot'),
])
def test_unrecognised_files(tmp_path, content, message):
    path = tmp_path / 'file.pkl'
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=message):
        load_network(path)


def test_unknown_torch_dict(tmp_path):
    path = tmp_path / 'model.pt'
    torch.save({'model': {'w': torch.zeros(1)}}, path)
    with pytest.raises(CheckpointError, match=r"not a known network format .*\['model'\]"):
        load_network(path)


def test_missing_file_and_unknown_name(tmp_path):
    with pytest.raises(CheckpointError, match='no such file: .*nope.pkl'):
        load_network(tmp_path / 'nope.pkl')
    with pytest.raises(CheckpointError, match='not one of the short names demo, demo-toon, ffhq, metfaces'):
        load_network('ffhq-typo')


# ----------------------------------------------------------------------------
# TF variables: missing, unused and mis-shaped ones are named.

@pytest.fixture
def tf_stubs(fixtures):
    return restricted_load(fixtures / 'tf_uncond16.pkl', TF_GLOBALS)


def _drop(stub, name):
    stub.own_variables = [(k, v) for k, v in stub.own_variables if k != name]


def test_tf_missing_variable(tf_stubs):
    Gs = tf_stubs[2]
    _drop(Gs.components['synthesis'], '8x8/Conv1/mod_bias')
    with pytest.raises(CheckpointError, match=r'missing TF variables for synthesis\.b8\.conv1\.affine\.bias '
                                              r'\(TF synthesis/8x8/Conv1/mod_bias\)'):
        convert_generator(Gs)


def test_tf_unused_variable(tf_stubs):
    D = tf_stubs[1]
    D.own_variables.append(('8x8/Attention/weight', D.own_variables[0][1]))
    with pytest.raises(CheckpointError, match='TF variables with no counterpart: 8x8/Attention/weight'):
        convert_discriminator(D)


def test_tf_wrong_shape(tf_stubs):
    Gs = tf_stubs[2]
    synthesis = Gs.components['synthesis']
    synthesis.own_variables = [(k, v[:5] if k == '8x8/ToRGB/mod_weight' else v) for k, v in synthesis.own_variables]
    with pytest.raises(CheckpointError, match=r'wrong shapes: synthesis\.b8\.torgb\.affine\.weight \[96, 5\] '
                                              r'\(expected \[96, 32\]\)'):
        convert_generator(Gs)


def test_tf_conditional_refused(tf_stubs):
    Gs = tf_stubs[2]
    Gs.static_kwargs['label_size'] = 10
    with pytest.raises(CheckpointError, match='conditional TF networks'):
        convert_generator(Gs)
