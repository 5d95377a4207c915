"""Shared set-up for the server tests: tiny networks saved to files and a TestClient that waits for the models."""

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

# pytest's importlib mode puts no test folder on sys.path: register serve_helpers.py under a unique name.
_NAME = 'pstyle_tests_serve_helpers'
if _NAME not in sys.modules:
    _spec = importlib.util.spec_from_file_location(_NAME, Path(__file__).with_name('serve_helpers.py'))
    sys.modules[_NAME] = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(sys.modules[_NAME])
H = sys.modules[_NAME]


@pytest.fixture(scope='session')
def nets(tmp_path_factory, tiny_network_factory):
    """(base path, styled path) of a tiny pair saved in our format (the stylization tests' size)."""
    from pstyle.models.checkpoint import save_network
    root = tmp_path_factory.mktemp('nets')
    G_a = tiny_network_factory(1, resolution=32, perturb=0.05, synthesis_kwargs=dict(channel_base=512))
    save_network(root / 'a.pt', G_ema=G_a)
    save_network(root / 'b.pt', G_ema=tiny_network_factory.finetuned(G_a))
    return str(root / 'a.pt'), str(root / 'b.pt')


@pytest.fixture(scope='session')
def encoder_file(nets, tmp_path_factory, tiny_network_factory):
    """A tiny encoder of the base in `nets`, as `pstyle train-encoder` saves one."""
    from pstyle.models.checkpoint import load_network
    G_a = load_network(nets[0])['G_ema']
    return str(tiny_network_factory.encoder_file(tmp_path_factory.mktemp('enc') / 'enc.safetensors', G_a))


@pytest.fixture(autouse=True)
def _no_vgg(tmp_path, monkeypatch):
    """No LPIPS-VGG weights where the tests look (the machine may have them), and one torch thread."""
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch_home'))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def client_for(nets):
    """client_for(expect=200, **config overrides) -> a started TestClient with loaded models."""
    from fastapi.testclient import TestClient
    from pstyle.serve.app import create_app
    opened = []

    def make(expect=200, **overrides):
        client = TestClient(create_app(H.make_config(nets, **overrides)))
        client.__enter__()
        opened.append(client)
        H.wait_ready(client, expect=expect)
        return client
    yield make
    for client in opened:
        client.__exit__(None, None, None)


@pytest.fixture
def encoded_client(client_for, nets, encoder_file):
    """client_for(...) with the style `toon` inverted by the tiny encoder, `plain` without one."""
    from pstyle.serve.config import StyleConfig

    def make(encoder=encoder_file, plain=True, **overrides):
        styles = [StyleConfig('toon', nets[0], nets[1], encoder=encoder)] + [StyleConfig('plain', nets[0])] * plain
        return client_for(styles=styles, **overrides)
    return make
