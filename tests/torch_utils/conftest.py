"""Shared set-up for the op tests: the float64 naive references and single-threaded tiny tensors."""

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

# pytest's importlib mode puts no test folder on sys.path: register ops_naive.py under a unique
# name so the test modules can `import pstyle_tests_ops_naive as naive`.
_NAME = 'pstyle_tests_ops_naive'
if _NAME not in sys.modules:
    _spec = importlib.util.spec_from_file_location(_NAME, Path(__file__).with_name('ops_naive.py'))
    sys.modules[_NAME] = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(sys.modules[_NAME])


@pytest.fixture(autouse=True, scope='module')
def _one_thread():
    """Tiny tensors: one thread avoids OpenMP hand-offs, which cost 100x on a loaded machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
