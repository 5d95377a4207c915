"""The run directory: options, log, stats, image grids, network snapshots and resume state.

Layout (NVIDIA's, with our snapshot format):

    <outdir>/<NNNNN>-<desc>/
        training_options.json       every hyper-parameter of the run
        log.txt                     the progress lines
        stats.jsonl                 one JSON object per tick (means of the reported statistics)
        events.out.tfevents.*       TensorBoard, when `tensorboard` is installed
        reals.png, fakes_init.png, fakes<TAG>.png      image grids
        network-snapshot-<TAG>.pt   G, D, G_ema (`training.checkpoint.save_network`, atomic)
        training-state-<TAG>.pt     optimizers, ADA, EMA/RNG states, counters: exact resume
        metric-<name>.jsonl         metrics computed on the snapshots

<TAG> is NVIDIA's NNNNNN, the kimg (images shown to D / 1000), when the image count is a whole kimg;
otherwise NNNNNN-MMMMMMimg with the exact image count MMMMMM (`000000-000256img`), so no snapshot of a
run ever replaces another, even in runs shorter than 1 kimg.
"""

import json
import re
import time
from pathlib import Path

import numpy as np
import PIL.Image
import torch

from pstyle.torch_utils.fileio import atomic_path, atomic_torch_save

from pstyle.models import checkpoint

SNAPSHOT_RE = re.compile(r'network-snapshot-(\d+)(?:-(\d+)img)?\.pt')


def next_run_dir(outdir, desc):
    """<outdir>/<NNNNN>-<desc> with NNNNN one above the highest existing run id."""
    outdir = Path(outdir)
    ids = [int(m.group(1)) for p in (outdir.iterdir() if outdir.is_dir() else [])
           if (m := re.match(r'(\d+)-', p.name))]
    return outdir / f'{max(ids, default=-1) + 1:05d}-{desc}'


def write_json(path, data):
    """Atomic JSON write (tmp file + rename)."""
    with atomic_path(path) as tmp, open(tmp, 'w') as f:
        json.dump(data, f, indent=2, sort_keys=True)


def snapshot_tag(nimg):
    """'000012' at a whole kimg (NVIDIA's names), else '000000-000256img': unique per image count."""
    nimg = int(nimg)
    return f'{nimg // 1000:06d}' if nimg % 1000 == 0 else f'{nimg // 1000:06d}-{nimg:06d}img'


def snapshot_nimg(name):
    """The image count in a snapshot file name, or None when it is not one."""
    m = SNAPSHOT_RE.fullmatch(name)
    if m is None:
        return None
    return int(m.group(2)) if m.group(2) else int(m.group(1)) * 1000


def snapshot_paths(run_dir, nimg):
    run_dir = Path(run_dir)
    tag = snapshot_tag(nimg)
    return run_dir / f'network-snapshot-{tag}.pt', run_dir / f'training-state-{tag}.pt'


def latest_snapshot(run_dir):
    """(network path, state path) of the newest complete snapshot in a run dir, or None."""
    found = []
    for p in Path(run_dir).glob('network-snapshot-*.pt'):
        nimg = snapshot_nimg(p.name)
        if nimg is not None and snapshot_paths(run_dir, nimg)[1].is_file():
            found.append(nimg)
    return snapshot_paths(run_dir, max(found)) if found else None


def save_training_state(path, state):
    """torch.save(state) atomically; the content loads with `torch.load(weights_only=True)`."""
    atomic_torch_save(state, path)


def load_training_state(path):
    try:
        return torch.load(path, map_location='cpu', weights_only=True)
    except Exception as e:
        raise checkpoint.CheckpointError(f'{path}: cannot read the training state ({type(e).__name__}: {e})') from None


def save_snapshot(run_dir, nimg, networks, state):
    """Write the training state, then the networks (both atomic); returns the network path."""
    net_path, state_path = snapshot_paths(run_dir, nimg)
    save_training_state(state_path, state)
    checkpoint.save_network(net_path, **networks)
    return net_path


# ----------------------------------------------------------------------------
# Image grids.

def grid_size(resolution, override=None):
    """NVIDIA's grid: about 7680x4320 pixels, 7..32 by 4..32 images; or (w, h) as given."""
    if override:
        return int(override[0]), int(override[1])
    return int(np.clip(7680 // resolution, 7, 32)), int(np.clip(4320 // resolution, 4, 32))


def save_image_grid(images, path, grid):
    """images: uint8 [N, C, H, W] (N = gw * gh) -> one PNG."""
    gw, gh = grid
    n, c, h, w = images.shape
    assert n == gw * gh, f'{n} images do not fill a {gw}x{gh} grid'
    tiled = images.reshape(gh, gw, c, h, w).transpose(0, 3, 1, 4, 2).reshape(gh * h, gw * w, c)  # [gh*H, gw*W, C]
    PIL.Image.fromarray(tiled[:, :, 0] if c == 1 else tiled, 'L' if c == 1 else 'RGB').save(path)


def to_uint8(img):
    """float [N, C, H, W] in ~[-1, 1] -> uint8 numpy, rounded as NVIDIA does."""
    return (img.float() * 127.5 + 128).clamp(0, 255).to(torch.uint8).cpu().numpy()


# ----------------------------------------------------------------------------
# Log, stats and TensorBoard (main process only).

class RunLog:
    """Progress lines to stdout and log.txt; per-tick stats to stats.jsonl and TensorBoard."""

    def __init__(self, run_dir, enabled=True, echo=True):
        self.run_dir = Path(run_dir)
        self.enabled = enabled
        self.echo = echo
        self._tb = None
        if enabled:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            try:
                from torch.utils.tensorboard import SummaryWriter
                self._tb = SummaryWriter(str(self.run_dir))
            except ImportError:
                self._tb = None  # TensorBoard is optional.

    def log(self, msg):
        if not self.enabled:
            return
        if self.echo:
            print(msg, flush=True)
        with open(self.run_dir / 'log.txt', 'a') as f:
            f.write(msg + '\n')

    def stats(self, stats, cur_nimg):
        """Append {'name': {num, mean, std}, ..., 'Progress/kimg': ...} to stats.jsonl (+ TensorBoard)."""
        if not self.enabled:
            return
        entry = dict(stats, timestamp=time.time())
        with open(self.run_dir / 'stats.jsonl', 'a') as f:
            f.write(json.dumps(entry) + '\n')
        if self._tb is not None:
            for name, value in stats.items():  # Whole kimg as the step and the tick's mean, as NVIDIA's loop.
                value = value['mean'] if isinstance(value, dict) else value
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    self._tb.add_scalar(name, value, global_step=int(cur_nimg / 1e3))
            self._tb.flush()

    def metric(self, name, result):
        if self.enabled:
            with open(self.run_dir / f'metric-{name}.jsonl', 'a') as f:
                f.write(json.dumps(result) + '\n')

    def close(self):
        if self._tb is not None:
            self._tb.close()
