"""Seconds per photo of the classic baselines beside the StyleGAN pipeline, measured in one run.

    OMP_NUM_THREADS=2 python benchmarks/bench_baselines.py --sizes 256 --photos 2 --out bench_baselines.json
    OMP_NUM_THREADS=2 python benchmarks/bench_baselines.py --sizes 512 --photos 1 --max-seconds 900
    python benchmarks/bench_baselines.py --methods nst,adain,cyclegan,distilled --precisions fp32,bf16 --threads 1

Every method runs through the folder function `pstyle compare` calls, on synthetic square photos of each size,
and its seconds per photo are read from its own manifest (model loading excluded):
- stylegan (the baseline of the ratios): `stylize_photos` on two random generators of NVIDIA's paper configuration
  for that size (256²: paper256, channel_base 16384; 512²: paper512, channel_base 32768; channel_max 512,
  8 mapping layers), `--project-steps` projection steps with the pixel MSE loss (no LPIPS: its VGG16 weights are
  not here), layer swapping at 32, no PTI;
- nst: Gatys by L-BFGS, `--nst-steps` iterations on a random VGG19 (torchvision's layout), at the photo's size;
- adain: the published architecture (normalised VGG to relu4_1 + decoder), random weights, style at the photo's size;
- cyclegan: ResnetGenerator, ngf 64, 9 blocks (the published architecture), random weights;
- distilled: ResnetGenerator of `pstyle distill`'s default architecture (ngf 32, 6 blocks), random weights, run as
  `pstyle compare` runs it.
Speed does not depend on the weights. Every method has a bf16 path (and on CUDA an fp16 one, except nst): stylegan the
projection's precision, nst autocast of the VGG passes, adain / cyclegan / distilled autocast of the network passes. Ratios:
method / stylegan at the same size and precision (when stylegan ran), and each non-fp32 row / the same method's fp32
row at the same size (when it ran). `--max-seconds` bounds the run: a row that would start after it is printed
as skipped with that reason, never dropped.
"""

import argparse
import copy
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pstyle.baselines.adain import AdainOptions, adain_folder, decoder, normalised_vgg  # noqa: E402
from pstyle.baselines.compare import CompareConfig, Prepared, run_distilled  # noqa: E402
from pstyle.baselines.cyclegan import CycleganOptions, ResnetGenerator, cyclegan_folder  # noqa: E402
from pstyle.baselines.nst import NSTOptions, nst_folder  # noqa: E402
from pstyle.baselines.vgg import VGG19  # noqa: E402
from pstyle.models.checkpoint import save_network  # noqa: E402
from pstyle.models.networks import Generator  # noqa: E402
from pstyle.stylize import layer_weights  # noqa: E402
from pstyle.stylize.pipeline import StylizeConfig, stylize_photos  # noqa: E402
from pstyle.torch_utils import cpu_features  # noqa: E402

METHODS = ('stylegan', 'nst', 'adain', 'cyclegan', 'distilled')
CONFIGS = {                         # NVIDIA's paper256 / paper512 generators
    256: dict(z_dim=512, w_dim=512, c_dim=0, img_resolution=256, img_channels=3, mapping_kwargs=dict(num_layers=8),
              synthesis_kwargs=dict(channel_base=16384, channel_max=512)),
    512: dict(z_dim=512, w_dim=512, c_dim=0, img_resolution=512, img_channels=3, mapping_kwargs=dict(num_layers=8),
              synthesis_kwargs=dict(channel_base=32768, channel_max=512)),
}


