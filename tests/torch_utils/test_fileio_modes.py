"""Atomic writes give files the mode the user's umask asks for, as a plain open() would."""

import os
import stat

import pytest
import torch

from pstyle.models.checkpoint import save_network
from pstyle.torch_utils.fileio import atomic_path, atomic_torch_save
from pstyle.training import run_dir


@pytest.fixture
def umask():
    def set_mask(mask):
        old = os.umask(mask)
        restore.append(old)
    restore = []
    yield set_mask
    for old in restore:
        os.umask(old)


def _mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize('mask, expected', [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_atomic_writes_honour_the_umask(tmp_path, umask, mask, expected):
    umask(mask)
    with atomic_path(tmp_path / 'net.pt') as tmp:
        tmp.write_bytes(b'x')
    atomic_torch_save({'a': torch.zeros(2)}, tmp_path / 'snapshot.pt')
    run_dir.write_json(tmp_path / 'training_options.json', {'a': 1})
    for name in ('net.pt', 'snapshot.pt', 'training_options.json'):
        assert _mode(tmp_path / name) == expected, name


def test_atomic_write_matches_a_plain_open(tmp_path, umask):
    umask(0o027)
    (tmp_path / 'plain').write_bytes(b'x')
    with atomic_path(tmp_path / 'atomic') as tmp:
        tmp.write_bytes(b'x')
    assert _mode(tmp_path / 'atomic') == _mode(tmp_path / 'plain') == 0o640


def test_safetensors_networks_honour_the_umask(tmp_path, umask, tiny_network_factory):
    # safetensors recreates the file it writes, which used to lose the mode set on the temporary file (0600).
    umask(0o022)
    save_network(tmp_path / 'net.safetensors', G_ema=tiny_network_factory())
    assert _mode(tmp_path / 'net.safetensors') == 0o644
