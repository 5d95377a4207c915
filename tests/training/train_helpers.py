"""Shared helpers of the tests/training/test_train_*.py files (loaded by path: importlib mode)."""

import torch

from pstyle.datasets.synthetic import make_shapes_dataset
from pstyle.training.train_config import TrainOptions, setup_training_config

RES = 16
DATASET_INFO = dict(name='shapes', resolution=RES, num_channels=3, label_dim=0, size=16)


def make_dataset(folder, num_images=16, resolution=RES):
    return str(make_shapes_dataset(folder, num_images=num_images, resolution=resolution, seed=1))


def tiny_options(outdir, data, **kw):
    """TrainOptions of a 16x16 run: batch 4, 2 iterations per tick, every phase within 4 iterations."""
    base = dict(outdir=str(outdir), data=data, cfg='tiny', batch=4, mbstd=2, kimg=0.016, kimg_per_tick=0.008,
                snap=1, grid=(2, 2), workers=0, device='cpu', g_reg_interval=2, d_reg_interval=2,
                aug='ada', p=0.2, ada_kimg=1)
    base.update(kw)
    return TrainOptions(**base)


def tiny_cfg(**kw):
    """A config dict for in-process Trainer tests (no files)."""
    o = tiny_options('unused', 'unused', **kw)
    cfg = setup_training_config(o, DATASET_INFO)
    cfg['device'] = 'cpu'
    return cfg


def state_diff(a, b):
    """Names whose tensors differ between two state_dicts (bit-exact comparison)."""
    return [k for k in a if not torch.equal(a[k], b[k])]
