"""Encoder speed: photos per second at 256x256 for an e4e / pSp encoder, ours against a reference run.

Three executions of the same random weights (an 18-row FFHQ-size e4e by default, 145 GFLOP per photo),
timed in turns within one run so that machine load affects them alike:
  reference   the modules as the original code runs them: NCHW fp32, BatchNorm unfused
              (`load_encoder(optimize=False)`, which matches the original's outputs to 1e-5);
  ours-fp32   `load_encoder()`: BatchNorm folded into the convolutions, channels_last and, on the CPU, Winograd
              convolutions (torch_utils/winograd.py: F(4, 3) at stride 1, F(2, 2) polyphase at stride 2);
  ours-direct `load_encoder(winograd=False)`: the same without Winograd (oneDNN's direct convolutions);
  ours-bf16   the same under bf16 autocast (emulated, hence slow, on CPUs without AVX-512 BF16 / AMX);
              on CUDA also ours-fp16.
Each row reports photos/s, the ratio to the reference, the largest |W+ - reference W+| and (JSON) how many
convolutions ran as Winograd convolutions.

    python benchmarks/bench_encoder.py --batch 1,8 --repeats 3
    python benchmarks/bench_encoder.py --precision fp32 --json bench_encoder.json

Not a test: numbers depend on the machine and on its load (printed with the results).
"""

import json
import os
import platform
import statistics
import tempfile
import time
import warnings

import click
import torch

from pstyle.projectors import encoder_nets
from pstyle.projectors.encoder import load_encoder, save_encoder
from pstyle.torch_utils import cpu_features
from pstyle.torch_utils.winograd import active_count


def random_checkpoint(path, encoder_type='Encoder4Editing', num_ws=18, seed=0):
    """A checkpoint in the original training code's layout, random weights and BatchNorm statistics."""
    torch.manual_seed(seed)
    net = encoder_nets.build_encoder(encoder_type, num_ws)
    with torch.no_grad():
        for name, t in net.state_dict().items():
            if name.endswith('running_var'):
                t.uniform_(0.5, 1.5)
            elif name.endswith(('running_mean', 'bias')):
                t.normal_(0, 0.1)
    size = 2 ** ((num_ws + 2) // 2)
    opts = {'encoder_type': encoder_type, 'stylegan_size': size, 'output_size': size, 'start_from_latent_avg': True}
    return save_encoder(path, net, torch.randn(num_ws, 512), opts)


def variants(path, device, precisions):
    """{name: (encoder, precision)}: the reference execution and ours at each precision."""
    out = {'reference': (load_encoder(path, device, optimize=False), 'fp32')}
    if device.type == 'cpu' and 'fp32' in precisions:
        out['ours-direct'] = (load_encoder(path, device, winograd=False), 'fp32')
    ours = load_encoder(path, device)
    for precision in precisions:
        if precision == 'fp16' and device.type != 'cuda':
            continue
        out[f'ours-{precision}'] = (ours, precision)
    return out


@torch.no_grad()
def bench(path, device, batch, precisions, repeats, warmup):
    """Rows {variant, batch, photos_per_s, speedup, max_abs_diff} for one batch size."""
    torch.manual_seed(1)
    x = (torch.rand(batch, 3, 256, 256) * 2 - 1).to(device)
    sync = torch.cuda.synchronize if device.type == 'cuda' else (lambda: None)
    runs = variants(path, device, precisions)
    outputs, times = {}, {name: [] for name in runs}
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', RuntimeWarning)  # "bf16 is emulated here": reported in the header instead.
        for name, (encoder, precision) in runs.items():
            for _ in range(warmup):
                outputs[name] = encoder(x, precision=precision)
        for _ in range(repeats):                          # In turns: load changes hit every variant alike.
            for name, (encoder, precision) in runs.items():
                sync()
                start = time.perf_counter()
                outputs[name] = encoder(x, precision=precision)
                sync()
                times[name].append(time.perf_counter() - start)
    ref_rate = batch / statistics.median(times['reference'])
    rows = []
    for name in runs:
        rate = batch / statistics.median(times[name])
        rows.append(dict(variant=name, batch=batch, photos_per_s=rate, s_per_photo=1 / rate, speedup=rate / ref_rate,
                         max_abs_diff=float((outputs[name] - outputs['reference']).abs().max()),
                         winograd_convs=active_count(runs[name][0].net)))
    return rows


def machine(device):
    info = dict(device=str(device), torch=torch.__version__, threads=torch.get_num_threads(),
                cpu=cpu_features.describe(), fast_bf16=cpu_features.has_fast_bf16(), python=platform.python_version(),
                load_average=os.getloadavg()[0] if hasattr(os, 'getloadavg') else None)
    if device.type == 'cuda':
        info['gpu'] = torch.cuda.get_device_name(device)
    return info


@click.command()
@click.option('--device', default='cpu', show_default=True, help='cpu or cuda.')
@click.option('--encoder-type', type=click.Choice(encoder_nets.ENCODER_TYPES), default='Encoder4Editing', show_default=True)
@click.option('--num-ws', type=click.IntRange(2, 18), default=18, show_default=True, help='W+ rows (18: FFHQ 1024).')
@click.option('--batch', default='1,8', show_default=True, help='Comma-separated batch sizes.')
@click.option('--precision', 'precisions', default='fp32,bf16,fp16', show_default=True,
              help='Our precisions (fp16 on CUDA only).')
@click.option('--repeats', type=click.IntRange(1), default=3, show_default=True, help='Timed passes per variant (median).')
@click.option('--warmup', type=click.IntRange(0), default=1, show_default=True)
@click.option('--threads', type=click.IntRange(0), default=0, help='torch CPU threads [torch default].')
@click.option('--json', 'json_path', type=click.Path(dir_okay=False), default=None, help='Also write the rows here.')
def main(device, encoder_type, num_ws, batch, precisions, repeats, warmup, threads, json_path):
    """Photos/s of the encoder: reference execution vs ours (fp32, bf16, fp16)."""
    if num_ws % 2:
        raise click.BadParameter(f'{num_ws} is odd; a StyleGAN2 generator has 2 * log2(size) - 2 W+ rows', param_hint='--num-ws')
    if threads:
        torch.set_num_threads(threads)
    device = torch.device(device)
    info = machine(device)
    click.echo(json.dumps(info))
    if device.type == 'cpu' and not info['fast_bf16']:
        click.echo('note: this CPU has neither AVX-512 BF16 nor AMX: bf16 is emulated and slower than fp32 here')
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        path = random_checkpoint(os.path.join(tmp, 'encoder.pt'), encoder_type, num_ws)
        for b in [int(v) for v in batch.split(',')]:
            for row in bench(path, device, b, precisions.split(','), repeats, warmup):
                rows.append(row)
                click.echo(f'{row["variant"]:<11} batch {b:<3} {row["photos_per_s"]:7.3f} photos/s  '
                           f'{row["s_per_photo"]:7.3f} s/photo  x{row["speedup"]:.2f} vs reference  '
                           f'max |dW+| {row["max_abs_diff"]:.2e}')
    if json_path:
        with open(json_path, 'w') as f:
            json.dump(dict(machine=info, encoder_type=encoder_type, num_ws=num_ws, rows=rows), f, indent=2)


if __name__ == '__main__':
    main()  # pylint: disable=no-value-for-parameter
