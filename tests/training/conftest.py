"""Shared set-up for the training tests: the tiny-run helpers as a module, and one torch thread."""

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

# pytest's importlib mode puts no test folder on sys.path: register train_helpers.py under a unique
# name so the test modules can `import pstyle_tests_train_helpers as H`.
_NAME = 'pstyle_tests_train_helpers'
if _NAME not in sys.modules:
    _spec = importlib.util.spec_from_file_location(_NAME, Path(__file__).with_name('train_helpers.py'))
    sys.modules[_NAME] = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(sys.modules[_NAME])


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny networks: one thread is fastest on a shared 2-core machine, and bit-exact comparisons
    (resume, freezing) need the same thread count on both sides."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
