"""Projection speed: seconds per image for W+ projection, extrapolated to 500 steps.

A random-weight generator of the official configuration (256: channel_base 16384; 1024: 32768;
channel_max 512, 8 mapping layers) projects targets it rendered itself, with LPIPS-VGG (random
backbone when torchvision's VGG16 weights are absent: the cost is the same). A few warm-up steps
are not timed. Reference: NVIDIA's projector, about 75 s per 1000 steps at 512x512 on one GPU.

    python benchmarks/bench_projection.py --res 256 --batch 1,8 --precision fp32,bf16 --steps 5
    python benchmarks/bench_projection.py --res 256 --batch 8 --micro-batch 0,8      # CPU default vs one pass
    python benchmarks/bench_projection.py --res 256 --lpips-steps 100     # fp32 vs bf16 final LPIPS

Not a test: numbers depend on the machine and on its load (printed with the results).
"""

import contextlib
import io
import json
import os
import platform
import time

import click
import torch

from pstyle.projectors import projector as P
from pstyle.models.render import to_uint8
from pstyle.models.networks import Generator

CONFIGS = {512: 32768, 1024: 32768}  # channel_base of the official configs; 16384 up to 256


def official_G(res, device, seed=0):
    torch.manual_seed(seed)
    G = Generator(z_dim=512, w_dim=512, c_dim=0, img_resolution=res, img_channels=3, mapping_kwargs=dict(num_layers=8),
                  synthesis_kwargs=dict(channel_base=CONFIGS.get(res, 16384), channel_max=512))
    return G.eval().requires_grad_(False).to(device)


@torch.no_grad()
def make_targets(G, n, seed=1):
    z = torch.from_numpy(__import__('numpy').random.RandomState(seed).randn(n, G.z_dim)).float().to(next(G.parameters()).device)
    return torch.from_numpy(to_uint8(G.synthesis(G.mapping(z, None), noise_mode='const'))).permute(0, 3, 1, 2)


def load_lpips(device):
    from pstyle.metrics.lpips_utils import load_lpips as load
    torch.manual_seed(0)
    with contextlib.redirect_stdout(io.StringIO()):
        return load('vgg', device, allow_random_backbone=True)


def time_projection(G, targets, precision, steps, warmup, lpips_model, w_stats, micro_batch=0):
    """Seconds per step for one batch (after `warmup` untimed steps)."""
    sync = torch.cuda.synchronize if targets.device.type == 'cuda' or next(G.parameters()).is_cuda else (lambda: None)
    marks = []

    def callback(step, index, synth):
        sync()
        marks.append(time.perf_counter())
    cfg = P.ProjectConfig(space='w+', num_steps=warmup + steps, precision=precision, optimize_noise=True,
                          micro_batch=micro_batch)
    P.project(G, targets, cfg, lpips_model, w_stats=w_stats, callback=callback)
    return (marks[-1] - marks[warmup - 1]) / steps


@click.command()
@click.option('--res', 'resolutions', default='256', show_default=True, help='Comma-separated: 256, 512, 1024.')
@click.option('--batch', 'batches', default='1,8', show_default=True, help='Comma-separated batch sizes.')
@click.option('--precision', 'precisions', default='fp32,bf16', show_default=True, help='Comma-separated: fp32, bf16, fp16.')
@click.option('--micro-batch', 'micro_batches', default='0', show_default=True, help='Comma-separated micro-batch sizes (0 = the default: 1 on the CPU, the whole batch on CUDA).')
@click.option('--steps', type=click.IntRange(min=1), default=5, show_default=True, help='Timed steps.')
@click.option('--warmup', type=click.IntRange(min=1), default=1, show_default=True, help='Untimed steps first.')
@click.option('--lpips-steps', type=click.IntRange(min=0), default=0, show_default=True, help='Also compare the final LPIPS of fp32 and bf16 after this many steps (batch 1).')
@click.option('--lpips-res', type=int, default=None, help='Resolution of that comparison [each --res].')
@click.option('--device', default='auto', show_default=True)
@click.option('--threads', type=int, default=None, help='torch CPU threads [torch default].')
@click.option('--out', type=click.Path(dir_okay=False), default=None, help='Write the results as JSON.')
def main(resolutions, batches, precisions, micro_batches, steps, warmup, lpips_steps, lpips_res, device, threads, out):
    device = torch.device(('cuda' if torch.cuda.is_available() else 'cpu') if device == 'auto' else device)
    if threads:
        torch.set_num_threads(threads)
    env = dict(device=torch.cuda.get_device_name(device) if device.type == 'cuda' else platform.processor() or platform.machine(),
               threads=torch.get_num_threads(), torch=torch.__version__, load_avg=os.getloadavg())
    click.echo(json.dumps(env))
    lpips_model = load_lpips(device)
    rows = []
    for res in [int(r) for r in resolutions.split(',') if r]:
        G = official_G(res, device)
        w_stats = P.compute_w_stats(G, 1000)
        for batch in [int(b) for b in batches.split(',')]:
            targets = make_targets(G, batch)
            for precision, micro in [(p, int(m)) for p in precisions.split(',') for m in micro_batches.split(',')]:
                if micro > batch:
                    continue
                sec = time_projection(G, targets, precision, steps, warmup, lpips_model, w_stats, micro)
                row = dict(res=res, batch=batch, precision=precision, micro_batch=micro, s_per_step=sec,
                           s_per_img_500=sec * 500 / batch, load_avg=os.getloadavg()[0])
                rows.append(row)
                click.echo(f'{res}x{res} batch {batch} micro-batch {micro or "default"} {precision}: {sec:.2f} s/step, '
                           f'{row["s_per_img_500"]:.0f} s per image per 500 steps')
                save(out, env, rows)  # after every configuration: a long run keeps what it measured
        if lpips_steps and lpips_res is None:
            rows.append(compare_precisions(G, lpips_model, w_stats, res, lpips_steps))
    if lpips_steps and lpips_res is not None:
        G = official_G(lpips_res, device)
        rows.append(compare_precisions(G, lpips_model, P.compute_w_stats(G, 1000), lpips_res, lpips_steps))
    save(out, env, rows)


def save(out, env, rows):
    if out:
        with open(out, 'w') as f:
            json.dump(dict(env=env, rows=rows), f, indent=1)


def compare_precisions(G, lpips_model, w_stats, res, steps):
    """Final fp32-measured LPIPS after the same W+ projection run in fp32 and in bf16."""
    targets = make_targets(G, 1, seed=2)
    final = {}
    for precision in ('fp32', 'bf16'):
        cfg = P.ProjectConfig(space='w+', num_steps=steps, precision=precision, optimize_noise=True)
        final[precision] = P.project(G, targets, cfg, lpips_model, w_stats=w_stats).metrics[0]['lpips']
    row = dict(res=res, lpips_steps=steps, lpips_fp32=final['fp32'], lpips_bf16=final['bf16'],
               lpips_diff=abs(final['fp32'] - final['bf16']))
    click.echo(f'{res}x{res} {steps} steps: final LPIPS fp32 {final["fp32"]:.4f}, bf16 {final["bf16"]:.4f}')
    return row


if __name__ == '__main__':
    main()