def photos(folder, count, size, seed=0):
    """Smooth random colour fields, `count` of them, size x size (the --no-align path)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.RandomState(seed)
    for i in range(count):
        Image.fromarray(rng.randint(0, 255, (6, 6, 3)).astype(np.uint8)).resize((size, size), Image.BICUBIC).save(folder / f'p{i}.png')
    return folder


@torch.no_grad()
def random_weights(tmp, size):
    """Every network file the methods read, random, in the published layouts."""
    torch.manual_seed(0)
    G_a = Generator(**CONFIGS[size]).eval().requires_grad_(False)
    G_b = copy.deepcopy(G_a)
    for name, t in G_b.state_dict().items():
        if 'resample_filter' not in name:
            t.add_(0.1 * torch.randn_like(t))
    files = dict(base=tmp / 'a.pt', styled=tmp / 'b.pt', adain_vgg=tmp / 'vgg_normalised.pth', adain_decoder=tmp / 'decoder.pth',
                 cyclegan=tmp / 'latest_net_G.pth', distilled=tmp / 'net_G.pth')
    save_network(files['base'], G_ema=G_a)
    save_network(files['styled'], G_ema=G_b)
    torch.save(normalised_vgg().state_dict(), files['adain_vgg'])
    torch.save(decoder().state_dict(), files['adain_decoder'])
    torch.save(ResnetGenerator(ngf=64, n_blocks=9).state_dict(), files['cyclegan'])
    torch.save(ResnetGenerator(ngf=32, n_blocks=6).state_dict(), files['distilled'])   # `pstyle distill`'s default
    files['style'] = photos(tmp / 'style', 1, size, seed=1) / 'p0.png'
    return files


def run_method(method, precision, inputs, out, weights, args, vgg19):
    """The method's manifest (seconds per photo from its folder run)."""
    log = lambda _: None  # noqa: E731
    if method == 'stylegan':
        project = dict(num_steps=args.project_steps, lpips_weight=0.0, mse_weight=1.0, w_avg_samples=2000, precision=precision)
        cfg = StylizeConfig(base=str(weights['base']), styled=str(weights['styled']), spec=layer_weights.make_spec(swap_res=32),
                            align=False, project=project, batch_size=1, metrics=False, device='cpu')
        return stylize_photos(inputs, out, cfg, log=log)
    if method == 'nst':
        opts = NSTOptions(steps=args.nst_steps, size=0, precision=precision, batch_size=1, device='cpu')
        return nst_folder(inputs, [weights['style']], out, opts, vgg=vgg19, log=log)
    if method == 'adain':
        return adain_folder(inputs, [weights['style']], out, str(weights['adain_vgg']), str(weights['adain_decoder']),
                            AdainOptions(content_size=0, style_size=0, precision=precision, device='cpu'), log=log)
    if method == 'distilled':
        cfg = CompareConfig(methods=('distilled',), distilled=str(weights['distilled']), precision=precision, device='cpu')
        return run_distilled(cfg, inputs, out, Prepared(torch.device('cpu')), log, False)
    return cyclegan_folder(str(weights['cyclegan']), inputs, out, CycleganOptions(precision=precision, device='cpu'), log=log)


def per_photo(manifest):
    if 'seconds_per_photo' in manifest:
        return manifest['seconds_per_photo']
    done = [sum(e['seconds'].values()) for e in manifest['items'] if e['status'] == 'ok']
    return float(np.mean(done)) if done else None


def bench(args):
    t_start, rows = time.perf_counter(), []
    vgg19 = VGG19().eval().requires_grad_(False)  # random weights, torchvision's layout
    for size in args.sizes:
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            weights, inputs = random_weights(tmp, size), photos(tmp / 'photos', args.photos, size)
            for precision in args.precisions:
                for method in args.methods:
                    row = dict(size=size, method=method, precision=precision)
                    elapsed = time.perf_counter() - t_start
                    if elapsed > args.max_seconds:
                        row['note'] = f'skipped: --max-seconds {args.max_seconds} reached'
                        print(f'skipped {size}² {method} {precision}: --max-seconds {args.max_seconds} reached '
                              f'after {elapsed:.0f} s', flush=True)
                    else:
                        manifest = run_method(method, precision, inputs, tmp / f'{method}-{precision}', weights, args, vgg19)
                        row.update(seconds_per_photo=per_photo(manifest), photos=manifest['num_ok'])
                    rows.append(row)
                    print(json.dumps(row), flush=True)
    add_ratios(rows)
    return rows


def add_ratios(rows):
    """ratio_to_stylegan: / the StyleGAN pipeline at the same size and precision; ratio_to_fp32 (non-fp32 rows):
    / the same method at the same size in fp32. Both from this run, where both rows were measured."""
    def seconds(**key):
        return next((r.get('seconds_per_photo') for r in rows if all(r[k] == v for k, v in key.items())), None)
    for row in rows:
        if not row.get('seconds_per_photo'):
            continue
        base = seconds(method='stylegan', size=row['size'], precision=row['precision'])
        if base:
            row['ratio_to_stylegan'] = row['seconds_per_photo'] / base
        fp32 = seconds(method=row['method'], size=row['size'], precision='fp32') if row['precision'] != 'fp32' else None
        if fp32:
            row['ratio_to_fp32'] = row['seconds_per_photo'] / fp32


