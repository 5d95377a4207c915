"""Smoke test of benchmarks/bench_distill.py on one photo and two projection steps (its figures are never asserted)."""


def test_bench_distill_times_the_translator_beside_the_stylegan_pipeline(load_benchmark, capsys):
    B = load_benchmark('bench_distill')
    results = B.bench(steps=2, sizes=(64, 32), repeats=1, max_photos=1)
    methods = [(r['method'], r['size']) for r in results['rows']]
    assert methods == [('StyleGAN pipeline (optimize, 2 steps)', 64), ('distilled, torch fp32', 64),
                       ('distilled, onnxruntime', 64), ('distilled, torch fp32', 32), ('distilled, onnxruntime', 32)]
    assert results['photos'] == 1 and results['rows'][0]['speedup_vs_stylegan'] == 1.0
    assert all(r['seconds'] > 0 for r in results['rows'])
    B.report(results)
    assert 'vs StyleGAN' in capsys.readouterr().out
