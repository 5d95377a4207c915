"""Inversion: encoder+optimize with N steps against optimize alone with 4N steps (reconstruction), and seconds per
photo of `stylize --invert encoder` against `--invert optimize`, end to end, in one run on one machine.

Targets are held-out renders of the generator (seeds from 100000 on, truncation psi 0.7: images the generator can
reproduce, so the reconstruction error measures the inversion, not the generator's range) or `--photos DIR`.
Without `--network`, the shipped `demo` and its shipped `demo-encoder`; with another network and no `--encoder`,
one is trained first with `pstyle train-encoder`'s function for `--train-kimg`, and its training time is printed.

    python benchmarks/bench_inversion.py                                  # demo + demo-encoder, quick
    python benchmarks/bench_inversion.py --photos models/demo/photos      # ... on the held-out sample photos
    python benchmarks/bench_inversion.py --network G.pt --encoder enc.safetensors --steps 50 --count 16
    python benchmarks/bench_inversion.py --paper256 --e2e-count 2      # end to end only, paper256-size G and pSp encoder
    python benchmarks/bench_inversion.py --set warm_start_learning_rate=0.1 --set warm_start_rampup_steps=0   # old schedule

`--paper256`: the issue's end-to-end figure needs a 256x256 generator of NVIDIA's paper256 size and an IR-SE-50
encoder; no trained one exists here, so both are built with random weights (the speed of either path does not
depend on the weights) and only the end-to-end timing runs, no reconstruction quality.

Rows: per method, mean reconstruction MSE (images in [-1, 1]) and LPIPS when its weights are present, seconds
per photo; then the ratios `mse(encoder+optimize N) / mse(optimize 4N)` (<= 1: the encoder start is at least as
good with a quarter of the steps) and `s/photo(optimize) / s/photo(encoder)` from the stylize manifests'
per-photo stage times. Not a test: timings depend on the machine and its load (printed with the results).
"""

import json
import os
import platform
import tempfile
import time
from pathlib import Path

import click
import numpy as np
import torch
from PIL import Image

from pstyle.metrics.weights import file_sha256
from pstyle.models import deltas
from pstyle.models.checkpoint import load_network, save_network
from pstyle.models.networks import Generator
from pstyle.projectors import encoder as E
from pstyle.projectors import invert as I
from pstyle.projectors import projector as P
from pstyle.stylize import layer_weights as lw
from pstyle.stylize import pipeline
from pstyle.training.train_encoder import EncoderTrainConfig, encoder_architecture, train_encoder



PAPER_256 = dict(z_dim=512, w_dim=512, c_dim=0, img_resolution=256, img_channels=3, mapping_kwargs=dict(num_layers=8),
                 synthesis_kwargs=dict(channel_base=16384, channel_max=512))


def random_paper256(tmp):
    """(network path, encoder path): a paper256-size generator and a pSp GradualStyleEncoder for it, random weights,
    the encoder's record naming the generator as `pstyle train-encoder` writes it."""
    torch.manual_seed(0)
    G = Generator(**PAPER_256).eval().requires_grad_(False)
    network = save_network(Path(tmp) / 'paper256-random.safetensors', G_ema=G)
    arch, arch_kwargs, input_size = encoder_architecture(G, 'psp')
    net = E.build_architecture(arch, arch_kwargs).eval()
    record = dict(source=str(network), sha256=file_sha256(network), weights_sha256=deltas.weights_sha256(G),
                  img_resolution=G.img_resolution, num_ws=G.num_ws, w_dim=G.w_dim)
    config = dict(arch=arch, arch_kwargs=arch_kwargs, num_ws=G.num_ws, w_dim=G.w_dim, input_size=input_size,
                  input_nc=G.img_channels, generator=record, training=dict(nimg=0, note='random weights (benchmark)'))
    latent_avg = P.compute_w_stats(G, 1000)[0].reshape(1, G.w_dim).repeat(G.num_ws, 1)
    encoder = E.save_trained_encoder(Path(tmp) / 'paper256-random-psp.safetensors', net, latent_avg, config)
    return str(network), str(encoder)


@torch.no_grad()
def held_out_targets(G, count, psi=0.7, first_seed=100_000):
    """uint8 [count, C, H, W]: renders of seeds first_seed.. (NVIDIA's seed -> z), const noise."""
    z = torch.from_numpy(np.stack([np.random.RandomState(first_seed + k).randn(G.z_dim) for k in range(count)])).float()
    img = G(z, None, truncation_psi=psi, noise_mode='const')
    return (img * 127.5 + 128).clamp(0, 255).to(torch.uint8)


def photo_targets(folder, G, count):
    paths = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in ('.png', '.jpg', '.jpeg'))[:count]
    images = [np.array(Image.open(p).convert('RGB').resize((G.img_resolution,) * 2, Image.Resampling.LANCZOS)) for p in paths]
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()