def machine():
    try:
        lscpu = subprocess.run(['lscpu'], capture_output=True, text=True, check=False).stdout
        model = next((line.split(':', 1)[1].strip() for line in lscpu.splitlines() if line.startswith('Model name')), None)
    except OSError:
        model = None
    return dict(cpu_model=model, cpu_features=cpu_features.describe(), native_bf16=cpu_features.has_fast_bf16(),
                threads=torch.get_num_threads(), load_average=os.getloadavg(), torch=torch.__version__)


def table(rows, steps):
    lines = ['| size | method | precision | s/photo | × StyleGAN pipeline | × same method fp32 |',
             '| ---: | --- | --- | ---: | ---: | ---: |']
    for r in rows:
        s = f'{r["seconds_per_photo"]:.3g}' if r.get('seconds_per_photo') else r.get('note', '')
        ratios = [f'{r[k]:.3g}' if r.get(k) else '' for k in ('ratio_to_stylegan', 'ratio_to_fp32')]
        lines.append(f'| {r["size"]} | {r["method"]} | {r["precision"]} | {s} | {" | ".join(ratios)} |')
    ran = {r['method'] for r in rows}
    notes = [f'stylegan: {steps[0]} projection steps, MSE loss, no PTI'] * ('stylegan' in ran) \
        + [f'nst: {steps[1]} L-BFGS iterations'] * ('nst' in ran)
    return '\n'.join(lines) + (f'\n\n({"; ".join(notes)})' if notes else '')


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--sizes', type=lambda s: [int(v) for v in s.split(',')], default=[256], help='comma-separated, e.g. 256,512')
    parser.add_argument('--photos', type=int, default=2, help='synthetic photos per size (the repetitions)')
    parser.add_argument('--methods', type=lambda s: s.split(','), default=list(METHODS), help=f'comma-separated, of {",".join(METHODS)}')
    parser.add_argument('--precisions', type=lambda s: s.split(','), default=['fp32', 'bf16'], help='fp32, bf16 (fp16 needs CUDA: refused here)')
    parser.add_argument('--threads', type=int, default=None, help='torch.set_num_threads (default: torch\'s, from OMP_NUM_THREADS)')
    parser.add_argument('--project-steps', type=int, default=5, help='StyleGAN pipeline projection steps')
    parser.add_argument('--nst-steps', type=int, default=10, help='NST L-BFGS iterations')
    parser.add_argument('--max-seconds', type=float, default=1800, help='start nothing new after this many seconds')
    parser.add_argument('--out', type=Path, default=None, help='also write the results as JSON')
    args = parser.parse_args(argv)
    unknown = [s for s in args.sizes if s not in CONFIGS]
    if unknown:
        parser.error(f'no generator configuration for size(s) {unknown}; choose from {sorted(CONFIGS)}')
    if set(args.methods) - set(METHODS) or set(args.precisions) - {'fp32', 'bf16'}:
        parser.error(f'--methods takes {",".join(METHODS)}; --precisions fp32,bf16 (this benchmark runs on the CPU)')
    if args.threads:
        torch.set_num_threads(args.threads)
    info = machine()
    print(json.dumps(info), flush=True)
    if 'bf16' in args.precisions and not info['native_bf16']:
        print('note: this CPU has no native bf16 (no AMX / AVX-512 BF16): bf16 is emulated, and slower than fp32', flush=True)
    rows = bench(args)
    info['load_average_end'] = os.getloadavg()
    print(table(rows, (args.project_steps, args.nst_steps)))
    print(f'load average: {info["load_average"]} at the start, {info["load_average_end"]} at the end', flush=True)
    if args.out is not None:
        args.out.write_text(json.dumps(dict(machine=info, args=dict(vars(args), out=str(args.out)), rows=rows), indent=1) + '\n')
    return rows


if __name__ == '__main__':
    main()
