"""`pstyle train` on a full disk or an unwritable --outdir: one line naming the file and the cause, no traceback,
and no temporary file left behind."""

import errno

import pytest
import torch
from click.testing import CliRunner

from pstyle.cli import main
import pstyle_tests_train_helpers as H  # registered by conftest.py


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    return H.make_dataset(tmp_path_factory.mktemp('shapes'), num_images=8)


def train_cli(data, outdir):
    args = ['train', '--data', data, '--outdir', str(outdir), '--cfg', 'tiny', '--batch', '4', '--mbstd', '2',
            '--kimg', '0.004', '--tick', '0.004', '--grid', '1x1', '--workers', '0', '--device', 'cpu']
    return CliRunner().invoke(main, args, catch_exceptions=False)  # A traceback fails the test.


def test_an_outdir_under_a_regular_file_is_one_clear_error(tmp_path, data):
    (tmp_path / 'notes.txt').write_text('a file, not a folder')
    result = train_cli(data, tmp_path / 'notes.txt' / 'runs')
    assert result.exit_code == 1
    assert f'Error: {tmp_path / "notes.txt" / "runs"}' in result.output and '(ENOTDIR)' in result.output


def test_a_full_disk_while_saving_a_snapshot_names_the_file(tmp_path, data, monkeypatch):
    def full(obj, f, *args, **kwargs):
        raise OSError(errno.ENOSPC, 'No space left on device')  # What write() raises: no file name.
    monkeypatch.setattr(torch, 'save', full)
    result = train_cli(data, tmp_path)
    run = next(tmp_path.glob('00000-*'))
    assert result.exit_code == 1
    assert f'Error: {run / "network-snapshot-000000-000004img.pt"}: No space left on device (ENOSPC)' in result.output
    assert not list(run.glob('.*.tmp')) and not list(run.glob('network-snapshot-*'))
