"""Commands on a full disk or with an output under a regular file: one line naming the file (where known) and the cause, no traceback."""

import errno

import PIL.Image
import pytest
from click.testing import CliRunner

from pstyle.cli import main
from pstyle.models.checkpoint import save_network
from pstyle.torch_utils import fileio


@pytest.fixture(scope='module')
def network(tmp_path_factory, tiny_network_factory):
    return save_network(tmp_path_factory.mktemp('net') / 'tiny.pt', G_ema=tiny_network_factory())


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)  # A traceback fails the test.


def test_generate_into_a_path_under_a_regular_file_is_one_clear_error(network, tmp_path):
    (tmp_path / 'notes.txt').write_text('a file, not a folder')
    result = invoke('generate', '--network', network, '--seeds', '0-1', '--outdir', tmp_path / 'notes.txt' / 'out')
    assert result.exit_code == 1
    assert f'Error: {tmp_path / "notes.txt" / "out"}: Not a directory (ENOTDIR)' in result.output


def test_generate_on_a_full_disk_names_the_image_and_keeps_the_ones_saved(network, tmp_path, monkeypatch):
    real_save, calls = PIL.Image.Image.save, {'n': 0}

    def save(self, fp, *args, **kwargs):
        calls['n'] += 1
        if calls['n'] == 3:
            raise OSError(errno.ENOSPC, 'No space left on device')  # What write() raises: no file name.
        return real_save(self, fp, *args, **kwargs)
    monkeypatch.setattr(PIL.Image.Image, 'save', save)
    out = tmp_path / 'out'
    result = invoke('generate', '--network', network, '--seeds', '0-4', '--outdir', out)
    assert result.exit_code == 1
    assert f'Error: {out / "seed0002.png"}: No space left on device (ENOSPC) (2 images saved to {out} before it)' in result.output


def test_style_mix_on_a_full_disk_is_one_clear_error(network, tmp_path, monkeypatch):
    monkeypatch.setattr(PIL.Image.Image, 'save', lambda *a, **k: (_ for _ in ()).throw(OSError(errno.ENOSPC, 'No space left on device')))
    result = invoke('style-mix', '--network', network, '--rows', '1', '--cols', '2', '--styles', '0-1', '--outdir', tmp_path)
    assert result.exit_code == 1
    assert f'Error: {tmp_path / "grid.png"}: No space left on device (ENOSPC)' in result.output


@pytest.fixture(scope='module')
def inputs(tmp_path_factory, tiny_network_factory):
    """A tiny network with its D (few-shot's loss), and a folder of one 16x16 photo."""
    root = tmp_path_factory.mktemp('inputs')
    G = tiny_network_factory()
    net = save_network(root / 'gd.pt', G_ema=G, D=tiny_network_factory.discriminator())
    (root / 'photos').mkdir()
    PIL.Image.new('RGB', (16, 16), (120, 90, 60)).save(root / 'photos' / 'p.png')
    return dict(net=net, photos=root / 'photos')


QUICK = ['--no-align', '--steps', '1', '--lpips-weight', '0', '--mse-weight', '1', '--device', 'cpu']
# Each command with its output under `bad` (a path below a regular file).
COMMANDS = {
    'align': lambda i, bad: ['align', i['photos'] / 'p.png', '--outdir', bad],
    'project': lambda i, bad: ['project', '--network', i['net'], '-i', i['photos'], '--outdir', bad, '--steps', '1',
                               '--lpips-weight', '0', '--mse-weight', '1', '--device', 'cpu'],
    'stylize': lambda i, bad: ['stylize', '--photos', i['photos'], '--base', i['net'], '--styled', i['net'], *QUICK,
                               '--no-metrics', '--outdir', bad],
    'stylize-grid': lambda i, bad: ['stylize-grid', '--photos', i['photos'], '--base', i['net'], '--styled', i['net'], *QUICK,
                                    '--no-metrics', '--swap-res', '8', '--out', bad / 'grid.png'],
    'dataset': lambda i, bad: ['dataset', '--source', i['photos'], '--dest', bad / 'data.zip'],
    'convert': lambda i, bad: ['convert', i['net'], bad / 'copy.pt'],
    'fewshot': lambda i, bad: ['fewshot', '--base', i['net'], '--style', i['photos'], '--outdir', bad, '--no-align',
                               '--project-steps', '1', '--lpips-weight', '0', '--mse-weight', '1', '--steps', '1', '--device', 'cpu'],
    'train-encoder': lambda i, bad: ['train-encoder', '--network', i['net'], '--kimg', '0.001', '--outdir', bad, '--device', 'cpu'],
    'demo': lambda i, bad: ['demo', '--outdir', bad, '--steps', '1'],
}


@pytest.mark.parametrize('command', list(COMMANDS))
def test_an_output_under_a_regular_file_is_one_line_naming_the_path(command, inputs, tmp_path):
    (tmp_path / 'notes.txt').write_text('a file, not a folder')
    bad = tmp_path / 'notes.txt' / 'out'
    result = invoke(*COMMANDS[command](inputs, bad))
    assert result.exit_code == 1, result.output
    error = [line for line in result.output.splitlines() if line.startswith('Error: ')]
    assert len(error) == 1 and 'Not a directory (ENOTDIR)' in error[0] and str(tmp_path / 'notes.txt') in error[0], result.output


@pytest.mark.parametrize('command', list(COMMANDS))
def test_a_full_disk_is_one_line_naming_the_cause(command, inputs, tmp_path, monkeypatch):
    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, 'No space left on device')  # What write() raises: no file name.
    monkeypatch.setattr(PIL.Image.Image, 'save', full)  # Images, and every atomic write (networks, manifests, latents).
    monkeypatch.setattr(fileio.os, 'replace', full)
    result = invoke(*COMMANDS[command](inputs, tmp_path / 'out'))
    assert result.exit_code == 1, result.output
    error = [line for line in result.output.splitlines() if line.startswith('Error: ')]
    assert len(error) == 1 and 'No space left on device (ENOSPC)' in error[0], result.output
