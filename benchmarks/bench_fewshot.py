"""Few-shot styles benchmark (issue #14): delta sizes at 1024x1024, low-rank vs full-rank tuning (styles and PTI), CPU fp32 vs bf16.

    python benchmarks/bench_fewshot.py                                  # quick defaults (a couple of minutes on 2 CPUs)
    python benchmarks/bench_fewshot.py --quality-steps 300 --time-steps 300 --precisions fp32,bf16 --out bench_fewshot.json

(a) sizes: the official 1024x1024 generator (z_dim = w_dim = 512, channel_base 32768, 8 mapping layers) built under
    FakeTensorMode (shapes only, no weights allocated): bytes of the network (fp32, as saved) against the style delta
    over every synthesis parameter, full (fp32, fp16) and at each --ranks in fp16; the issue's goal is <= 5% of G.
    A PTI delta tunes the same tensors, so the same figures apply to it.
(b) quality: full-rank and low-rank tuning with the same seed and steps, of a small random network pair (G, its D;
    references rendered by a perturbed copy of G), or with `--quality-on demo` of the shipped trained `demo` network
    (references: two held-out faces drawn as toons, projected into `demo` with 100 W+ steps, pixel loss): the final D-feature loss and the pixel distance of held-out
    mixed latents to the references, each as a ratio to full rank (the issue's goal: within 5%, i.e. <= 1.05).
(d) PTI at a rank (`--pti-ranks`, printed before (c)): on the shipped `demo`, sample photos projected (100 W+ steps,
    pixel loss), then PTI at full rank and at each rank, tuned as factors ('tune') and as the truncated SVD of a full
    tuning ('svd'); the reconstruction MSE of what each stored fp16 delta gives back, as a ratio to full rank.
(c) speed: seconds per few-shot step at 256x256 (NVIDIA's paper256 G and D, two references) in fp32 and under bf16
    autocast, and the ratio; x 300 gives the issue's 300-step figure.
Timings are medians of the timed steps after one warm-up step; nothing here is compared with another run.
Everything runs on the CPU (no GPU path yet).
"""

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch._subclasses.fake_tensor import FakeTensorMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pstyle.datasets.synthetic_portraits import portrait_image  # noqa: E402
from pstyle.models import deltas  # noqa: E402
from pstyle.models import render as gen  # noqa: E402
from pstyle.models.checkpoint import load_network  # noqa: E402
from pstyle.models.networks import Discriminator, Generator  # noqa: E402
from pstyle.models.demo import sample_photos  # noqa: E402
from pstyle.projectors import projector as P  # noqa: E402
from pstyle.projectors import pti  # noqa: E402
from pstyle.projectors.projector import cpu_has_fast_bf16  # noqa: E402
from pstyle.stylize import fewshot as FS  # noqa: E402
from pstyle.stylize import layer_weights  # noqa: E402

OFFICIAL_1024 = dict(z_dim=512, w_dim=512, c_dim=0, img_resolution=1024, img_channels=3,
                     mapping_kwargs=dict(num_layers=8), synthesis_kwargs=dict(channel_base=32768, channel_max=512))
PAPER_256 = dict(z_dim=512, w_dim=512, c_dim=0, img_resolution=256, img_channels=3,
                 mapping_kwargs=dict(num_layers=8), synthesis_kwargs=dict(channel_base=16384, channel_max=512))
PAPER_256_D = dict(c_dim=0, img_resolution=256, img_channels=3, channel_base=16384, channel_max=512)
SMALL = dict(z_dim=64, w_dim=64, c_dim=0, img_resolution=32, img_channels=3,
             mapping_kwargs=dict(num_layers=2), synthesis_kwargs=dict(channel_base=1024, channel_max=64))
SMALL_D = dict(c_dim=0, img_resolution=32, img_channels=3, channel_base=1024, channel_max=64)


