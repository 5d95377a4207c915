"""Smoke test of benchmarks/bench_fewshot.py on tiny configurations (its figures are never asserted)."""


TINY_G = dict(z_dim=16, w_dim=16, c_dim=0, img_resolution=16, img_channels=3, mapping_kwargs=dict(num_layers=2),
              synthesis_kwargs=dict(channel_base=256, channel_max=32))
TINY_D = dict(c_dim=0, img_resolution=16, img_channels=3, channel_base=256, channel_max=32)


def test_bench_fewshot_reports_sizes_quality_pti_and_speed(load_benchmark, capsys):
    B = load_benchmark('bench_fewshot')
    sizes = B.bench_sizes(config=dict(TINY_G, img_resolution=64), ranks=(1, 2))
    full, r1, r2 = (row['bytes'] for row in sizes['rows'][1:])
    assert r1 < r2 < full and sizes['rows'][0]['bytes'] == 2 * full and sizes['G_bytes'] > 0
    quality = B.bench_quality(ranks=(0, 2), steps=2, g_config=TINY_G, d_config=TINY_D)
    assert [r['rank'] for r in quality['rows']] == [0, 2] and quality['rows'][0]['loss_vs_full'] == 1.0
    speed = B.bench_speed(steps=1, g_config=TINY_G, d_config=TINY_D)
    assert [r['precision'] for r in speed['rows']] == ['fp32', 'bf16'] and speed['rows'][0]['vs_fp32'] == 1.0
    pti = B.bench_pti(ranks=(2,), steps=1, photos=1)
    assert pti['variants'] == ['r2-tune', 'r2-svd'] and pti['rows'][0]['r2-tune_bytes'] < pti['rows'][0]['full_bytes']
    B.report(dict(sizes=sizes, quality=quality, speed=speed, pti=pti))
    out = capsys.readouterr().out
    assert '% of G' in out and '(d) PTI at a rank on demo' in out and 'r2-svd: worst' in out
