"""Smoke test of benchmarks/bench_baselines.py at a tiny size: every method runs, ratios come from the same run
(timings are never asserted)."""

import json

TINY = dict(z_dim=16, w_dim=16, c_dim=0, img_resolution=32, img_channels=3, mapping_kwargs=dict(num_layers=2),
            synthesis_kwargs=dict(channel_base=256, channel_max=32))


def test_bench_baselines_rows_and_ratios(load_benchmark, tmp_path, monkeypatch, capsys):
    B = load_benchmark('bench_baselines')
    monkeypatch.setattr(B, 'CONFIGS', {32: TINY})
    out = tmp_path / 'bench.json'
    rows = B.main(['--sizes', '32', '--photos', '1', '--precisions', 'fp32,bf16', '--project-steps', '1', '--nst-steps', '1',
                   '--out', str(out)])
    assert [(r['method'], r['precision']) for r in rows] == [(m, p) for p in ('fp32', 'bf16') for m in B.METHODS]
    timed = [r for r in rows if 'seconds_per_photo' in r]
    assert {(r['method'], r['precision']) for r in timed} == {(m, 'fp32') for m in B.METHODS} | {('stylegan', 'bf16'), ('nst', 'bf16')}
    assert all(r['seconds_per_photo'] > 0 and r['photos'] == 1 for r in timed)
    assert all(r['ratio_to_stylegan'] == r['seconds_per_photo'] / next(
        s['seconds_per_photo'] for s in timed if s['method'] == 'stylegan' and s['precision'] == r['precision']) for r in timed)
    assert [r['note'] for r in rows if 'note' in r] == ['no bf16 path in the code'] * 2
    saved = json.loads(out.read_text())
    assert saved['rows'] == rows and saved['machine']['load_average'] and 'cpu_model' in saved['machine']
    assert '× StyleGAN pipeline' in capsys.readouterr().out


def test_bench_baselines_stops_starting_methods_after_max_seconds(load_benchmark, monkeypatch):
    B = load_benchmark('bench_baselines')
    monkeypatch.setattr(B, 'CONFIGS', {32: TINY})
    rows = B.main(['--sizes', '32', '--photos', '1', '--precisions', 'fp32', '--project-steps', '1', '--max-seconds', '0'])
    assert all(r['note'] == 'skipped: --max-seconds 0.0 reached' for r in rows)