def bench_sizes(config=OFFICIAL_1024, ranks=(1, 2, 4, 8, 16)):
    """Delta bytes against the generator's, from shapes only."""
    with FakeTensorMode():
        G = Generator(**config)
    g_bytes = sum(int(np.prod(t.shape)) * 4 for t in G.state_dict().values())
    shapes = [tuple(p.shape) for n, p in G.named_parameters() if n in set(FS.tuned_names(G))]
    rows = [dict(delta='full fp32', bytes=deltas.delta_size(shapes, 0, 4)), dict(delta='full fp16', bytes=deltas.delta_size(shapes, 0, 2))]
    rows += [dict(delta=f'rank {r} fp16', rank=r, bytes=deltas.delta_size(shapes, r, 2)) for r in ranks]
    for row in rows:
        row['percent_of_G'] = 100.0 * row['bytes'] / g_bytes
    return dict(resolution=config['img_resolution'], G_bytes=g_bytes, tuned_tensors=len(shapes), rows=rows)


def make_case(g_config, d_config, references=2, seed=0):
    """(G, D, targets uint8 [N, C, H, W], ws_ref, row weights): references rendered by a perturbed copy of G."""
    torch.manual_seed(seed)
    G = Generator(**g_config).eval().requires_grad_(False)
    D = Discriminator(**d_config).eval().requires_grad_(False)
    G_style = FS.tuned_generator(G, {n: 0.3 * torch.randn_like(p) for n, p in G.named_parameters() if n.startswith('synthesis.')})
    ws_ref = gen.seeds_to_ws(G, list(range(references)))
    targets = torch.from_numpy(gen.to_uint8(gen.render(G_style, ws_ref))).permute(0, 3, 1, 2)
    return G, D, targets, ws_ref, layer_weights.resolve(G, layer_weights.make_spec())


def demo_case(references=2):
    """(G, D, targets, ws_ref, row weights) on the shipped `demo`: held-out faces (seed 1) drawn as toons, inverted."""
    nets = load_network('demo')
    G, D = nets['G_ema'], nets['D']
    targets = torch.from_numpy(np.stack([portrait_image(1, k, 'toon') for k in range(references)])).permute(0, 3, 1, 2)
    cfg = P.ProjectConfig(space='w+', num_steps=100, lpips_weight=0.0, mse_weight=1.0, optimize_noise=False)
    ws_ref = P.project(G, targets.contiguous(), cfg).ws
    return G, D, targets.contiguous(), ws_ref, layer_weights.resolve(G, layer_weights.make_spec())


def heldout_distance(G_tuned, G, targets, ws_ref, row_weights, samples=4):
    ws = FS.mixed_latents(G, ws_ref, row_weights, seed=0, step=FS.GRID_STEP, samples=samples)
    target = (targets.float() / 127.5 - 1).repeat_interleave(samples, dim=0)
    return float((gen.render(G_tuned, ws) - target).square().mean())


def bench_quality(ranks=(0, 4, 16), steps=100, g_config=SMALL, d_config=SMALL_D, on='random'):
    """Final loss (mean of the last 5 steps) and held-out distance of each rank, as ratios to full rank."""
    G, D, targets, ws_ref, row_weights = demo_case() if on == 'demo' else make_case(g_config, d_config)
    base = heldout_distance(G, G, targets, ws_ref, row_weights)
    rows = []
    for rank in ranks:
        t0 = time.perf_counter()
        delta, info = FS.finetune(G, targets, ws_ref, row_weights, FS.FewshotConfig(steps=steps, rank=rank), D=D)
        rows.append(dict(rank=rank, loss=float(np.mean(info['history'][-5:])), seconds=time.perf_counter() - t0,
                         heldout=heldout_distance(FS.tuned_generator(G, delta), G, targets, ws_ref, row_weights)))
    full = next((r for r in rows if r['rank'] == 0), rows[0])
    for row in rows:
        row['loss_vs_full'] = row['loss'] / full['loss']
        row['heldout_vs_full'] = row['heldout'] / full['heldout']
    return dict(steps=steps, resolution=int(G.img_resolution), networks=on, base_heldout=base, rows=rows)


