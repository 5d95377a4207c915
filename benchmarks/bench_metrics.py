"""Benchmark: FID feature extraction and end-to-end FID time, ours vs torch-fidelity and clean-fid.

All implementations run in the same process on the same machine, with the same random Inception
weights (the layout of pt_inception-2015-12-05-6726825d.pth) and the same image folders. Runs are
interleaved and the best of --reps is kept, so background load hurts every implementation alike.

    python benchmarks/bench_metrics.py --n 64 --size 256 --device cpu
    python benchmarks/bench_metrics.py --n 2000 --device cuda --batch 100
"""

import argparse
import contextlib
import io
import json
import os
import tempfile
import time
import warnings

import numpy as np
import torch
from PIL import Image


def make_folders(root, n, size):
    rs = np.random.RandomState(0)
    ramp = np.linspace(0, 255, size)[None, :, None] * np.ones((size, size, 3))
    out = []
    for name, offset in (('real', 0), ('fake', 40)):
        folder = os.path.join(root, name)
        os.makedirs(folder)
        for i in range(n):
            img = np.clip(0.5 * ramp + rs.randint(0, 128, (size, size, 3)) + offset, 0, 255).astype(np.uint8)
            Image.fromarray(img).save(os.path.join(folder, f'{i:05d}.png'))
        out.append(folder)
    return out


def timed(fn, sync):
    sync()
    t = time.perf_counter()
    res = fn()
    sync()
    return time.perf_counter() - t, res


def extractors(weights, device):
    """Forward functions uint8 [N,3,H,W] -> pool3, one per implementation (legacy_tf input pipeline)."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    from pstyle.metrics.features import build_inception
    ours = build_inception(weights, 'legacy_tf', device)
    tfid = FeatureExtractorInceptionV3('inception-v3-compat', ['2048'], feature_extractor_weights_path=weights)
    tfid = tfid.to(device)

    def run_tfid(x):
        with torch.no_grad():
            return tfid(x.to(device))[0]
    return {'ours': lambda x: ours(x)['pool3'], 'torch-fidelity': run_tfid}


def clean_fid_patch(weights):
    """clean-fid builds pytorch-fid's network from a URL; serve our weight file instead."""
    import cleanfid.inception_pytorch as cip
    cip.load_state_dict_from_url = lambda *a, **k: torch.load(weights, weights_only=True)


def fid_runs(real, fake, weights, device, batch, workers):
    import torch_fidelity
    from cleanfid import fid as cfid

    from pstyle.metrics.api import compute_metrics
    clean_fid_patch(weights)
    dev = torch.device(device)
    return {
        'ours legacy_tf': lambda: compute_metrics('fid', real=real, fake=fake, inception_weights=weights,
                                                  batch_size=batch, num_workers=workers, device=dev,
                                                  use_cache=False)['fid'],
        'torch-fidelity': lambda: torch_fidelity.calculate_metrics(
            input1=fake, input2=real, fid=True, cuda=dev.type == 'cuda', batch_size=batch, verbose=False,
            cache=False, feature_extractor_weights_path=weights)['frechet_inception_distance'],
        'ours legacy_pytorch': lambda: compute_metrics('fid', real=real, fake=fake, inception_weights=weights,
                                                       protocol='legacy_pytorch', batch_size=batch,
                                                       num_workers=workers, device=dev, use_cache=False)['fid'],
        'clean-fid legacy_pytorch': lambda: cfid.compute_fid(real, fake, mode='legacy_pytorch', batch_size=batch,
                                                             num_workers=workers, device=dev, verbose=False,
                                                             use_dataparallel=False),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--n', type=int, default=64, help='images per set')
    ap.add_argument('--size', type=int, default=256, help='image resolution')
    ap.add_argument('--batch', type=int, default=32)
    ap.add_argument('--reps', type=int, default=2)
    ap.add_argument('--workers', type=int, default=0, help='data-loader processes for the end-to-end runs')
    ap.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    ap.add_argument('--skip-fid', action='store_true', help='only time the feature extractors')
    ap.add_argument('--json', action='store_true')
    args = ap.parse_args()
    warnings.simplefilter('ignore')
    from pstyle.metrics.inception import random_inception_state_dict
    sync = torch.cuda.synchronize if args.device.startswith('cuda') else (lambda: None)
    report = dict(device=args.device, torch=torch.__version__, threads=torch.get_num_threads(), n=args.n,
                  size=args.size, batch=args.batch, cpu=os.cpu_count(),
                  gpu=torch.cuda.get_device_name() if args.device.startswith('cuda') else None)
    with tempfile.TemporaryDirectory() as tmp:
        weights = os.path.join(tmp, 'random_pt_inception.pth')
        torch.save(random_inception_state_dict(0), weights)
        imgs = torch.randint(0, 256, (args.batch, 3, args.size, args.size), dtype=torch.uint8)
        fns = extractors(weights, args.device)
        best = {k: float('inf') for k in fns}
        for _ in range(args.reps + 1):                       # first round warms up (oneDNN/cuDNN plans)
            for name, fn in fns.items():
                best[name] = min(best[name], timed(lambda: fn(imgs), sync)[0])
        report['extract_images_per_s'] = {k: round(args.batch / v, 2) for k, v in best.items()}
        if not args.skip_fid:
            real, fake = make_folders(tmp, args.n, args.size)
            runs = fid_runs(real, fake, weights, args.device, args.batch, args.workers)
            best, values = {k: float('inf') for k in runs}, {}
            for _ in range(args.reps):
                for name, fn in runs.items():
                    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                        t, values[name] = timed(fn, sync)
                    best[name] = min(best[name], t)
            report['fid_total_s'] = {k: round(v, 2) for k, v in best.items()}
            report['fid_value'] = {k: round(float(v), 6) for k, v in values.items()}
    if args.json:
        print(json.dumps(report))
        return
    where = report['gpu'] or f"{report['cpu']} CPUs, {report['threads']} threads"
    print(f"device {report['device']} ({where}), torch {report['torch']}, {args.n} images per set at "
          f"{args.size}px, batch {args.batch}")
    print('feature extraction (images/s, higher is better):')
    for k, v in report['extract_images_per_s'].items():
        print(f'  {k:28s} {v:10.2f}')
    if 'fid_total_s' in report:
        print(f'FID on 2 x {args.n} images (seconds, lower is better; FID value):')
        for k, v in report['fid_total_s'].items():
            print(f"  {k:28s} {v:10.2f}   {report['fid_value'][k]:.6f}")


if __name__ == '__main__':
    main()
