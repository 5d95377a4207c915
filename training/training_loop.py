"""The StyleGAN2 training loop: iterate, and at every tick log, snapshot, render grids and measure.

The pieces live elsewhere: the configuration in `train_config.py`, the state and one iteration in
`trainer.py` and `phases.py`, the objective in `loss.py`, files in `run_dir.py`, and process
start-up in `launch.py`. Snapshots happen only at tick ends, after a whole iteration, and the work
done there never touches the training RNGs, so a run resumed from a snapshot continues exactly.
"""

import contextlib
import resource
import sys
import time

import numpy as np
import torch

from pstyle.torch_utils import distributed
from pstyle.training import run_dir as rd
from pstyle.datasets.dataset import ImageFolderDataset
from pstyle.training.phases import NonFiniteError
from pstyle.training.sampler import real_batches
from pstyle.training.trainer import Trainer, rng_state, set_rng_state


def setup_backend(cfg, device):
    """TF32 off unless asked (reproducible fp32 numerics); cudnn autotuning on CUDA."""
    if device.type == 'cuda':
        torch.backends.cudnn.benchmark = cfg['cudnn_benchmark']
        torch.backends.cuda.matmul.allow_tf32 = cfg['allow_tf32']
        torch.backends.cudnn.allow_tf32 = cfg['allow_tf32']


def open_dataset(cfg):
    return ImageFolderDataset(**cfg['training_set_kwargs'])


@contextlib.contextmanager
def preserved_rng(trainer):
    """Tick-end work (grids, metrics) must not shift the random streams of training."""
    saved, gen = rng_state(), trainer.gen.get_state()
    try:
        yield
    finally:
        set_rng_state(saved)
        trainer.gen.set_state(gen)


def dataset_labels(dataset):
    """float32 [N, c_dim] of every item (for drawing G's conditioning labels)."""
    return np.stack([dataset.get_label(i) for i in range(len(dataset))]).astype(np.float32).reshape(len(dataset), -1)


def make_grid_inputs(trainer, dataset, cfg):
    """(grid size, real images uint8, z, c) for the image grids: fixed for the whole run."""
    grid = rd.grid_size(trainer.G.img_resolution, cfg['grid'])
    n = grid[0] * grid[1]
    idx = np.random.RandomState(cfg['random_seed']).randint(len(dataset), size=n)
    reals = np.stack([dataset[i][0] for i in idx])
    c = torch.from_numpy(np.stack([dataset.get_label(i) for i in idx])).float().reshape(n, -1)
    z = torch.from_numpy(np.stack([np.random.RandomState(k).randn(trainer.G.z_dim) for k in range(n)])).float()
    return grid, reals, z, c  # Image k of the fakes grids is seed k of `pstyle generate`.


@torch.no_grad()
def render_fakes(G_ema, z, c, batch, device):
    imgs = [G_ema(zb.to(device), cb.to(device), noise_mode='const').cpu() for zb, cb in zip(z.split(batch), c.split(batch))]
    return rd.to_uint8(torch.cat(imgs))


def memory_line(device):
    cpu_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (2 ** 20 if sys.platform != 'darwin' else 2 ** 30)
    gpu_gb = torch.cuda.max_memory_allocated(device) / 2 ** 30 if device.type == 'cuda' else 0.0
    return cpu_gb, gpu_gb


def progress_line(trainer, stats, tick_time, tick_kimg, total_kimg, device):
    """NVIDIA-style one-line summary of the tick."""
    sec_per_kimg = tick_time / max(tick_kimg, 1e-8)
    eta = sec_per_kimg * max(total_kimg - trainer.kimg, 0)
    cpu_gb, gpu_gb = memory_line(device)
    mean = lambda k: stats[k]['mean'] if k in stats else float('nan')
    p = trainer.ada.p if trainer.ada is not None else 0.0
    fields = [f'tick {trainer.cur_tick:<5d}', f'kimg {trainer.kimg:<8.3f}', f'time {fmt_time(trainer.elapsed):<12s}',
              f'sec/tick {tick_time:<7.1f}', f'sec/kimg {sec_per_kimg:<7.2f}', f'ETA {fmt_time(eta):<12s}',
              f'loss/G {mean("Loss/G/loss"):<7.3f}', f'loss/D {mean("Loss/D/loss"):<7.3f}',
              f'augment {p:<6.3f}', f'cpumem {cpu_gb:<5.2f}', f'gpumem {gpu_gb:<5.2f}']
    extra = {'Progress/tick': trainer.cur_tick, 'Progress/kimg': trainer.kimg, 'Progress/augment': p,
             'Timing/sec_per_tick': tick_time, 'Timing/sec_per_kimg': sec_per_kimg, 'Timing/total_sec': trainer.elapsed,
             'Resources/peak_cpu_mem_gb': cpu_gb, 'Resources/peak_gpu_mem_gb': gpu_gb}
    return '  '.join(fields), extra


def fmt_time(seconds):
    s = int(seconds)
    return f'{s // 86400}d {s % 86400 // 3600:02d}h' if s >= 86400 else (
        f'{s // 3600}h {s % 3600 // 60:02d}m' if s >= 3600 else f'{s // 60}m {s % 60:02d}s')


