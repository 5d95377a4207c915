"""Weight resolution: explicit path, env var, caches, verified download, and the offline message."""

import hashlib
import urllib.request

import pytest

from pstyle.metrics import weights as W


def _spec(tmp_path, data=b'weights!', **kw):
    src = tmp_path / 'remote.bin'
    src.write_bytes(data)
    digest = hashlib.sha256(data).hexdigest()
    base = dict(name='test weights', filename='w-test.bin', url=src.as_uri(), env_var='PSTYLE_TEST_WEIGHTS',
                sha256=digest, size=len(data))
    base.update(kw)
    return W.WeightSpec(**base)


def test_explicit_path_then_env_then_cache(tmp_path, monkeypatch):
    spec = _spec(tmp_path)
    explicit = tmp_path / 'mine.bin'
    explicit.write_bytes(b'x')
    assert W.resolve_weights(spec, path=str(explicit)) == explicit
    monkeypatch.setenv('PSTYLE_TEST_WEIGHTS', str(explicit))
    assert W.resolve_weights(spec) == explicit
    monkeypatch.delenv('PSTYLE_TEST_WEIGHTS')
    W.cache_dir().mkdir(parents=True)
    (W.cache_dir() / spec.filename).write_bytes(b'weights!')
    assert W.resolve_weights(spec, download=False) == W.cache_dir() / spec.filename


def test_torch_hub_folder_is_searched(tmp_path, monkeypatch):
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'th'))
    import torch
    monkeypatch.setattr(torch.hub, '_hub_dir', None)
    spec = _spec(tmp_path)
    W.hub_checkpoints_dir().mkdir(parents=True)
    (W.hub_checkpoints_dir() / spec.filename).write_bytes(b'weights!')
    assert W.resolve_weights(spec, download=False) == W.hub_checkpoints_dir() / spec.filename


def test_verified_download_into_cache(tmp_path):
    spec = _spec(tmp_path)
    path = W.resolve_weights(spec, download=True)
    assert path == W.cache_dir() / 'w-test.bin' and path.read_bytes() == b'weights!'
    assert not [p for p in W.cache_dir().iterdir() if p.name.startswith('.')]   # no temporary left behind


def test_downloaded_files_get_the_mode_of_the_umask(tmp_path):
    import os
    import stat
    old = os.umask(0o022)
    try:
        path = W.resolve_weights(_spec(tmp_path), download=True)
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644


def test_download_with_wrong_digest_is_discarded(tmp_path):
    spec = _spec(tmp_path, sha256='0' * 64)
    with pytest.raises(ValueError, match='does not match'):
        W.resolve_weights(spec, download=True)
    assert not (W.cache_dir() / spec.filename).exists()


def test_hash_prefix_convention(tmp_path):
    data = b'abc'
    spec = _spec(tmp_path, data=data, sha256=None, size=None, sha256_prefix='deadbeef')
    W.cache_dir().mkdir(parents=True)
    (W.cache_dir() / spec.filename).write_bytes(data)
    with pytest.raises(ValueError, match='does not start with deadbeef as the name w-test.bin says'):
        W.resolve_weights(spec, download=False)


def test_offline_message_names_file_url_and_place(tmp_path, monkeypatch):
    def no_network(*a, **k):
        raise OSError('network unreachable')
    monkeypatch.setattr(urllib.request, 'urlopen', no_network)
    spec = W.INCEPTION_PTH
    with pytest.raises(W.WeightsNotFoundError) as e:
        W.resolve_weights(spec, download=True)
    msg = str(e.value)
    assert 'pt_inception-2015-12-05-6726825d.pth not found (download failed: network unreachable)' in msg
    assert spec.url in msg and str(W.cache_dir() / spec.filename) in msg and '$PSTYLE_INCEPTION_WEIGHTS' in msg
    with pytest.raises(W.WeightsNotFoundError, match='model_ir_se50.pth not found. this file has no public URL'):
        W.resolve_weights(W.ARCFACE_IRSE50)


def test_bad_explicit_and_env_paths(tmp_path, monkeypatch):
    spec = _spec(tmp_path)
    with pytest.raises(W.WeightsNotFoundError, match='nope.bin does not exist. Expected w-test.bin from file:'):
        W.resolve_weights(spec, path=str(tmp_path / 'nope.bin'))
    monkeypatch.setenv('PSTYLE_TEST_WEIGHTS', str(tmp_path / 'gone.bin'))
    with pytest.raises(W.WeightsNotFoundError, match=r'\$PSTYLE_TEST_WEIGHTS=.*gone.bin does not exist'):
        W.resolve_weights(spec)


def test_file_sha256(tmp_path):
    p = tmp_path / 'f'
    p.write_bytes(b'hello')
    assert W.file_sha256(p) == hashlib.sha256(b'hello').hexdigest()
