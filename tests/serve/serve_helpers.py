"""Helpers for the server tests: tiny networks, a server config over them, image bytes."""

import contextlib
import io
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import httpx
from PIL import Image


REPO = Path(__file__).resolve().parents[2]
def make_config(nets, **overrides):
    from pstyle.serve.config import ServeConfig, StyleConfig  # noqa: PLC0415
    base, styled = nets
    kw = dict(styles=[StyleConfig('toon', base, styled), StyleConfig('plain', base)], max_batch=4, max_wait_ms=20,
              lpips_weight=0.0, mse_weight=1.0, steps=2, max_steps=5, device='cpu')
    kw.update(overrides)
    return ServeConfig(**kw)


def wait_ready(client, timeout=60, expect=200):
    deadline = time.time() + timeout
    while time.time() < deadline:
        r = client.get('/healthz')
        if r.json()['status'] != 'loading':
            assert r.status_code == expect, r.json()
            return r
        time.sleep(0.05)
    raise AssertionError('models did not load')


def png_of(array):
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format='PNG')
    return buf.getvalue()


def photo_bytes(size=32, seed=0, fmt='PNG', **save_kw):
    rng = np.random.RandomState(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.randint(0, 256, (size, size, 3), dtype=np.uint8)).save(buf, format=fmt, **save_kw)
    return buf.getvalue()


def decode_png(data):
    img = Image.open(io.BytesIO(data))
    assert img.format == 'PNG'
    return np.array(img)


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_server(nets, tmp_path, args=(), env=None, timeout=120):
    """A real `pstyle serve --base A --styled B` subprocess on a free loopback port (nets None: no network
    options, the shipped demo networks): yields (url, process) once /healthz answers 200, and terminates it
    afterwards."""
    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS='1', **(env or {}))
    networks = ['--base', nets[0], '--styled', nets[1]] if nets else []
    cmd = [sys.executable, '-m', 'pstyle', 'serve', *networks, '--port', str(port),
           '--device', 'cpu', '--log-level', 'warning', *args]
    log_path = Path(tmp_path) / f'server-{port}.log'
    with open(log_path, 'wb') as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
        url = f'http://127.0.0.1:{port}'
        try:
            deadline = time.time() + timeout
            while True:
                assert proc.poll() is None, log_path.read_text()
                try:
                    if httpx.get(url + '/healthz', timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.time() < deadline, \
                    f'the server did not become healthy in {timeout} s; its log ends:\n{log_path.read_text()[-3000:]}'
                time.sleep(0.2)
            yield url, proc
        finally:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
