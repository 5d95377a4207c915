"""Shared test helpers: the reference fixtures, the one tiny-network factory, the cuda marker rule."""

import os
from pathlib import Path

import pytest
import torch

# One thread per pytest-xdist worker (the workers already fill the cores); two for a serial run.
torch.set_num_threads(1 if os.environ.get('PYTEST_XDIST_WORKER') else max(1, min(2, os.cpu_count() or 1)))

REPO = Path(__file__).resolve().parents[1]


FIXTURES = REPO / 'tests' / 'fixtures'


def pytest_collection_modifyitems(config, items):
    """The one rule for GPU tests: every test that needs a CUDA device carries `@pytest.mark.cuda` and is
    skipped here when none is present, so `pytest -m 'not cuda'` runs everything else and skips nothing."""
    if torch.cuda.is_available():
        return
    no_gpu = pytest.mark.skip(reason='needs a CUDA GPU (marker cuda)')
    for item in items:
        if 'cuda' in item.keywords:
            item.add_marker(no_gpu)


@pytest.fixture(scope='session')
def fixtures():
    """The reference fixtures kept in the repository (`tests/fixtures`, taken unchanged from the original code's
    outputs; see its README). A missing file is a failure: the parity promise is never skipped."""
    expected = ['README.md', 'nvlabs_uncond32.pkl', 'nvlabs_uncond32.npz', 'nvlabs_uncond32_keys.json',
                'rosinality_32.pt', 'rosinality_32_ref.npz', 'tf_uncond16.pkl', 'tf_uncond16_ref.npz',
                'enc256_recipe.json', 'enc256_ref.npz', 'baselines_recipe.json', 'baselines_ref.npz']
    missing = [name for name in expected if not (FIXTURES / name).is_file()]
    if missing:
        pytest.fail(f'reference fixtures missing from {FIXTURES}: {", ".join(missing)}')
    return FIXTURES


TINY_G = dict(z_dim=16, w_dim=16, c_dim=0, img_channels=3, mapping_kwargs=dict(num_layers=2),
              synthesis_kwargs=dict(channel_base=256, channel_max=32))


def tiny_generator(seed=1, resolution=16, perturb=0.1, **overrides):
    """The tiny Generator every test folder builds on: eval mode, no gradients, and every tensor but the
    resample filters moved by `perturb` * N(0, 1) (a fresh network has zero biases, noise strengths and
    w_avg, which hides bugs). Dict overrides merge into the defaults (`synthesis_kwargs=dict(...)`)."""
    from pstyle.models.networks import Generator
    torch.manual_seed(seed)
    kwargs = dict(TINY_G, img_resolution=resolution)
    for key, value in overrides.items():
        kwargs[key] = {**kwargs.get(key, {}), **value} if isinstance(value, dict) else value
    G = Generator(**kwargs).eval().requires_grad_(False)
    with torch.no_grad():
        for name, tensor in G.state_dict().items():
            if 'resample_filter' not in name:
                tensor.add_(perturb * torch.randn_like(tensor))
    return G


@torch.no_grad()
def finetuned_generator(G, seed=2, scale=0.3):
    """A copy of G with every tensor moved (noise buffers and w_avg included): a stand-in fine-tune whose
    tensors each tell which network they came from."""
    import copy
    torch.manual_seed(seed)
    G_b = copy.deepcopy(G)
    for name, tensor in G_b.state_dict().items():
        if 'resample_filter' not in name:
            tensor.add_(scale * torch.randn_like(tensor))
    return G_b


tiny_generator.finetuned = finetuned_generator


TINY_D = dict(c_dim=0, img_channels=3, channel_base=256, channel_max=32)


def tiny_discriminator(seed=1, resolution=16, **overrides):
    """A Discriminator for `tiny_generator(resolution=...)`: eval mode, no gradients, seeded weights."""
    from pstyle.models.networks import Discriminator
    torch.manual_seed(seed)
    return Discriminator(**dict(TINY_D, img_resolution=resolution, **overrides)).eval().requires_grad_(False)


tiny_generator.discriminator = tiny_discriminator


def tiny_encoder_file(path, G, seed=0, record=None):
    """An untrained SmallEncoder file for G, as `pstyle train-encoder` saves one (random weights, latent_avg =
    half G's w_avg, the generator record naming G's weights unless `record` says otherwise)."""
    from pstyle.models.deltas import weights_sha256
    from pstyle.projectors.encoder import save_trained_encoder
    from pstyle.projectors.encoder_nets import SmallEncoder
    torch.manual_seed(seed)
    kwargs = dict(num_ws=G.num_ws, w_dim=G.w_dim, input_size=G.img_resolution, input_nc=G.img_channels)
    config = dict(arch='SmallEncoder', arch_kwargs=kwargs, num_ws=G.num_ws, w_dim=G.w_dim, input_size=G.img_resolution,
                  input_nc=G.img_channels, generator=record or dict(weights_sha256=weights_sha256(G)))
    return save_trained_encoder(path, SmallEncoder(**kwargs), G.mapping.w_avg[None].repeat(G.num_ws, 1) * 0.5, config)


tiny_generator.encoder_file = tiny_encoder_file


@pytest.fixture(scope='session')
def tiny_network_factory():
    """`tiny_generator` above (with `.finetuned`, `.discriminator` and `.encoder_file`), for the folder conftests and tests of other configurations."""
    return tiny_generator


@pytest.fixture
def torchrun():
    """The function below: run a command under torchrun."""
    return run_torchrun


def run_torchrun(args, nproc=2, cwd=None, timeout=300):
    """`python -m torch.distributed.run --nproc_per_node nproc ARGS` on a free loopback port (gloo on the CPU).

    A static rendezvous on a concrete port: torchrun's --standalone default (29400) may be taken by
    another test or user. Fails the test with the end of the output when any rank fails.
    """
    import socket
    import subprocess
    import sys
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        port = sock.getsockname()[1]
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--nnodes', '1', '--nproc_per_node', str(nproc),
           '--master_addr', '127.0.0.1', '--master_port', str(port), *map(str, args)]
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=str(REPO))
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, cwd=cwd)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return res