def quality(G, inversion, targets, steps, lpips_model, cfg_kwargs):
    """{method: {mse, lpips, s_per_photo}} for encoder, encoder+optimize N, optimize N and optimize 4N."""
    runs = [('encoder', 'encoder', steps), (f'encoder+optimize {steps}', 'encoder+optimize', steps),
            (f'optimize {steps}', 'optimize', steps), (f'optimize {4 * steps}', 'optimize', 4 * steps)]
    w_stats = P.compute_w_stats(G, cfg_kwargs.get('w_avg_samples', 10000))
    out = {}
    for name, method, n in runs:
        inv = I.Inversion(method, inversion.encoder if method != 'optimize' else None, inversion.batch_size)
        cfg = P.ProjectConfig(num_steps=n, **cfg_kwargs)
        start = time.perf_counter()
        result = I.invert(G, targets, inv, cfg, lpips_model, w_stats=w_stats)
        seconds = (time.perf_counter() - start) / len(targets)
        lpips = [m['lpips'] for m in result.metrics if m['lpips'] is not None]
        out[name] = dict(mse=float(np.mean([m['mse'] for m in result.metrics])),
                         lpips=float(np.mean(lpips)) if lpips else None, s_per_photo=seconds,
                         mse_per_step=np.nanmean(result.history['mse'], axis=1).tolist())  # [steps], mean over photos
    return out


def end_to_end(network, encoder, targets, steps, cfg_kwargs, tmp):
    """Seconds per photo of the stylize pipeline (sum of the manifest's per-photo stage means) per inversion."""
    photos = Path(tmp) / 'photos'
    photos.mkdir(exist_ok=True)
    for k, img in enumerate(targets.permute(0, 2, 3, 1).numpy()):
        Image.fromarray(img).save(photos / f'{k:03d}.png')
    out = {}
    for method in ('encoder', 'optimize'):
        cfg = pipeline.StylizeConfig(base=network, styled=network, spec=lw.make_spec(swap_res=8), align=False,
                                     metrics=False, project=dict(cfg_kwargs, num_steps=steps), device='cpu',
                                     invert=method, encoder=encoder if method == 'encoder' else None)
        manifest = pipeline.stylize_photos(photos, Path(tmp) / method, cfg, log=lambda m: None)
        stages = manifest['seconds']['per_photo']
        out[method] = dict(s_per_photo=float(sum(stages.values())), stages=stages, num_ok=manifest['num_ok'])
    return out


def parse_sets(pairs):
    """('key=value', ...) -> {key: value}, values read as JSON when they parse (numbers, booleans), else strings."""
    out = {}
    for pair in pairs:
        if '=' not in pair:
            raise click.BadParameter(f'expected KEY=VALUE, got {pair!r}', param_hint='--set')
        key, text = (part.strip() for part in pair.split('=', 1))
        try:
            out[key] = json.loads(text)
        except ValueError:
            out[key] = text
    return out


def machine():
    return dict(torch=torch.__version__, threads=torch.get_num_threads(), cpu=platform.processor() or platform.machine(),
                cores=os.cpu_count(), python=platform.python_version(),
                load_average=os.getloadavg()[0] if hasattr(os, 'getloadavg') else None)


