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
