"""Benchmark smoke test: it runs, compares paths in one run and reports ratios (timings are not asserted)."""

from click.testing import CliRunner

from pstyle.cli import main
from pstyle.models import bench

TINY = dict(z_dim=16, c_dim=0, w_dim=16, img_resolution=16, img_channels=3, mapping_kwargs=dict(num_layers=2),
            synthesis_kwargs=dict(channel_base=256, channel_max=32))


def test_bench_generator_rows(monkeypatch):
    monkeypatch.setitem(bench.CONFIGS, 256, TINY)
    lines = []
    rows = bench.bench_generator(256, batch_sizes=[2], device='cpu', repeat=1, log=lines.append)
    assert [r['path'] for r in rows][:2] == ['nvidia-order fp32 (baseline)', 'ours fp32']
    assert rows[0]['fwd_ratio'] == 1.0 and rows[0]['fwdbwd_ratio'] == 1.0
    assert rows[1]['psnr_vs_baseline_db'] > 60  # same network, same numbers up to rounding
    assert all(r['fwd_img_s'] > 0 and r['fwdbwd_img_s'] > 0 for r in rows)
    assert lines[0].startswith('device: cpu')


def test_bench_command(monkeypatch, tmp_path):
    monkeypatch.setitem(bench.CONFIGS, 256, TINY)
    result = CliRunner().invoke(main, ['bench', 'generator', '--batch', '1', '--repeat', '1', '--no-backward',
                                       '--json', str(tmp_path / 'rows.json')])
    assert result.exit_code == 0, result.output
    assert 'x1.00' in result.output and (tmp_path / 'rows.json').is_file()