@click.command()
@click.option('--network', default='demo', show_default=True, help='Generator (file or short name).')
@click.option('--encoder', default=None, help='Its encoder [demo-encoder for demo; else train one first for --train-kimg].')
@click.option('--train-kimg', type=click.FloatRange(min=0, min_open=True), default=4.0, show_default=True)
@click.option('--photos', type=click.Path(exists=True, file_okay=False), default=None, help='Real photos instead of held-out renders.')
@click.option('--count', type=click.IntRange(1), default=8, show_default=True, help='Photos.')
@click.option('--steps', type=click.IntRange(1), default=25, show_default=True, help='N: encoder+optimize N vs optimize 4N.')
@click.option('--e2e-steps', type=click.IntRange(1), default=500, show_default=True, help='Optimize steps of the end-to-end run (the default preset).')
@click.option('--e2e-count', type=click.IntRange(0), default=4, show_default=True, help='Photos of the end-to-end run (0: skip it).')
@click.option('--lpips/--no-lpips', 'use_lpips', default=True, show_default=True, help='LPIPS loss and metric (when its weights are present; else MSE).')
@click.option('--threads', type=click.IntRange(0), default=0, help='torch CPU threads [torch default].')
@click.option('--paper256', is_flag=True, help='End to end only, on a random paper256-size generator and pSp encoder.')
@click.option('--set', 'sets', multiple=True, metavar='KEY=VALUE', help='A projector setting for every run, e.g. --set warm_start_learning_rate=0.1.')
@click.option('--json', 'json_path', type=click.Path(dir_okay=False), default=None, help='Also write the results here.')
def main(network, encoder, train_kimg, photos, count, steps, e2e_steps, e2e_count, use_lpips, threads, paper256, sets, json_path):
    """encoder+optimize N vs optimize 4N (reconstruction); stylize --invert encoder vs optimize (s/photo)."""
    if threads:
        torch.set_num_threads(threads)
    lpips_model, note = I.optional_lpips('cpu') if use_lpips else (None, 'LPIPS off (--no-lpips)')
    cfg_kwargs = dict(lpips_weight=1.0, mse_weight=0.0) if lpips_model is not None else dict(lpips_weight=0.0, mse_weight=1.0)
    cfg_kwargs.update(parse_sets(sets))
    if paper256:
        with tempfile.TemporaryDirectory() as tmp:
            network, encoder = random_paper256(tmp)
            G = load_network(network)['G_ema']
            report = dict(machine=machine(), network='random paper256 (256x256, channel_base 16384), random pSp encoder')
            click.echo(json.dumps(report))
            if note:
                click.echo(f'note: {note.splitlines()[0][:160]}... optimising pixel MSE instead (cheaper than LPIPS)')
            _end_to_end_report(report, network, encoder, held_out_targets(G, max(e2e_count, 1)), e2e_steps, cfg_kwargs, tmp)
        return _write(json_path, report)
    if encoder is None and network == 'demo':
        encoder = 'demo-encoder'
    G = load_network(network)['G_ema']
    report = dict(machine=machine(), network=network, settings=cfg_kwargs)
    click.echo(json.dumps(report))
    if note:
        click.echo(f'note: {note.splitlines()[0][:160]}... optimising pixel MSE instead')
    with tempfile.TemporaryDirectory() as tmp:
        if encoder is None:
            start = time.perf_counter()
            encoder = str(train_encoder(EncoderTrainConfig(network=network, outdir=tmp, kimg=train_kimg, device='cpu',
                                                           lpips_weight=0.8 if lpips_model is not None else 0.0),
                                        log=lambda m: None))
            report['encoder_training'] = dict(kimg=train_kimg, seconds=time.perf_counter() - start)
            click.echo(f'trained an encoder for {train_kimg} kimg in {report["encoder_training"]["seconds"]:.0f} s')
        inversion = I.prepare_inversion('encoder', encoder, G)
        targets = photo_targets(photos, G, count) if photos else held_out_targets(G, count)
        report['quality'] = q = quality(G, inversion, targets, steps, lpips_model, cfg_kwargs)
        for name, row in q.items():
            lp = f'  LPIPS {row["lpips"]:.4f}' if row['lpips'] is not None else ''
            curve = row['mse_per_step']
            marks = ' '.join(f'{curve[k]:.4f}' for k in sorted({0, 2, len(curve) // 4, len(curve) // 2}) if k < len(curve))
            click.echo(f'{name:<22} MSE {row["mse"]:.5f}{lp}  {row["s_per_photo"]:.3f} s/photo'
                       + (f'  (loss MSE at steps 0, 2, N/4, N/2: {marks})' if curve else ''))
        ratio = q[f'encoder+optimize {steps}']['mse'] / q[f'optimize {4 * steps}']['mse']
        report['mse_ratio'] = ratio
        click.echo(f'MSE(encoder+optimize {steps}) / MSE(optimize {4 * steps}) = {ratio:.3f} (<= 1: the encoder start wins)')
        if not e2e_count:
            return _write(json_path, report)
        _end_to_end_report(report, network, encoder, targets[:e2e_count], e2e_steps, cfg_kwargs, tmp)
    _write(json_path, report)


def _end_to_end_report(report, network, encoder, targets, e2e_steps, cfg_kwargs, tmp):
    report['end_to_end'] = e2e = end_to_end(network, encoder, targets, e2e_steps, cfg_kwargs, tmp)
    speedup = e2e['optimize']['s_per_photo'] / e2e['encoder']['s_per_photo']
    report['speedup'] = speedup
    for method in ('encoder', 'optimize'):
        stages = ', '.join(f'{k} {v:.3f}' for k, v in e2e[method]['stages'].items())
        click.echo(f'  --invert {method}: {stages} s/photo')
    click.echo(f'stylize s/photo: --invert encoder {e2e["encoder"]["s_per_photo"]:.3f}, --invert optimize '
               f'({e2e_steps} steps) {e2e["optimize"]["s_per_photo"]:.3f}: x{speedup:.1f}')


def _write(json_path, report):
    if json_path:
        with open(json_path, 'w') as f:
            json.dump(report, f, indent=2)


if __name__ == '__main__':
    main()  # pylint: disable=no-value-for-parameter
