"""Smoke test of benchmarks/bench_distill.py on one photo and two projection steps (its figures are never asserted)."""

import importlib.util
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[2] / 'benchmarks'


def load():
    spec = importlib.util.spec_from_file_location('pstyle_tests_bench_distill', BENCHMARKS / 'bench_distill.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_distill_times_the_translator_beside_the_stylegan_pipeline(capsys):
    B = load()
    results = B.bench(steps=2, sizes=(64, 32), repeats=1, max_photos=1)
    methods = [(r['method'], r['size']) for r in results['rows']]
    assert methods == [('StyleGAN pipeline (optimize, 2 steps)', 64), ('distilled, torch fp32', 64),
                       ('distilled, onnxruntime', 64), ('distilled, torch fp32', 32), ('distilled, onnxruntime', 32)]
    assert results['photos'] == 1 and results['rows'][0]['speedup_vs_stylegan'] == 1.0
    assert all(r['seconds'] > 0 for r in results['rows'])
    B.report(results)
    assert 'vs StyleGAN' in capsys.readouterr().out
