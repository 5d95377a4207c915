"""The FID curve of docs/training_curve.md: train the tiny config on the synthetic shapes dataset on
the CPU and measure a distance to the training set at initialization and at every snapshot.

    python benchmarks/training_curve.py --outdir /tmp/curve --kimg 48 --threads 1

The metric is `proxyfid2k_full` (Fréchet distance on fixed pixel features, training/train_metrics.py)
unless --metric names an Inception metric (fid2k_full, ...) and the Inception weights are installed.
"""

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pstyle.training.launch import train  # noqa: E402
from pstyle.models.networks import Generator  # noqa: E402
from pstyle.datasets.synthetic import make_shapes_dataset  # noqa: E402
from pstyle.training.train_config import TrainOptions  # noqa: E402
from pstyle.training.train_metrics import make_metrics_fn  # noqa: E402


def main():
    p = argparse.ArgumentParser()
    p.add_argument('--outdir', required=True)
    p.add_argument('--kimg', type=float, default=48)
    p.add_argument('--images', type=int, default=2000)
    p.add_argument('--snap', type=int, default=4, help='ticks (of 1 kimg) between snapshots')
    p.add_argument('--metric', default='proxyfid2k_full')
    p.add_argument('--threads', type=int, default=1)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    out = Path(a.outdir)
    data = make_shapes_dataset(out / 'shapes32', num_images=a.images, resolution=32, seed=0)
    opts = TrainOptions(outdir=str(out / 'runs'), data=str(data), cfg='tiny', kimg=a.kimg, kimg_per_tick=1,
                        snap=a.snap, metrics=(a.metric,), workers=1, device='cpu', grid=(8, 4))
    snap = train(opts)
    run = snap.parent
    cfg = json.loads((run / 'training_options.json').read_text())
    torch.manual_seed(cfg['random_seed'])  # The loop builds G first after this seed: the same init.
    G_init = Generator(**cfg['G_kwargs']).eval().requires_grad_(False)
    init = make_metrics_fn(cfg)(G_init, 0.0)[a.metric]
    with open(run / f'metric-{a.metric}.jsonl', 'a') as f:
        f.write(json.dumps(dict(init, kimg=0.0, snapshot='init (rebuilt from the seed)')) + '\n')
    print(json.dumps(dict(init=init, run=str(run))))


if __name__ == '__main__':
    main()
