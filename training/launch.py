"""Starting a run: options -> config -> run dir -> one process per GPU.

`train(options)` is what `pstyle train` calls. It handles three kinds of `--resume`:

* a run directory, or a `network-snapshot-*.pt` inside one (with its `training-state-*.pt`):
  continue that run exactly, in the same directory, from the snapshot (kimg, optimizers, ADA p,
  EMA, RNG states and data position all restored);
* any other network `load_network` reads (NVIDIA/TF pickles, rosinality, ours, URLs, short names):
  transfer learning from kimg 0 into a new run directory, with the architecture of that network;
* nothing: training from scratch.

Processes: under torchrun (RANK/WORLD_SIZE/LOCAL_RANK set) every process calls `train` itself;
otherwise `gpus > 1` spawns the processes here (torch.multiprocessing, TCP rendezvous on localhost).
"""

import dataclasses
import json
import os
import socket
import warnings
from pathlib import Path

import torch

from pstyle.torch_utils import distributed
from pstyle.training import run_dir as rd
from pstyle.training.train_config import ConfigError, TrainOptions, setup_training_config
from pstyle.datasets.dataset import ImageFolderDataset
from pstyle.training.trainer import load_source
from pstyle.training.training_loop import training_loop
from pstyle.training.train_metrics import make_metrics_fn
from pstyle.torch_utils import misc


def dataset_info(cfg_kwargs):
    """resolution, channels, labels and size of a dataset (opens it)."""
    ds = ImageFolderDataset(**cfg_kwargs)
    labels = ds.label_shape if ds.has_labels else [0]
    info = dict(name=ds.name, resolution=ds.resolution, num_channels=ds.num_channels,
                label_dim=int(labels[0]) if len(labels) == 1 else 0, size=len(ds))
    ds.close()
    return info


def find_continuation(resume):
    """(run dir, (network path, state path)) when `resume` is one of our runs/snapshots, else None."""
    if resume is None or '://' in str(resume):
        return None
    path = Path(resume)
    if path.is_dir():
        if not (path / 'training_options.json').is_file():
            raise ConfigError(f'--resume {path}: a directory must be a training run (no training_options.json found)')
        snap = rd.latest_snapshot(path)
        if snap is None:
            raise ConfigError(f'--resume {path}: the run has no complete snapshot (network-snapshot-*.pt with training-state-*.pt)')
        return path, snap
    nimg = rd.snapshot_nimg(path.name)
    if nimg is not None and path.is_file() and (path.parent / 'training_options.json').is_file():
        state = rd.snapshot_paths(path.parent, nimg)[1]
        if not state.is_file():  # Not a fine-tuning source either: say so rather than start a new run.
            raise ConfigError(f'--resume {path}: its {state.name} is missing, so the snapshot is incomplete (a crash '
                              f'while saving?). Resume from {path.parent} to take its newest complete snapshot; to '
                              f'fine-tune from this network instead, copy it out of its run directory.')
        return path.parent, (path, state)
    return None


def resolve_device(device):
    if device in (None, 'auto'):
        return misc.default_device()
    if torch.device(device).type == 'cuda' and not torch.cuda.is_available():
        raise ConfigError(f'--device {device}: CUDA is not available here')
    return str(device)


def merge_overrides(cfg, overrides):
    """Deep-merge `overrides` into `cfg` (e.g. {'G_kwargs': {'synthesis_kwargs': {'use_noise': False}}})."""
    for key, value in (overrides or {}).items():
        if isinstance(value, dict) and isinstance(cfg.get(key), dict):
            merge_overrides(cfg[key], value)
        else:
            cfg[key] = value
    return cfg


# What a continued run honours from the command line; everything else comes from its training_options.json.
CONTINUATION_OPTIONS = ('resume', 'kimg', 'gpus', 'device', 'outdir')


def ignored_options(o):
    """The options given with a run-continuing --resume that differ from their defaults, so have no effect."""
    defaults = TrainOptions()
    return sorted('--' + f.name.replace('_', '-') for f in dataclasses.fields(TrainOptions)
                  if f.name not in CONTINUATION_OPTIONS and getattr(o, f.name) != getattr(defaults, f.name))


def warn_ignored_options(o, run_dir):
    """Continuing a run replays its own options: say so when others were given (a user who meant to
    fine-tune from the snapshot would otherwise train on the old data with the old settings)."""
    ignored = ignored_options(o)
    if ignored:
        warnings.warn(f'--resume {o.resume} continues the run in {run_dir} with its own options; ignored: '
                      f'{", ".join(ignored)}. To fine-tune from this network with new options instead, copy the '
                      f'network-snapshot file out of its run directory and pass that copy to --resume.', stacklevel=2)


