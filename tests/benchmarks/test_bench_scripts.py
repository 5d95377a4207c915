"""Smoke tests of the scripts in benchmarks/ on tiny networks: they run, compare in one run and write their
rows (timings are never asserted)."""

import json

import torch
from click.testing import CliRunner

from pstyle.models.checkpoint import save_network
from pstyle.models.networks import Generator

TINY = dict(z_dim=16, w_dim=16, c_dim=0, img_resolution=32, img_channels=3, mapping_kwargs=dict(num_layers=2),
            synthesis_kwargs=dict(channel_base=256, channel_max=32))


def tiny_G(res, device, seed=0):
    torch.manual_seed(seed)
    return Generator(**dict(TINY, img_resolution=res)).eval().requires_grad_(False).to(device)


def test_bench_projection_rows(load_benchmark, tmp_path, monkeypatch):
    B = load_benchmark('bench_projection')
    monkeypatch.setattr(B, 'official_G', tiny_G)
    out = tmp_path / 'proj.json'
    result = CliRunner().invoke(B.main, ['--res', '16', '--batch', '2', '--micro-batch', '0,2', '--precision', 'fp32',
                                         '--steps', '1', '--lpips-steps', '2', '--out', str(out)])
    assert result.exit_code == 0, result.output
    rows = json.loads(out.read_text())['rows']
    timed = [r for r in rows if 's_per_step' in r]
    assert [(r['batch'], r['micro_batch']) for r in timed] == [(2, 0), (2, 2)]
    assert all(r['s_per_step'] > 0 and r['s_per_img_500'] == r['s_per_step'] * 250 for r in timed)
    assert rows[-1]['lpips_steps'] == 2 and rows[-1]['lpips_diff'] >= 0


def test_bench_stylize_blend_and_pipeline_with_pti(load_benchmark, monkeypatch):
    B = load_benchmark('bench_stylize')
    monkeypatch.setattr(B, 'OFFICIAL_1024', dict(TINY))
    monkeypatch.setattr(B, 'PAPER_256', dict(TINY))
    blend = B.bench_blend(torch.device('cpu'), repeats=1)
    assert blend['num_ws'] == 8 and sum(1 for v in blend.values() if isinstance(v, dict) and v['median_s'] >= 0) == 4
    report = B.bench_pipeline(torch.device('cpu'), steps=1, count=1, pti_steps=1)
    stages = report['no-align']['per_photo_s']
    assert report['no-align']['ok'] == 1 and report['pti_steps'] == 1
    assert {'project', 'pti', 'render'} <= set(stages)


def test_bench_training_row(load_benchmark):
    row = load_benchmark('bench_training').bench('tiny', 16, 4, iters=2, warmup=1, device='cpu', threads=1, aug='noaug')
    assert row['batch'] == 4 and row['s_per_kimg'] > 0 and row['G_params'] > 0 and row['peak_rss_gb'] > 0


def test_bench_metrics_times_ours_and_torch_fidelity(load_benchmark, monkeypatch, capsys):
    """Extraction only (--skip-fid): the end-to-end FID runs take a minute even on 4 images; the metrics
    tests check FID parity with the reference libraries."""
    B = load_benchmark('bench_metrics')
    monkeypatch.setattr('sys.argv', ['bench_metrics.py', '--n', '4', '--size', '32', '--batch', '2', '--reps', '1',
                                     '--device', 'cpu', '--skip-fid', '--json'])
    B.main()
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(report['extract_images_per_s']) == {'ours', 'torch-fidelity'}
    assert all(v > 0 for v in report['extract_images_per_s'].values()) and 'fid_total_s' not in report


def test_bench_serve_measures_every_workload_mode_and_level_against_single(load_benchmark, monkeypatch):
    B = load_benchmark('bench_serve')
    monkeypatch.setattr(B, 'network_config', lambda res: dict(TINY, img_resolution=res))
    modes = ('batched', 'batched-unpadded', 'single')
    rows = B.run(res=16, levels=(1, 2), requests=3, max_seconds=30, modes=modes, threads=1, log=lambda _: None)
    assert sorted((r['workload'], r['mode'], r['clients']) for r in rows) == sorted(
        (w, m, c) for w in B.WORKLOADS for m in modes for c in (1, 2))
    assert [r['mode'] for r in rows[:6]] == [*modes, *reversed(modes)]  # Turns alternate.
    assert all(r['ok'] == r['requests'] == 3 and r['p50_ms'] <= r['p99_ms'] for r in rows)
    assert all(r['throughput_vs_single'] > 0 for r in rows)
    assert [r['throughput_vs_single'] for r in rows if r['mode'] == 'single'] == [1.0] * 4


def test_bench_inversion_compares_in_one_run(load_benchmark, tmp_path, tiny_network_factory):
    B = load_benchmark('bench_inversion')
    network = tmp_path / 'G.safetensors'
    save_network(network, G_ema=tiny_network_factory())
    out = tmp_path / 'inv.json'
    result = CliRunner().invoke(B.main, ['--network', str(network), '--train-kimg', '0.032', '--count', '2', '--steps', '1',
                                         '--e2e-steps', '2', '--e2e-count', '1', '--no-lpips', '--json', str(out),
                                         '--set', 'warm_start_learning_rate=0.1'])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert set(report['quality']) == {'encoder', 'encoder+optimize 1', 'optimize 1', 'optimize 4'}
    assert report['settings']['warm_start_learning_rate'] == 0.1
    assert len(report['quality']['optimize 4']['mse_per_step']) == 4
    assert report['mse_ratio'] == report['quality']['encoder+optimize 1']['mse'] / report['quality']['optimize 4']['mse']
    assert report['end_to_end']['encoder']['num_ok'] == report['end_to_end']['optimize']['num_ok'] == 1
    assert report['speedup'] > 0 and 'project' in report['end_to_end']['encoder']['stages']


def test_bench_inversion_paper256_times_end_to_end_on_random_networks(load_benchmark, tmp_path, monkeypatch):
    B = load_benchmark('bench_inversion')
    small = dict(B.PAPER_256, img_resolution=16, mapping_kwargs=dict(num_layers=2),
                 synthesis_kwargs=dict(channel_base=256, channel_max=16))  # w_dim stays 512: the IR-SE-50 encoder's
    monkeypatch.setattr(B, 'PAPER_256', small)
    out = tmp_path / 'inv.json'
    result = CliRunner().invoke(B.main, ['--paper256', '--e2e-steps', '2', '--e2e-count', '1', '--no-lpips',
                                         '--json', str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert 'quality' not in report and report['network'].startswith('random paper256')
    assert report['end_to_end']['encoder']['num_ok'] == report['end_to_end']['optimize']['num_ok'] == 1
    assert report['speedup'] > 0 and 'stylize s/photo: --invert encoder' in result.output
