"""Stylization benchmark: generator blending at 1024x1024, and the photo -> portrait pipeline stage by stage.

    python benchmarks/bench_stylize.py                      # CPU, plus CUDA when available
    python benchmarks/bench_stylize.py --device cpu --steps 20 --photos 2 --out bench_stylize.json
    python benchmarks/bench_stylize.py --device cpu --skip-blend --steps 20 --pti-steps 10   # with the PTI stage

Blending uses two random generators with the official FFHQ/MetFaces configuration (z_dim = w_dim = 512,
channel_base 32768, channel_max 512, 8 mapping layers, 18 W+ rows); the target is < 1 s on a CPU.
The pipeline runs on two random 256x256 generators (NVIDIA's paper256 configuration) saved to a
temporary folder, with `--steps` projection steps, and reports seconds per photo for each stage.
"""

import argparse
import copy
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pstyle.stylize import blend, layer_weights  # noqa: E402
from pstyle.models.networks import Generator  # noqa: E402

OFFICIAL_1024 = dict(z_dim=512, w_dim=512, c_dim=0, img_resolution=1024, img_channels=3,
                     mapping_kwargs=dict(num_layers=8), synthesis_kwargs=dict(channel_base=32768, channel_max=512))
PAPER_256 = dict(z_dim=512, w_dim=512, c_dim=0, img_resolution=256, img_channels=3,
                 mapping_kwargs=dict(num_layers=8), synthesis_kwargs=dict(channel_base=16384, channel_max=512))


@torch.no_grad()
def random_pair(config, device):
    """A and a perturbed copy B (a stand-in fine-tune), eval mode."""
    torch.manual_seed(0)
    G_a = Generator(**config).eval().requires_grad_(False).to(device)
    G_b = copy.deepcopy(G_a)
    for name, tensor in G_b.state_dict().items():
        if 'resample_filter' not in name:
            tensor.add_(0.1 * torch.randn_like(tensor))
    return G_a, G_b


def _sync(device):
    if device.type == 'cuda':
        torch.cuda.synchronize()


def bench_blend(device, repeats=5):
    G_a, G_b = random_pair(OFFICIAL_1024, device)
    numel = sum(t.numel() for t in G_a.state_dict().values())
    out = dict(device=str(device), num_ws=G_a.num_ws, tensor_elements=numel)
    cases = {'swap-res 32 (hard copies)': layer_weights.resolve_weights(G_a, swap_res=32),
             'swap-res 32, blend-width 0.5 (every tensor lerped)': layer_weights.resolve_weights(G_a, swap_res=32, blend_width=0.5)}
    for (label, weights), copy_tensors in [(case, c) for case in cases.items() for c in (True, False)]:
        label += ', copied tensors' if copy_tensors else ', shared tensors (pipeline)'
        times, cpu = [], []
        for _ in range(repeats):
            _sync(device)
            t0, c0 = time.perf_counter(), time.process_time()
            G = blend.blend_generators(G_a, G_b, weights, copy_tensors=copy_tensors)
            _sync(device)
            times.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)  # CPU time of all threads: context on a shared, loaded machine.
            del G
        out[label] = dict(median_s=statistics.median(times), min_s=min(times), max_s=max(times),
                          median_cpu_s=statistics.median(cpu), repeats=repeats)
    return out


def _photos(folder, count, size):
    """Synthetic square 'photos' (smooth random colour fields) for the --no-align path."""
    from PIL import Image
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.RandomState(0)
    for i in range(count):
        small = rng.randint(0, 255, (6, 6, 3)).astype(np.uint8)
        Image.fromarray(small).resize((size, size), Image.Resampling.BICUBIC).save(folder / f'photo{i}.png')
    return folder


def _astronaut(folder):
    """skimage's astronaut, for the alignment stage, when scikit-image and dlib are installed."""
    try:
        import dlib  # noqa: F401
        from PIL import Image
        from skimage import data
    except ImportError as e:
        return None, f'alignment not measured: {e}'
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(data.astronaut()).save(folder / 'astronaut.png')
    return folder, None


def bench_pipeline(device, steps, count, pti_steps=0):
    from pstyle.models.checkpoint import save_network
    from pstyle.stylize.pipeline import StylizeConfig, stylize_photos
    from pstyle.metrics.lpips_utils import backbone_path
    have_lpips = backbone_path('vgg').is_file()
    results = dict(device=str(device), config='paper256 (channel_base 16384, channel_max 512)', steps=steps, pti_steps=pti_steps,
                   projection_loss='lpips-vgg' if have_lpips else 'mse (LPIPS-VGG backbone not found)')
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        G_a, G_b = random_pair(PAPER_256, 'cpu')
        save_network(tmp / 'a.pt', G_ema=G_a)
        save_network(tmp / 'b.pt', G_ema=G_b)
        project = dict(num_steps=steps, w_avg_samples=2000)
        if not have_lpips:
            project.update(lpips_weight=0.0, mse_weight=1.0)
        runs = [('no-align', _photos(tmp / 'photos', count, 256), False, None)]
        folder, note = _astronaut(tmp / 'astro')
        if folder is not None:
            runs.append(('align', folder, True, None))
        else:
            results['note'] = note
        for label, photos, align, _ in runs:
            cfg = StylizeConfig(base=str(tmp / 'a.pt'), styled=str(tmp / 'b.pt'), spec=layer_weights.make_spec(swap_res=32),
                                align=align, project=project, batch_size=count, device=str(device), metrics=True,
                                pti=pti_steps > 0, pti_settings=dict(num_steps=pti_steps) if pti_steps else {})
            t0 = time.perf_counter()
            manifest = stylize_photos(photos, tmp / f'out_{label}', cfg, log=lambda _: None)
            results[label] = dict(photos=manifest['num_items'], ok=manifest['num_ok'],
                                  total_s=time.perf_counter() - t0, once_s=manifest['seconds'] | {'per_photo': None},
                                  per_photo_s=manifest['seconds']['per_photo'], notes=manifest['notes'])
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--device', action='append', help='cpu, cuda (repeatable; default: cpu and cuda when available)')
    parser.add_argument('--steps', type=int, default=20, help='projection steps in the pipeline benchmark')
    parser.add_argument('--photos', type=int, default=2, help='synthetic photos in the pipeline benchmark')
    parser.add_argument('--pti-steps', type=int, default=0, help='pivotal tuning steps per photo (0 = no PTI stage)')
    parser.add_argument('--skip-pipeline', action='store_true')
    parser.add_argument('--skip-blend', action='store_true')
    parser.add_argument('--out', type=Path, default=None, help='also write the results as JSON')
    args = parser.parse_args()
    devices = args.device or (['cpu'] + (['cuda'] if torch.cuda.is_available() else []))
    load = os.getloadavg() if hasattr(os, 'getloadavg') else None
    report = dict(torch=torch.__version__, threads=torch.get_num_threads(), cpus=os.cpu_count(), load_average=load,
                  blend=[], pipeline=[])
    for name in devices:
        device = torch.device(name)
        if not args.skip_blend:
            report['blend'].append(bench_blend(device))
            print(json.dumps(report['blend'][-1], indent=1), flush=True)
        if not args.skip_pipeline:
            report['pipeline'].append(bench_pipeline(device, args.steps, args.photos, args.pti_steps))
            print(json.dumps(report['pipeline'][-1], indent=1), flush=True)
    if args.out is not None:
        args.out.write_text(json.dumps(report, indent=1) + '\n')


if __name__ == '__main__':
    main()