def prepare_training(options, world_size=1, cfg_overrides=None):
    """(cfg, run_dir, continue_from, source) for `options`; opens the dataset and any resume network.

    cfg_overrides: a nested dict merged into a new run's config last (any network or loss argument)."""
    o = options if isinstance(options, TrainOptions) else TrainOptions(**options)
    cont = find_continuation(o.resume)
    if cont is not None:
        run_dir, snap = cont
        warn_ignored_options(o, run_dir)
        cfg = json.loads((run_dir / 'training_options.json').read_text())
        if o.kimg is not None:
            cfg['total_kimg'] = o.kimg  # The one option a continued run honours: train longer (or shorter).
        if cfg['num_gpus'] != world_size:
            raise ConfigError(f'--resume {o.resume}: the run used {cfg["num_gpus"]} processes, this one has {world_size}; '
                              f'per-process batch and data shares would change')
        cfg['device'] = resolve_device(o.device)
        return cfg, run_dir, snap, None
    if o.data is None:
        raise ConfigError('--data is required (a dataset folder or zip made by `pstyle dataset`)')
    info = dataset_info(dict(path=o.data, use_labels=o.cond, max_size=o.subset, xflip=o.mirror, random_seed=o.seed))
    source = resume_kwargs = None
    if o.resume is not None:
        source = load_source(o.resume)
        resume_kwargs = dict(G=source.get('G', source['G_ema']).init_kwargs,
                             D=source['D'].init_kwargs if source.get('D') is not None else None)
    cfg = merge_overrides(setup_training_config(o, info, resume_kwargs, gpus=world_size), cfg_overrides)
    cfg['device'] = resolve_device(o.device)
    desc = f'{info["name"]}-{o.cfg}-gpus{world_size}-batch{cfg["batch_size"]}' + (f'-{o.desc}' if o.desc else '')
    run_dir = distributed.broadcast_object(str(rd.next_run_dir(o.outdir, desc)) if distributed.is_main() else None)
    return cfg, Path(run_dir), None, source


def process_device(cfg, rank):
    if cfg['device'].startswith('cuda') and ':' not in cfg['device']:
        return torch.device('cuda', distributed.local_rank() if distributed.launched_by_torchrun() else rank)
    return torch.device(cfg['device'])


def _run(options, rank, world_size, init_method, max_ticks=None, echo=True, cfg_overrides=None):
    """Body of one process."""
    o = options if isinstance(options, TrainOptions) else TrainOptions(**options)
    device_type = torch.device(resolve_device(o.device)).type
    if world_size > 1:
        device = torch.device('cuda', distributed.local_rank() if distributed.launched_by_torchrun() else rank) \
            if device_type == 'cuda' else torch.device('cpu')
        distributed.init(device, rank=rank, world_size=world_size, init_method=init_method)
        if device_type == 'cpu':
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // world_size))
    try:
        cfg, run_dir, cont, source = prepare_training(o, world_size, cfg_overrides)
        return training_loop(cfg, run_dir, device=process_device(cfg, rank), continue_from=cont, source=source,
                             metrics_fn=metrics_hook(cfg), echo=echo, max_ticks=max_ticks)
    finally:
        distributed.shutdown()


def metrics_hook(cfg):
    """Metrics on snapshots; None when none are asked for."""
    if not cfg.get('metrics'):
        return None
    return make_metrics_fn(cfg)


def _spawned(rank, options, world_size, init_method, max_ticks, echo, cfg_overrides):
    _run(options, rank, world_size, init_method, max_ticks, echo, cfg_overrides)


def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def train(options, max_ticks=None, echo=True, cfg_overrides=None):
    """Run training per `options` (TrainOptions or dict); returns the last snapshot path (rank 0).

    max_ticks: stop (with a snapshot) after this many ticks; cfg_overrides: see `prepare_training`."""
    o = options if isinstance(options, TrainOptions) else TrainOptions(**options)
    if distributed.launched_by_torchrun():
        world = int(os.environ['WORLD_SIZE'])
        return _run(o, int(os.environ['RANK']), world, 'env://', max_ticks, echo, cfg_overrides)
    if o.gpus == 1:
        return _run(o, 0, 1, None, max_ticks, echo, cfg_overrides)
    if resolve_device(o.device).startswith('cuda') and o.gpus > torch.cuda.device_count():
        raise ConfigError(f'--gpus {o.gpus}: only {torch.cuda.device_count()} CUDA devices are visible')
    init_method = f'tcp://127.0.0.1:{_free_port()}'
    torch.multiprocessing.spawn(_spawned, args=(dataclasses.asdict(o), o.gpus, init_method, max_ticks, echo, cfg_overrides),
                                nprocs=o.gpus, join=True)
    cont = find_continuation(o.resume)
    run_dir = cont[0] if cont else sorted(Path(o.outdir).glob('[0-9]*-*'))[-1]
    snap = rd.latest_snapshot(run_dir)
    return snap[0] if snap else None
