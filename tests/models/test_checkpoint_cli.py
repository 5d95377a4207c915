"""Smoke tests of `pstyle convert` and `pstyle info` through the click group."""

import json

import torch
from click.testing import CliRunner

from pstyle.cli import main
from pstyle.models.checkpoint import load_network


def test_convert_nvidia_to_native_and_info(fixtures, tmp_path):
    dst = tmp_path / 'net.safetensors'
    result = CliRunner().invoke(main, ['convert', str(fixtures / 'nvlabs_uncond32.pkl'), str(dst)])
    assert result.exit_code == 0, result.output
    assert '(nvidia-pickle) ->' in result.output and 'D, G, G_ema' in result.output
    ref = load_network(fixtures / 'nvlabs_uncond32.pkl')
    ours = load_network(dst)
    assert all(torch.equal(v, ref['G_ema'].state_dict()[k]) for k, v in ours['G_ema'].state_dict().items())

    result = CliRunner().invoke(main, ['info', str(dst)])
    assert result.exit_code == 0, result.output
    assert 'format: native' in result.output
    assert 'z_dim 32, w_dim 32, num_ws 8, mapping layers 2' in result.output
    assert 'channels: 4:64 8:64 16:64 32:32' in result.output


def test_info_json(fixtures):
    result = CliRunner().invoke(main, ['info', str(fixtures / 'rosinality_32.pt'), '--json'])
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    assert info['format'] == 'rosinality'
    assert info['networks']['G_ema']['channels'] == {'4': 64, '8': 64, '16': 48, '32': 32}
    assert info['networks']['G_ema']['mapping_layers'] == 3


def test_convert_to_rosinality(fixtures, tmp_path):
    dst = tmp_path / 'ros.pt'
    result = CliRunner().invoke(main, ['convert', str(fixtures / 'tf_uncond16.pkl'), str(dst), '--format', 'rosinality'])
    assert result.exit_code == 1
    assert 'minibatch-std is not group 4' in result.output and '--skip-d' in result.output
    assert not dst.exists()
    result = CliRunner().invoke(main, ['convert', str(fixtures / 'tf_uncond16.pkl'), str(dst), '--format', 'rosinality',
                                       '--skip-d'])
    assert result.exit_code == 0, result.output
    assert set(torch.load(dst, weights_only=True)) == {'g_ema', 'g', 'latent_avg'}


def test_cli_errors(tmp_path):
    page = tmp_path / 'ffhq.pkl'
    page.write_text('<html>Not found</html>')
    result = CliRunner().invoke(main, ['info', str(page)])
    assert result.exit_code == 1
    assert 'is an HTML/XML page' in result.output
    result = CliRunner().invoke(main, ['convert', str(page), str(tmp_path / 'out.pt')])
    assert result.exit_code == 1 and 'HTML' in result.output
    result = CliRunner().invoke(main, ['convert', str(page), str(tmp_path / 'out.pt'), '--format', 'onnx'])
    assert result.exit_code == 2 and "'onnx' is not one of 'native', 'rosinality', 'nvidia'" in result.output
