"""URLs, short names and the download cache, without the internet (unreachable host, local server)."""

import functools
import hashlib
import http.server
import shutil
import threading

import pytest
import torch

from pstyle.models import checkpoint
from pstyle.models.checkpoint import (PRETRAINED, CheckpointError, Pretrained, cached_path, default_cache_dir, download,
                                 load_network, resolve_network, save_network)
from pstyle.models.networks import Generator

UNREACHABLE = 'http://127.0.0.1:9/x.pkl'  # Port 9 (discard): connection refused at once.


def tiny_file(path):
    torch.manual_seed(0)
    G = Generator(z_dim=4, c_dim=0, w_dim=4, img_resolution=8, img_channels=3,
                  mapping_kwargs=dict(num_layers=1), synthesis_kwargs=dict(channel_base=32, channel_max=8))
    return save_network(path, G_ema=G)


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def server(tmp_path):
    """An HTTP server on 127.0.0.1 serving tmp_path/www; yields (base URL, folder, stop())."""
    root = tmp_path / 'www'
    root.mkdir()
    handler = functools.partial(QuietHandler, directory=str(root))
    httpd = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    stopped = []

    def stop():
        if not stopped:
            httpd.shutdown()
            httpd.server_close()
            stopped.append(True)
    yield f'http://127.0.0.1:{httpd.server_address[1]}', root, stop
    stop()


def test_unreachable_url_names_url_and_path(tmp_path):
    cache = tmp_path / 'cache'
    expected = cached_path(UNREACHABLE, cache)
    with pytest.raises(CheckpointError) as info:
        load_network(UNREACHABLE, cache_dir=cache)
    message = str(info.value)
    assert f'cannot download {UNREACHABLE}' in message
    assert f'place it at {expected}' in message
    assert not any(cache.iterdir())  # No partial file left behind.


def test_preplaced_cached_file_is_used(tmp_path, fixtures):
    cache = tmp_path / 'cache'
    cache.mkdir()
    shutil.copy(fixtures / 'nvlabs_uncond32.pkl', cached_path(UNREACHABLE, cache))
    nets = load_network(UNREACHABLE, cache_dir=cache)
    assert nets['format'] == 'nvidia-pickle' and nets['source'] == UNREACHABLE


def test_short_name_offline_message(tmp_path, monkeypatch):
    monkeypatch.setitem(PRETRAINED, 'ffhq', Pretrained('http://127.0.0.1:9/ffhq.pkl', 1024, 'test'))
    monkeypatch.delenv('PSTYLE_NETWORK_FFHQ', raising=False)
    with pytest.raises(CheckpointError, match=r'cannot download http://127\.0\.0\.1:9/ffhq\.pkl .* place it at '
                                              r'.*cache/ffhq\.pkl, or set \$PSTYLE_NETWORK_FFHQ=/path/to/file'):
        resolve_network('ffhq', cache_dir=tmp_path / 'cache')


def test_short_name_from_cache_and_env(tmp_path, monkeypatch):
    cache = tmp_path / 'cache'
    cache.mkdir()
    monkeypatch.delenv('PSTYLE_NETWORK_METFACES', raising=False)
    placed = tiny_file(cache / 'metfaces.pt')
    placed.rename(cached_path(PRETRAINED['metfaces'].url, cache))  # .../metfaces.pkl: content decides the format.
    assert load_network('metfaces', cache_dir=cache)['G_ema'].img_resolution == 8
    override = tiny_file(tmp_path / 'mine.safetensors')
    monkeypatch.setenv('PSTYLE_NETWORK_METFACES', str(override))
    assert resolve_network('metfaces', cache_dir=cache) == override
    monkeypatch.setenv('PSTYLE_NETWORK_METFACES', str(tmp_path / 'missing.pkl'))
    with pytest.raises(CheckpointError, match=r'\$PSTYLE_NETWORK_METFACES points to .*missing\.pkl, which is not a file'):
        resolve_network('metfaces', cache_dir=cache)


def test_download_once_then_cache(server, tmp_path):
    base, root, stop = server
    tiny_file(root / 'net.pt')
    cache = tmp_path / 'cache'
    first = load_network(f'{base}/net.pt', cache_dir=cache)
    stop()  # The second load must not need the server.
    second = load_network(f'{base}/net.pt', cache_dir=cache)
    assert first['path'] == second['path'] == str(cached_path(f'{base}/net.pt', cache))
    assert [p.name for p in cache.iterdir()] == [cached_path(f'{base}/net.pt', cache).name]


def test_download_http_error(server, tmp_path):
    base, _, _ = server
    with pytest.raises(CheckpointError, match=r'cannot download .*/missing\.pkl \(HTTP 404 '):
        load_network(f'{base}/missing.pkl', cache_dir=tmp_path / 'cache')


def test_download_sha256(server, tmp_path):
    base, root, _ = server
    digest = hashlib.sha256(tiny_file(root / 'net.pt').read_bytes()).hexdigest()
    dest = tmp_path / 'cache' / 'net.pt'
    with pytest.raises(CheckpointError, match=f'sha256 {digest} does not match the expected 0000'):
        download(f'{base}/net.pt', dest, sha256='0' * 64)
    assert not dest.exists() and not any(dest.parent.iterdir())
    assert download(f'{base}/net.pt', dest, sha256=digest) == dest
    assert hashlib.sha256(dest.read_bytes()).hexdigest() == digest


def test_cache_dir_env(tmp_path, monkeypatch):
    monkeypatch.setenv('PSTYLE_CACHE_DIR', str(tmp_path / 'c'))
    assert default_cache_dir() == tmp_path / 'c'
    assert cached_path(PRETRAINED['ffhq'].url) == tmp_path / 'c' / 'ffhq.pkl'
    monkeypatch.delenv('PSTYLE_CACHE_DIR')
    assert default_cache_dir().parts[-2:] == ('portrait-stylegan', 'networks')


def test_registry_entries_are_honest():
    for name, entry in checkpoint.PRETRAINED.items():
        assert entry.url.startswith('https://') and entry.url.endswith('.pkl'), name
        assert entry.sha256 is None or len(entry.sha256) == 64, name
        assert entry.resolution in (256, 512, 1024), name
