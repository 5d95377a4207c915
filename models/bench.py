"""Generator benchmark: images/s per execution path, as ratios to a baseline measured in the same run.

The baseline is NVIDIA's execution order for inference (fused grouped modulated convolution, fp32,
contiguous tensors, reference ops), run on this project's network: NVIDIA's code is not vendored, so
"the same computation as NVIDIA's" is measured instead, on the same machine and in the same process.
"""

import contextlib
import dataclasses
import math
import os
import time

import torch
from pstyle.models.networks import Generator
from pstyle.torch_utils import cpu_features
from pstyle.torch_utils import misc

# Official configurations: 256² is NVIDIA's paper256 (channel_base 16384), 1024² their stylegan2/FFHQ.
CONFIGS = {
    256: dict(z_dim=512, c_dim=0, w_dim=512, img_resolution=256, img_channels=3,
              mapping_kwargs=dict(num_layers=8), synthesis_kwargs=dict(channel_base=16384, channel_max=512)),
    1024: dict(z_dim=512, c_dim=0, w_dim=512, img_resolution=1024, img_channels=3,
               mapping_kwargs=dict(num_layers=8), synthesis_kwargs=dict(channel_base=32768, channel_max=512)),
}


@dataclasses.dataclass
class Path:
    name: str
    synthesis_kwargs: dict
    ref_ops: bool = False


def paths_for(device, include_slow=False):
    """Execution paths to compare; the first is the baseline."""
    base = Path('nvidia-order fp32 (baseline)', dict(fused_modconv=True, channels_last=False), ref_ops=True)
    paths = [base, Path('ours fp32', dict())]
    if device.type == 'cuda':
        paths.append(Path('ours fp16', dict(dtype=torch.float16)))
    elif include_slow or cpu_features.has_fast_bf16():
        paths.append(Path('ours bf16', dict(dtype=torch.bfloat16)))
    return paths


@contextlib.contextmanager
def forced_ref(enabled):
    """Run the reference ops (PSTYLE_OPS_REF=1) inside the block when `enabled`."""
    old = os.environ.get('PSTYLE_OPS_REF')
    if enabled:
        os.environ['PSTYLE_OPS_REF'] = '1'
    try:
        yield
    finally:
        if old is None:
            os.environ.pop('PSTYLE_OPS_REF', None)
        else:
            os.environ['PSTYLE_OPS_REF'] = old


def _sync(device):
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def time_call(fn, device, repeat, warmup=1):
    for _ in range(warmup):
        fn()
    _sync(device)
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    _sync(device)
    return (time.perf_counter() - start) / repeat


def psnr(a, b):
    """PSNR in dB for images in [-1, 1] (peak-to-peak 2)."""
    mse = float((a.float() - b.float()).square().mean())
    return float('inf') if mse == 0 else 10 * math.log10(4.0 / mse)


def bench_generator(resolution=256, batch_sizes=(1, 4, 16), device=None, repeat=3, backward=True, log=print, include_slow=False):
    """Print and return rows of images/s for forward (and forward+backward) per path and batch size."""
    device = torch.device(device or misc.default_device())
    torch.manual_seed(0)
    G = Generator(**CONFIGS[resolution]).to(device).eval().requires_grad_(False)
    log(f'device: {torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_features.describe()} '
        f'({torch.get_num_threads()} threads); G {resolution}x{resolution}, {sum(p.numel() for p in G.parameters()) / 1e6:.1f}M params')
    if device.type == 'cpu' and not include_slow and not cpu_features.has_fast_bf16():
        log('bf16 skipped: this CPU has neither AMX nor AVX-512 BF16, so bf16 is emulated and several times '
            'slower than fp32 (pass --include-slow to measure it anyway)')
    rows = []
    for batch in batch_sizes:
        ws = G.mapping(torch.randn([batch, G.z_dim], device=device), None)
        baseline = {}
        for path in paths_for(device, include_slow):
            with forced_ref(path.ref_ops), torch.inference_mode():
                fwd = lambda: G.synthesis(ws, noise_mode='const', **path.synthesis_kwargs)
                if device.type == 'cuda':
                    torch.cuda.reset_peak_memory_stats(device)
                t_fwd = time_call(fwd, device, repeat)
                out = fwd()
            row = dict(resolution=resolution, batch=batch, path=path.name, fwd_img_s=batch / t_fwd)
            if backward:
                row['fwdbwd_img_s'] = batch / _time_backward(G, ws, path, device, max(1, repeat // 2))
            if device.type == 'cuda':
                row['peak_mem_gib'] = torch.cuda.max_memory_allocated(device) / 2 ** 30
            if not baseline:
                baseline = dict(row, out=out)
            row['fwd_ratio'] = row['fwd_img_s'] / baseline['fwd_img_s']
            if backward:
                row['fwdbwd_ratio'] = row['fwdbwd_img_s'] / baseline['fwdbwd_img_s']
            row['psnr_vs_baseline_db'] = psnr(out, baseline['out'])
            rows.append(row)
            log(_format(row))
    return rows


def _time_backward(G, ws, path, device, repeat):
    kwargs = dict(path.synthesis_kwargs)
    if path.ref_ops:
        kwargs['fused_modconv'] = False  # NVIDIA trains with the non-fused form.
    ws = ws.detach().clone().requires_grad_(True)

    def step():
        img = G.synthesis(ws, noise_mode='const', **kwargs)
        (grad,) = torch.autograd.grad(img.float().square().sum(), [ws])
        return grad

    with forced_ref(path.ref_ops):
        return time_call(step, device, repeat)


def _format(row):
    parts = [f'{row["resolution"]}^2 batch {row["batch"]:>2}  {row["path"]:<30}',
             f'fwd {row["fwd_img_s"]:7.2f} img/s (x{row["fwd_ratio"]:.2f})']
    if 'fwdbwd_img_s' in row:
        parts.append(f'fwd+bwd {row["fwdbwd_img_s"]:7.2f} img/s (x{row["fwdbwd_ratio"]:.2f})')
    parts.append(f'PSNR {row["psnr_vs_baseline_db"]:.1f} dB')
    if 'peak_mem_gib' in row:
        parts.append(f'peak {row["peak_mem_gib"]:.2f} GiB')
    return '  '.join(parts)
