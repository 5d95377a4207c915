"""Helpers for the server tests: tiny networks, a server config over them, image bytes."""

import copy
import io
import time

import numpy as np
import torch
from PIL import Image

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


def make_config(nets, **overrides):
    from serve.config import ServeConfig, StyleConfig  # noqa: PLC0415
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
