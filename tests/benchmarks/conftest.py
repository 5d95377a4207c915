"""The benchmark scripts are files, not modules of the package: `load_benchmark('bench_x')` imports
benchmarks/bench_x.py under a name of its own for a smoke test."""

import importlib.util
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / 'benchmarks'


@pytest.fixture
def load_benchmark():
    def load(name):
        spec = importlib.util.spec_from_file_location(f'pstyle_tests_{name}', BENCHMARKS / f'{name}.py')
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    return load