def bench_pti(ranks=(4, 16), modes=('tune', 'svd'), steps=50, photos=3, lr=1e-3):
    """PTI at a rank on the shipped `demo`: sample photos projected (100 W+ steps, pixel loss), then `steps` PTI
    steps (pixel loss, locality regulariser on) at full rank and at each rank in each mode, fp16 deltas; the
    reconstruction MSE of what the stored delta gives back, as a ratio to full rank, per photo."""
    nets = load_network('demo')
    G = nets['G_ema']
    paths = sample_photos()[:photos]
    targets = torch.from_numpy(np.stack([np.asarray(Image.open(p).convert('RGB')) for p in paths])).permute(0, 3, 1, 2)
    cfg = P.ProjectConfig(space='w+', num_steps=100, lpips_weight=0.0, mse_weight=1.0, optimize_noise=False)
    ws = P.project(G, targets.contiguous(), cfg).ws
    base_sha = deltas.weights_sha256(G)
    variants = [(0, 'full')] + [(r, m) for r in ranks for m in modes]
    rows = []
    for k, path in enumerate(paths):
        target = targets[k:k + 1].contiguous()
        row = dict(photo=path.stem, no_pti=pti.pti_metrics(G, target, ws[k:k + 1], None, None)[0]['mse'])
        for rank, mode in variants:
            pcfg = pti.pti_config(num_steps=steps, learning_rate=lr, lpips_weight=0.0, regularizer_lpips_weight=0.0,
                                  rank=rank, rank_mode='tune' if mode == 'full' else mode, delta_dtype='fp16')
            with tempfile.TemporaryDirectory() as tmp:
                t0 = time.perf_counter()
                G_tuned, info = pti.tune_and_save(G, target, ws[k:k + 1], None, pcfg, None, Path(tmp) / 'd.safetensors', base_sha)
                key = 'full' if mode == 'full' else f'r{rank}-{mode}'
                row[key] = pti.pti_metrics(G_tuned, target, ws[k:k + 1], None, None)[0]['mse']
                row[key + '_bytes'] = info['delta_bytes']
                row[key + '_s'] = time.perf_counter() - t0
        for rank, mode in variants[1:]:
            row[f'r{rank}-{mode}_vs_full'] = row[f'r{rank}-{mode}'] / row['full']
        rows.append(row)
        print(f'    ({path.stem} done)', file=sys.stderr, flush=True)
    return dict(steps=steps, lr=lr, photos=len(paths), variants=[f'r{r}-{m}' for r, m in variants[1:]], rows=rows)


def bench_speed(precisions=('fp32', 'bf16'), steps=2, g_config=PAPER_256, d_config=PAPER_256_D):
    """Median seconds per few-shot step (full rank, D loss) per precision, after one warm-up step."""
    G, D, targets, ws_ref, row_weights = make_case(g_config, d_config)
    rows = []
    for precision in precisions:
        stamps = []
        cfg = FS.FewshotConfig(steps=steps + 1, precision=precision)
        FS.finetune(G, targets, ws_ref, row_weights, cfg, D=D, callback=lambda step, _: stamps.append(time.perf_counter()))
        per_step = statistics.median(np.diff(stamps)) if len(stamps) > 1 else float('nan')
        rows.append(dict(precision=precision, s_per_step=per_step, s_per_300_steps=300 * per_step))
        print(f'    ({precision}: {per_step:.2f} s/step)', file=sys.stderr, flush=True)  # Long runs: as measured.
    fp32 = rows[0]['s_per_step']
    for row in rows:
        row['vs_fp32'] = row['s_per_step'] / fp32
    return dict(resolution=g_config['img_resolution'], references=len(targets), steps_timed=steps,
                cpu_fast_bf16=cpu_has_fast_bf16(), threads=torch.get_num_threads(), rows=rows)