def end_of_tick(trainer, run, cfg, grid_inputs, tick_time, tick_kimg, done, metrics_fn):
    """Stats and progress line; snapshot, fakes grid and metrics when due. Returns the snapshot path."""
    stats = trainer.stats.collect()
    line, extra = progress_line(trainer, stats, tick_time, tick_kimg, cfg['total_kimg'], trainer.device)
    run.log(line)
    run.stats({**stats, **extra}, trainer.cur_nimg)
    snapshot = None
    with preserved_rng(trainer):
        if done or trainer.cur_tick % cfg['image_snapshot_ticks'] == 0:
            grid, _, z, c = grid_inputs
            fakes = render_fakes(trainer.G_ema, z, c, cfg['batch_gpu'], trainer.device)
            if distributed.is_main():
                rd.save_image_grid(fakes, run.run_dir / f'fakes{rd.snapshot_tag(trainer.cur_nimg)}.png', grid)
        if done or trainer.cur_tick % cfg['network_snapshot_ticks'] == 0:
            state = trainer.state_dict()  # Collective: every rank takes part.
            if distributed.is_main():
                snapshot = rd.save_snapshot(run.run_dir, trainer.cur_nimg, trainer.networks(), state)
            if metrics_fn is not None:
                write_metrics(trainer, run, metrics_fn, snapshot)
    distributed.barrier()
    return snapshot


def write_metrics(trainer, run, metrics_fn, snapshot, only=None):
    """Measure G_ema (every rank takes part) and log the results of the names in `only` (default all)."""
    for name, result in metrics_fn(trainer.G_ema, trainer.kimg).items():
        if only is None or name in only:
            run.log(f'metric {name}: {result}')
            run.metric(name, dict(result, kimg=trainer.kimg, snapshot=str(snapshot)))


def resume_snapshot(trainer, run, cfg, continue_from, metrics_fn):
    """Continue from a snapshot: load it (a mismatched pair is refused), clear what a crash left in the
    run directory, and measure the snapshot when a crash came between its save and its metric lines."""
    trainer.load_state_dict(*rd.load_snapshot(*continue_from))
    missing = None
    if distributed.is_main():
        removed = rd.repair_run_dir(run.run_dir, trainer.kimg)
        if removed:
            run.log(f'Removed the temporary files of interrupted writes: {", ".join(removed)}')
        missing = [n for n in cfg.get('metrics') or () if not any(
            e.get('kimg') == trainer.kimg for e in rd.read_jsonl_if_any(run.run_dir / f'metric-{n}.jsonl'))]
    run.log(f'Resumed from {continue_from[0]} at kimg {trainer.kimg:.3f} (tick {trainer.cur_tick})')
    missing = distributed.broadcast_object(missing)
    if metrics_fn is not None and missing:
        with preserved_rng(trainer):
            write_metrics(trainer, run, metrics_fn, continue_from[0], only=missing)


def training_loop(cfg, run_dir, device=None, continue_from=None, source=None, metrics_fn=None, echo=True, max_ticks=None):
    """Train per `cfg` into `run_dir` (all processes call this). Returns the last snapshot's path.

    continue_from: (network path, state path) of a snapshot to continue exactly; source: networks
    for transfer learning (load_network output); max_ticks: stop early after this many ticks (tests).
    """
    device = torch.device(device or cfg['device'])
    setup_backend(cfg, device)
    torch.manual_seed(cfg['random_seed'] * distributed.get_world_size() + distributed.get_rank())
    np.random.seed((cfg['random_seed'] * distributed.get_world_size() + distributed.get_rank()) % 2 ** 32)
    run = rd.RunLog(run_dir, enabled=distributed.is_main(), echo=echo)
    dataset = open_dataset(cfg)
    trainer = Trainer(cfg, device, dataset_labels(dataset), source=source, log=run.log)
    grid_inputs = make_grid_inputs(trainer, dataset, cfg)
    if continue_from is not None:
        resume_snapshot(trainer, run, cfg, continue_from, metrics_fn)
    elif distributed.is_main():
        rd.write_json(run.run_dir / 'training_options.json', cfg)
        rd.save_image_grid(grid_inputs[1], run.run_dir / 'reals.png', grid_inputs[0])
        with preserved_rng(trainer):
            fakes = render_fakes(trainer.G_ema, grid_inputs[2], grid_inputs[3], cfg['batch_gpu'], device)
        rd.save_image_grid(fakes, run.run_dir / 'fakes_init.png', grid_inputs[0])
    if trainer.cur_nimg >= cfg['total_kimg'] * 1000:
        run.log(f'The run already reached {cfg["total_kimg"]} kimg; nothing to do (pass --kimg to train longer).')
        run.close()
        return continue_from[0] if continue_from else None
    batches = real_batches(dataset, cfg['batch_size'], cfg['random_seed'], distributed.get_rank(),
                           distributed.get_world_size(), trainer.batch_idx, cfg['num_workers'], device)
    run.log(f'Training for {cfg["total_kimg"]} kimg on {distributed.get_world_size()} process(es), device {device}...')
    snapshot, ticks = None, 0
    tick_start, tick_start_nimg = time.time(), trainer.cur_nimg
    try:
        while True:
            images, labels = next(batches)
            trainer.step(images, labels)
            done = trainer.cur_nimg >= cfg['total_kimg'] * 1000
            if not done and trainer.cur_nimg < trainer.tick_start_nimg + cfg['kimg_per_tick'] * 1000:
                continue
            tick_time = time.time() - tick_start
            trainer.elapsed += tick_time
            trainer.cur_tick += 1
            tick_kimg = (trainer.cur_nimg - tick_start_nimg) / 1000
            trainer.tick_start_nimg = trainer.cur_nimg
            ticks += 1
            done = done or (max_ticks is not None and ticks >= max_ticks)
            snapshot = end_of_tick(trainer, run, cfg, grid_inputs, tick_time, tick_kimg, done, metrics_fn) or snapshot
            tick_start, tick_start_nimg = time.time(), trainer.cur_nimg
            if done:
                break
    except NonFiniteError as e:
        run.log(f'Stopped: {e}')
        raise
    finally:
        run.close()
    run.log('Exiting...')
    return snapshot
