"""Training throughput: s/kimg and peak memory of the full StyleGAN2 iteration (G and D phases with
lazy R1 / path-length regularization, G_ema update; augmentation off so only the networks count).

    python benchmarks/bench_training.py                                  # tiny config, 32x32, CPU
    python benchmarks/bench_training.py --cfg paper256 --res 256 --device cuda   # NVIDIA's comparison point

NVIDIA's published figure for comparison (stylegan2-ada-pytorch README, 1 x V100, 256x256, `--cfg=auto`):
21.6-24.2 s/kimg. Data loading is not included (batches are random uint8 tensors already in memory).
"""

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pstyle.training.train_config import TrainOptions, setup_training_config  # noqa: E402
from pstyle.training.trainer import Trainer  # noqa: E402


def bench(cfg_name, res, batch, iters, warmup, device, threads, aug):
    torch.set_num_threads(threads)
    o = TrainOptions(data='-', cfg=cfg_name, batch=batch, aug=aug, p=0.2 if aug == 'fixed' else None, workers=0)
    cfg = setup_training_config(o, dict(name='bench', resolution=res, num_channels=3, label_dim=0, size=1000))
    cfg['device'] = device
    torch.manual_seed(0)
    t = Trainer(cfg, device, np.zeros([1000, 0], np.float32), log=lambda m: None)
    n = cfg['batch_size']
    img = torch.randint(0, 256, [n, 3, res, res], dtype=torch.uint8)
    c = torch.zeros([n, 0])
    sync = torch.cuda.synchronize if device.startswith('cuda') else (lambda: None)
    for _ in range(warmup):
        t.step(img, c)
    sync()
    if device.startswith('cuda'):
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(iters):  # A multiple of 16 covers both lazy-regularization intervals proportionally.
        t.step(img, c)
    sync()
    elapsed = time.perf_counter() - start
    out = dict(cfg=cfg_name, resolution=res, batch=n, batch_gpu=cfg['batch_gpu'], device=device, threads=threads,
               iters=iters, aug=aug, s_per_kimg=round(elapsed / (iters * n) * 1000, 2),
               peak_rss_gb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20, 3),
               G_params=sum(p.numel() for p in t.G.parameters()), D_params=sum(p.numel() for p in t.D.parameters()))
    if device.startswith('cuda'):
        out.update(gpu=torch.cuda.get_device_name(), peak_gpu_mem_gb=round(torch.cuda.max_memory_allocated() / 2 ** 30, 3))
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--cfg', default='tiny')
    p.add_argument('--res', type=int, default=32)
    p.add_argument('--batch', type=int, default=None, help='default: the preset\'s')
    p.add_argument('--iters', type=int, default=16)
    p.add_argument('--warmup', type=int, default=4)
    p.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    p.add_argument('--threads', type=int, default=torch.get_num_threads())
    p.add_argument('--aug', default='noaug', choices=['noaug', 'fixed'], help='fixed = p 0.2 with bgc')
    a = p.parse_args()
    print(json.dumps(bench(a.cfg, a.res, a.batch, a.iters, a.warmup, a.device, a.threads, a.aug)))


if __name__ == '__main__':
    main()
