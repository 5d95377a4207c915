"""Smoke test of benchmarks/bench_encoder.py: it runs the reference and our encoder in one run and writes its rows
(timings are never asserted)."""

import json

from click.testing import CliRunner


def test_bench_encoder_compares_ours_with_the_reference(load_benchmark, tmp_path):
    out = tmp_path / 'enc.json'
    result = CliRunner().invoke(load_benchmark('bench_encoder').main, ['--num-ws', '2', '--batch', '1', '--precision', 'fp32,fp16',
                                              '--repeats', '1', '--warmup', '0', '--threads', '1', '--json', str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report['num_ws'] == 2 and report['machine']['device'] == 'cpu'
    rows = report['rows']
    assert [r['variant'] for r in rows] == ['reference', 'ours-direct', 'ours-fp32']  # fp16 is CUDA only: left out.
    assert rows[0]['speedup'] == 1 and rows[0]['max_abs_diff'] == 0
    assert all(r['photos_per_s'] > 0 and r['max_abs_diff'] < 1e-3 for r in rows[1:])
    assert [r['winograd_convs'] for r in rows[:2]] == [0, 0] and rows[2]['winograd_convs'] > 0
    assert 'x1.00 vs reference' in result.output


def test_bench_encoder_refuses_an_odd_row_count(load_benchmark):
    result = CliRunner().invoke(load_benchmark('bench_encoder').main, ['--num-ws', '3'])
    assert result.exit_code != 0 and '3 is odd' in result.output
