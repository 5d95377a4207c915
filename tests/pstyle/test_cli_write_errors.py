"""`pstyle generate` / `style-mix` on a full disk or an unwritable --outdir: one line naming the file and the cause."""

import errno

import PIL.Image
import pytest
from click.testing import CliRunner

from pstyle.cli import main
from pstyle.models.checkpoint import save_network


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
