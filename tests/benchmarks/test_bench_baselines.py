"""Smoke test of benchmarks/bench_baselines.py at a tiny size: every method runs, ratios come from the same run
(timings are never asserted)."""

import json

import pytest

TINY = dict(z_dim=16, w_dim=16, c_dim=0, img_resolution=32, img_channels=3, mapping_kwargs=dict(num_layers=2),
            synthesis_kwargs=dict(channel_base=256, channel_max=32))


def test_bench_baselines_rows_and_ratios(load_benchmark, tmp_path, monkeypatch, capsys):
    B = load_benchmark('bench_baselines')
    monkeypatch.setattr(B, 'CONFIGS', {32: TINY})
    out = tmp_path / 'bench.json'
    rows = B.main(['--sizes', '32', '--photos', '1', '--precisions', 'fp32,bf16', '--project-steps', '1', '--nst-steps', '1',
                   '--out', str(out)])
    assert [(r['method'], r['precision']) for r in rows] == [(m, p) for p in ('fp32', 'bf16') for m in B.METHODS]
    assert all(r['seconds_per_photo'] > 0 and r['photos'] == 1 and 'note' not in r for r in rows)  # bf16 for every method
    assert all(r['ratio_to_stylegan'] == r['seconds_per_photo'] / next(
        s['seconds_per_photo'] for s in rows if s['method'] == 'stylegan' and s['precision'] == r['precision']) for r in rows)
    fp32 = {r['method']: r['seconds_per_photo'] for r in rows if r['precision'] == 'fp32'}
    assert all(r['ratio_to_fp32'] == r['seconds_per_photo'] / fp32[r['method']] for r in rows if r['precision'] == 'bf16')
    assert not any('ratio_to_fp32' in r for r in rows if r['precision'] == 'fp32')
    saved = json.loads(out.read_text())
    assert saved['rows'] == rows and saved['machine']['load_average'] and 'cpu_model' in saved['machine']
    assert '× StyleGAN pipeline' in capsys.readouterr().out


def test_bench_baselines_prints_rows_skipped_for_time_with_the_reason(load_benchmark, monkeypatch, capsys):
    B = load_benchmark('bench_baselines')
    monkeypatch.setattr(B, 'CONFIGS', {32: TINY})
    rows = B.main(['--sizes', '32', '--photos', '1', '--methods', 'adain,distilled', '--precisions', 'fp32,bf16',
                   '--max-seconds', '0'])
    assert [(r['method'], r['precision']) for r in rows] == [('adain', 'fp32'), ('distilled', 'fp32'), ('adain', 'bf16'), ('distilled', 'bf16')]
    assert all(r['note'] == 'skipped: --max-seconds 0.0 reached' and 'seconds_per_photo' not in r for r in rows)
    out = capsys.readouterr().out
    assert 'skipped 32² distilled bf16: --max-seconds 0.0 reached after' in out
    assert '| 32 | distilled | bf16 | skipped: --max-seconds 0.0 reached |  |  |' in out


def test_bench_baselines_refuses_unknown_methods_and_fp16(load_benchmark, capsys):
    B = load_benchmark('bench_baselines')
    for args in (['--methods', 'toonify'], ['--precisions', 'fp16']):
        with pytest.raises(SystemExit):
            B.main(args)
        assert '--methods takes stylegan,nst,adain,cyclegan,distilled; --precisions fp32,bf16 (this benchmark runs on the CPU)' \
            in capsys.readouterr().err