def report(results):
    s = results.get('sizes')
    if s:
        print(f'(a) delta sizes at {s["resolution"]}x{s["resolution"]}: G {s["G_bytes"] / 2**20:.1f} MiB (fp32), '
              f'{s["tuned_tensors"]} tuned tensors')
        for row in s['rows']:
            print(f'    {row["delta"]:>14}: {row["bytes"] / 2**20:8.2f} MiB  {row["percent_of_G"]:6.2f}% of G')
    q = results.get('quality')
    if q:
        print(f'(b) low-rank vs full-rank tuning, {q["resolution"]}x{q["resolution"]}, {q["steps"]} steps '
              f'(held-out distance of the base: {q["base_heldout"]:.4f})')
        for row in q['rows']:
            print(f'    rank {row["rank"]:>3}: loss {row["loss"]:.4f} ({row["loss_vs_full"]:.3f} x full), held-out '
                  f'{row["heldout"]:.4f} ({row["heldout_vs_full"]:.3f} x full), {row["seconds"]:.1f} s')
    p = results.get('pti')
    if p:
        print(f'(d) PTI at a rank on demo, {p["steps"]} steps (lr {p["lr"]}, pixel loss), fp16 deltas: reconstruction MSE '
              f'(x full rank) and delta bytes')
        for row in p['rows']:
            cells = [f'{v}: {row[v]:.5f} ({row[v + "_vs_full"]:.3f}x, {row[v + "_bytes"]} B)' for v in p['variants']]
            print(f'    {row["photo"]}: no PTI {row["no_pti"]:.5f}, full {row["full"]:.5f} ({row["full_bytes"]} B); '
                  + '; '.join(cells))
        for v in p['variants']:
            print(f'    {v}: worst {max(r[v + "_vs_full"] for r in p["rows"]):.3f}x full rank')
    t = results.get('speed')
    if t:
        print(f'(c) seconds per step at {t["resolution"]}x{t["resolution"]}, {t["references"]} references, '
              f'{t["threads"]} threads, native bf16: {t["cpu_fast_bf16"]}')
        for row in t['rows']:
            print(f'    {row["precision"]}: {row["s_per_step"]:.2f} s/step, {row["s_per_300_steps"] / 60:.1f} min per 300 '
                  f'steps ({row["vs_fp32"]:.2f} x fp32)')


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--ranks', default='1,2,4,8,16', help='(a) ranks to size')
    parser.add_argument('--quality-ranks', default='0,4,16', help='(b) ranks to tune (0 = full)')
    parser.add_argument('--quality-steps', type=int, default=100)
    parser.add_argument('--quality-on', choices=['random', 'demo'], default='random',
                        help='(b) a small random network pair, or the shipped trained demo network')
    parser.add_argument('--pti-ranks', default='4,16', help='(d) PTI ranks, each tuned as factors and as an SVD')
    parser.add_argument('--pti-steps', type=int, default=50)
    parser.add_argument('--pti-photos', type=int, default=3, help='(d) demo sample photos')
    parser.add_argument('--time-steps', type=int, default=2, help='(c) timed steps per precision (after one warm-up)')
    parser.add_argument('--precisions', default=None, help='(c) precisions to time, the first is the baseline '
                        '[fp32,bf16; fp32 alone on CPUs without native bf16, where bf16 steps take many minutes]')
    parser.add_argument('--skip', default='', help='comma list of sizes,quality,pti,speed to skip')
    parser.add_argument('--threads', type=int, default=None)
    parser.add_argument('--out', default=None, help='write the results as JSON')
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    skip = set(filter(None, args.skip.split(',')))
    if args.precisions is None:
        args.precisions = 'fp32,bf16' if cpu_has_fast_bf16() else 'fp32'
        if args.precisions == 'fp32' and 'speed' not in skip:
            print('(c) bf16 skipped: this CPU has no native bf16 (give --precisions fp32,bf16 to time it anyway)')
    results = {}
    runs = dict(sizes=lambda: bench_sizes(ranks=[int(r) for r in args.ranks.split(',')]),
                quality=lambda: bench_quality([int(r) for r in args.quality_ranks.split(',')], args.quality_steps,
                                              on=args.quality_on),
                pti=lambda: bench_pti([int(r) for r in args.pti_ranks.split(',')], steps=args.pti_steps,
                                      photos=args.pti_photos),
                speed=lambda: bench_speed(args.precisions.split(','), steps=args.time_steps))
    for name, run in runs.items():
        if name not in skip:
            results[name] = run()
            report({name: results[name]})  # Each section as soon as it is measured.
            sys.stdout.flush()
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1) + '\n')
    return results


if __name__ == '__main__':
    main()
