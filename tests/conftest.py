"""Shared test helpers: the reference fixtures and a tiny network factory."""

import os
from pathlib import Path

import pytest
import torch

# One thread per pytest-xdist worker (the workers already fill the cores); two for a serial run.
torch.set_num_threads(1 if os.environ.get('PYTEST_XDIST_WORKER') else max(1, min(2, os.cpu_count() or 1)))

REPO = Path(__file__).resolve().parents[1]


def fixtures_dir() -> Path:
    """`../shared/fixtures` beside the checkout, or $PSTYLE_FIXTURES."""
    return Path(os.environ.get('PSTYLE_FIXTURES', REPO.parent / 'shared' / 'fixtures'))


@pytest.fixture(scope='session')
def fixtures():
    path = fixtures_dir()
    if not (path / 'README.md').is_file():
        msg = f'reference fixtures not found at {path}; set PSTYLE_FIXTURES'
        if os.environ.get('CI'):
            pytest.fail(msg)  # CI always has them: a missing copy is a failure, not a skip
        pytest.skip(msg)
    return path


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
