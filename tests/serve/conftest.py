"""Tiny networks saved to files, a server config over them, and a TestClient that waits for the models."""

import copy
import io
import time

import numpy as np
import pytest
import torch
from PIL import Image

from training.checkpoint import save_network
from training.networks import Generator

TINY = dict(z_dim=16, w_dim=16, c_dim=0, img_resolution=32, img_channels=3, mapping_kwargs=dict(num_layers=2),
            synthesis_kwargs=dict(channel_base=512, channel_max=32))


def tiny_G(seed=1):
    torch.manual_seed(seed)
    G = Generator(**copy.deepcopy(TINY)).eval().requires_grad_(False)
    with torch.no_grad():
        for name, tensor in G.state_dict().items():
            if 'resample_filter' not in name:
                tensor.add_(0.05 * torch.randn_like(tensor))
    return G


@torch.no_grad()
def finetuned(G, seed=2, scale=0.3):
    torch.manual_seed(seed)
    G_b = copy.deepcopy(G)
    for name, tensor in G_b.state_dict().items():
        if 'resample_filter' not in name:
            tensor.add_(scale * torch.randn_like(tensor))
    return G_b


@pytest.fixture(scope='session')
def nets(tmp_path_factory):
    """(base path, styled path) of a tiny pair saved in our format."""
    root = tmp_path_factory.mktemp('nets')
    G_a = tiny_G()
    save_network(root / 'a.pt', G_ema=G_a)
    save_network(root / 'b.pt', G_ema=finetuned(G_a))
    return str(root / 'a.pt'), str(root / 'b.pt')


@pytest.fixture(autouse=True)
def _no_vgg(tmp_path, monkeypatch):
    """No LPIPS-VGG weights anywhere the tests look (the machine may or may not have them)."""
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch_home'))
    torch.set_num_threads(1)


def make_config(nets, **overrides):
    from serve.config import ServeConfig, StyleConfig
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


@pytest.fixture
def client_for(nets):
    """client_for(**config overrides) -> a started TestClient with loaded models."""
    from fastapi.testclient import TestClient
    from serve.app import create_app
    opened = []

    def make(expect=200, **overrides):
        client = TestClient(create_app(make_config(nets, **overrides)))
        client.__enter__()
        opened.append(client)
        wait_ready(client, expect=expect)
        return client
    yield make
    for client in opened:
        client.__exit__(None, None, None)


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
