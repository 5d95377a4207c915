"""The run directory: options, log, stats, image grids, network snapshots and resume state.

Layout (NVIDIA's, with our snapshot format):

    <outdir>/<NNNNN>-<desc>/
        training_options.json       every hyper-parameter of the run
        log.txt                     the progress lines
        stats.jsonl                 one JSON object per tick (means of the reported statistics)
        events.out.tfevents.*       TensorBoard, when `tensorboard` is installed
        reals.png, fakes_init.png, fakes<TAG>.png      image grids
        network-snapshot-<TAG>.pt   G, D, G_ema (`training.checkpoint.save_network`, atomic)
        training-state-<TAG>.pt     optimizers, ADA, EMA/RNG states, counters, the network file's sha256
        metric-<name>.jsonl         metrics computed on the snapshots

<TAG> is NVIDIA's NNNNNN, the kimg (images shown to D / 1000), when the image count is a whole kimg;
otherwise NNNNNN-MMMMMMimg with the exact image count MMMMMM (`000000-000256img`), so no snapshot of a
run ever replaces another, even in runs shorter than 1 kimg.

A snapshot is one unit although it is two files: the network is written first, then the training state,
which records the network file's sha256 and so commits the pair. A crash at any instant leaves either a
complete pair or a network without its state; `latest_snapshot` takes only complete pairs, and resuming a
pair whose hashes differ is refused (`SnapshotError`). `repair_run_dir` clears what a crash left behind
(temporary files, a torn last line, log entries newer than the snapshot resumed from).
"""

import json
import re
import time
import warnings
from pathlib import Path

import numpy as np
import PIL.Image
import torch

from pstyle.torch_utils.fileio import atomic_path, atomic_torch_save, naming, sha256_file

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


class SnapshotError(ValueError):
    """A snapshot that cannot be resumed: its two files do not belong together, or one is missing."""


def pair_problem(net_path, state):
    """Why the network file and a loaded training state are not one snapshot, or None when they are.

    States written before the hash was recorded (no 'network_sha256') are taken as they are."""
    expected = state.get('network_sha256') if isinstance(state, dict) else None
    if expected is None:
        return None
    actual = sha256_file(net_path)
    if actual != expected:
        return (f'{net_path.name} has sha256 {actual[:16]}..., but its training state was written for a network '
                f'with sha256 {expected[:16]}... (the two files come from different saves)')
    return None


def latest_snapshot(run_dir):
    """(network path, state path) of the newest complete snapshot in a run dir, or None.

    Complete: both files exist and the state's recorded network hash matches. An incomplete newer
    snapshot (a crash while saving) is passed over with a warning."""
    run_dir = Path(run_dir)
    found = sorted((nimg for p in run_dir.glob('network-snapshot-*.pt') if (nimg := snapshot_nimg(p.name)) is not None),
                   reverse=True)
    for nimg in found:
        net_path, state_path = snapshot_paths(run_dir, nimg)
        if not state_path.is_file():
            warnings.warn(f'{net_path} has no {state_path.name} (a crash while saving?): passed over', stacklevel=2)
            continue
        try:
            problem = pair_problem(net_path, load_training_state(state_path))
        except checkpoint.CheckpointError as e:
            problem = str(e)
        if problem is None:
            return net_path, state_path
        warnings.warn(f'{problem}: passed over', stacklevel=2)
    return None


def save_training_state(path, state):
    """torch.save(state) atomically; the content loads with `torch.load(weights_only=True)`."""
    atomic_torch_save(state, path)


def load_training_state(path):
    try:
        state = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as e:
        raise checkpoint.CheckpointError(f'{path}: cannot read the training state ({type(e).__name__}: {e})') from None
    if not isinstance(state, dict):
        raise checkpoint.CheckpointError(f'{path}: not a training state (a {type(state).__name__})')
    return state


def load_snapshot(net_path, state_path):
    """(training state, networks) of one snapshot, refused when the two files do not belong together."""
    net_path, state_path = Path(net_path), Path(state_path)
    state = load_training_state(state_path)
    problem = pair_problem(net_path, state)
    if problem is not None:
        raise SnapshotError(f'cannot resume from {net_path}: {problem}. Resume from the run directory to take '
                            f'its newest complete snapshot, or name an earlier network-snapshot file.')
    return state, checkpoint.load_network(net_path)


def save_snapshot(run_dir, nimg, networks, state):
    """Write the networks, then the training state with their file's sha256 (both atomic): the state
    commits the pair. Returns the network path."""
    net_path, state_path = snapshot_paths(run_dir, nimg)
    checkpoint.save_network(net_path, **networks)
    save_training_state(state_path, dict(state, network_sha256=sha256_file(net_path)))
    return net_path


# ----------------------------------------------------------------------------
# After a crash.

TMP_RE = re.compile(r'\..+\.[A-Za-z0-9_]+\.tmp')  # fileio.atomic_path's names: .<name>.<random>.tmp


def read_jsonl(path):
    """The complete JSON lines of a file (a torn last line is left out)."""
    entries = []
    for line in Path(path).read_text(encoding='utf-8').splitlines():
        try:
            entries.append(json.loads(line))
        except ValueError:
            continue  # Torn by a crash mid-write.
    return entries


def read_jsonl_if_any(path):
    return read_jsonl(path) if Path(path).is_file() else []


def trim_jsonl(path, keep):
    """Rewrite a JSON-lines file (atomically) with the complete entries for which keep(entry) holds."""
    path = Path(path)
    if not path.is_file():
        return
    text = path.read_text(encoding='utf-8')
    entries = [e for e in read_jsonl(path) if keep(e)]
    new = ''.join(json.dumps(e) + '\n' for e in entries)
    if new != text:
        with atomic_path(path) as tmp:
            tmp.write_text(new, encoding='utf-8')


def repair_run_dir(run_dir, kimg):
    """Make a run directory continue from the snapshot at `kimg` as if nothing had happened after it:
    temporary files of interrupted writes are removed; stats and metric lines newer than `kimg` (they
    will be written again) and torn lines are dropped. Returns the names of the removed files."""
    run_dir = Path(run_dir)
    removed = []
    for p in run_dir.iterdir():
        if p.is_file() and TMP_RE.fullmatch(p.name):
            p.unlink()
            removed.append(p.name)
    trim_jsonl(run_dir / 'stats.jsonl', lambda e: e.get('Progress/kimg', 0) <= kimg)
    for p in run_dir.glob('metric-*.jsonl'):
        trim_jsonl(p, lambda e: e.get('kimg', 0) <= kimg)
    log = run_dir / 'log.txt'
    if log.is_file() and log.stat().st_size and not log.read_bytes().endswith(b'\n'):
        append_line(log, '')  # End a torn line, so the next one starts on its own.
    return sorted(removed)


def append_line(path, line):
    """Append one line to a text log (stats.jsonl, metric-*.jsonl, log.txt)."""
    with naming(path), open(path, 'a', encoding='utf-8') as f:
        f.write(line + '\n')


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
    with naming(path):
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
        append_line(self.run_dir / 'log.txt', msg)

    def stats(self, stats, cur_nimg):
        """Append {'name': {num, mean, std}, ..., 'Progress/kimg': ...} to stats.jsonl (+ TensorBoard)."""
        if not self.enabled:
            return
        entry = dict(stats, timestamp=time.time())
        append_line(self.run_dir / 'stats.jsonl', json.dumps(entry))
        if self._tb is not None:
            for name, value in stats.items():  # Whole kimg as the step and the tick's mean, as NVIDIA's loop.
                value = value['mean'] if isinstance(value, dict) else value
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    self._tb.add_scalar(name, value, global_step=int(cur_nimg / 1e3))
            self._tb.flush()

    def metric(self, name, result):
        if self.enabled:
            append_line(self.run_dir / f'metric-{name}.jsonl', json.dumps(result))

    def close(self):
        if self._tb is not None:
            self._tb.close()
