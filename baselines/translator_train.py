"""The run directory, exact resume and data parallelism that `pstyle cyclegan-train` and `pstyle distill` share.

Layout of `outdir` (rank 0 writes it):

    config.json            every option of the run (a resume must match it; see `RESUMABLE`)
    log.jsonl              one line per logged iteration: losses, learning rate, validation, seconds
    snapshot-NNNNNNN.pt    the whole training state (atomic; tensors and plain types only): every network,
                           optimizer and learning-rate scheduler, the image pools, the RNG states, the iteration
    <published files>      the trainer's networks as plain state_dicts (`latest_net_G_A.pth`, `net_G.pth`, ...)

Exact resume: every random draw of iteration i (data order, crops, flips, latents, pool choices) comes from a
generator seeded with (seed, stream, i) or (seed, stream, sample) alone, and everything that carries over
between iterations is in the snapshot, so a run stopped after any snapshot (or killed) and run again on the
same `outdir` ends with bitwise the networks of a run that never stopped (same machine and thread count).
Under torchrun each rank computes its share of every batch; gradients are summed over ranks and the losses
are per-sample sums divided by the global batch, so N ranks compute what one process computes (up to rounding).
"""

import dataclasses
import json
import random
import re
import time
from pathlib import Path

import numpy as np
import torch

from pstyle.torch_utils import distributed
from pstyle.torch_utils.fileio import atomic_path, atomic_torch_save, jsonable

SNAPSHOT_VERSION = 1
KEEP_SNAPSHOTS = 2                    # older snapshots are deleted once a newer one is complete
RESUMABLE = ('iters', 'decay_iters', 'snapshot_every', 'log_every')  # options a resume may change
_SNAPSHOT_RE = re.compile(r'snapshot-(\d{7})\.pt')


def stream_generator(seed, *stream):
    """A torch.Generator seeded from (seed, *stream) (numpy's SeedSequence mixes the words)."""
    words = [int(seed) & 0xFFFFFFFF, *(int(s) for s in stream)]
    return torch.Generator().manual_seed(int(np.random.SeedSequence(words).generate_state(2, np.uint64)[0] >> 1))


def linear_decay(iters, decay_iters):
    """The reference's `lambda_rule` in iterations: factor 1 for the first iters - decay_iters iterations,
    then linearly down to 1 / (decay_iters + 1) at the last one."""
    constant = iters - decay_iters
    return lambda it: 1.0 - max(0, it - constant + 1) / float(decay_iters + 1)


def adam(params, lr):
    return torch.optim.Adam(params, lr=lr, betas=(0.5, 0.999))  # CycleGAN / pix2pix: beta1 0.5


# ----------------------------------------------------------------------------
# Data parallelism.

def my_share(batch):
    """This rank's positions [start, stop) in a batch of `batch` samples."""
    world, rank = distributed.get_world_size(), distributed.get_rank()
    if batch % world:
        raise ValueError(f'batch {batch} is not divisible by the {world} processes')
    per = batch // world
    return rank * per, (rank + 1) * per


def gather_batch(x):
    """[n, ...] of every rank -> [world * n, ...] in rank order, on every rank (not differentiable)."""
    if distributed.get_world_size() == 1:
        return x
    parts = [torch.empty_like(x) for _ in range(distributed.get_world_size())]
    torch.distributed.all_gather(parts, x.contiguous())
    return torch.cat(parts)


def sum_gradients(*nets):
    """All-reduce the gradients of `nets` (one flat buffer) so every rank holds the sum over ranks."""
    if distributed.get_world_size() == 1:
        return
    grads = [p.grad for net in nets for p in net.parameters() if p.grad is not None]
    flat = distributed.all_reduce_sum(torch.cat([g.flatten() for g in grads]))
    for g, part in zip(grads, flat.split([g.numel() for g in grads])):
        g.copy_(part.view_as(g))


# ----------------------------------------------------------------------------
# The state of a run.

class TranslatorTrainer:
    """What the loop needs from a trainer: `nets`, `optimizers`, `schedulers`, `pools` (dicts by name, all saved
    in snapshots), `step(iteration) -> {loss: float}` (one optimizer step of every optimizer), `validate() ->
    {name: float}` (rank 0, may be empty) and `publish(run_dir, iteration) -> [paths]` (the networks as files)."""

    nets, optimizers, schedulers, pools = {}, {}, {}, {}

    def step(self, iteration):
        raise NotImplementedError

    def validate(self):
        return {}

    def publish(self, run_dir, iteration):
        raise NotImplementedError


def rng_state():
    """torch, numpy and Python's global RNG states as tensors and plain types (loadable with weights_only)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return dict(torch=torch.get_rng_state(), numpy=dict(kind=kind, keys=torch.from_numpy(keys.astype(np.int64)), pos=pos,
                                                        has_gauss=has_gauss, gauss=gauss),
                python=random.getstate())


def set_rng_state(state):
    torch.set_rng_state(state['torch'])
    n = state['numpy']
    np.random.set_state((n['kind'], n['keys'].numpy().astype(np.uint32), n['pos'], n['has_gauss'], n['gauss']))
    version, internal, gauss = state['python']
    random.setstate((version, tuple(internal), gauss))


def training_state(trainer, iteration, kind):
    return dict(format=kind, version=SNAPSHOT_VERSION, iteration=iteration,
                nets={k: v.state_dict() for k, v in trainer.nets.items()},
                optimizers={k: v.state_dict() for k, v in trainer.optimizers.items()},
                schedulers={k: v.state_dict() for k, v in trainer.schedulers.items()},
                pools={k: v.state_dict() for k, v in trainer.pools.items()}, rng=rng_state())


def restore(trainer, state, device):
    for group in ('nets', 'optimizers', 'schedulers'):
        missing = set(getattr(trainer, group)) ^ set(state[group])
        if missing:
            raise ValueError(f'the snapshot does not hold the {group} this run trains ({", ".join(sorted(missing))})')
    for name, net in trainer.nets.items():
        net.load_state_dict(state['nets'][name])
    for name, opt in trainer.optimizers.items():
        opt.load_state_dict(state['optimizers'][name])
    for name, sched in trainer.schedulers.items():
        sched.load_state_dict(state['schedulers'][name])
    for name, pool in trainer.pools.items():
        pool.load_state_dict(state['pools'][name], device)
    set_rng_state(state['rng'])
    return int(state['iteration'])


def latest_snapshot(run_dir):
    found = sorted(int(m.group(1)) for p in Path(run_dir).glob('snapshot-*.pt') if (m := _SNAPSHOT_RE.fullmatch(p.name)))
    return (Path(run_dir) / f'snapshot-{found[-1]:07d}.pt') if found else None


def load_snapshot(path, kind):
    state = torch.load(path, map_location='cpu', weights_only=True)
    if not isinstance(state, dict) or state.get('format') != kind:
        raise ValueError(f'{path}: not a {kind} snapshot (format {state.get("format") if isinstance(state, dict) else None!r})')
    return state


def save_snapshot(run_dir, trainer, iteration, kind):
    path = run_dir / f'snapshot-{iteration:07d}.pt'
    atomic_torch_save(training_state(trainer, iteration, kind), path)
    older = sorted(p for p in run_dir.glob('snapshot-*.pt') if _SNAPSHOT_RE.fullmatch(p.name) and p != path)
    for stale in older[:max(0, len(older) - KEEP_SNAPSHOTS + 1)]:
        stale.unlink()
    return path


# ----------------------------------------------------------------------------
# The run directory and the loop.

def check_resume(run_dir, config, resumable=RESUMABLE):
    """Refuse a resume whose options (a dict) differ from the stored `config.json` in anything but `resumable`
    (also used by `adain_train`)."""
    stored = json.loads((run_dir / 'config.json').read_text())
    changed = [k for k in config if k not in resumable and stored.get(k) != config[k]]
    if changed:
        diffs = ', '.join(f'{k}: {stored.get(k)!r} -> {config[k]!r}' for k in changed)
        raise ValueError(f'{run_dir} was started with other options ({diffs}); use a new --outdir or the same options '
                         f'(only {", ".join("--" + k.replace("_", "-") for k in resumable)} may change)')


def write_text(path, text):
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text)


def truncate_log(run_dir, iteration):
    """Drop log lines written after the snapshot a resume starts from (a crash between the two)."""
    log = run_dir / 'log.jsonl'
    if log.is_file():
        lines = [ln for ln in log.read_text().splitlines() if ln and json.loads(ln)['iteration'] <= iteration]
        write_text(log, ''.join(ln + '\n' for ln in lines))


def prepare_run_dir(outdir, config, trainer, kind, device, log):
    """Create `outdir` or resume from its newest snapshot; returns the first iteration to run."""
    run_dir, main = Path(outdir), distributed.is_main()
    snapshot = latest_snapshot(run_dir) if (run_dir / 'config.json').is_file() else None
    start = 0
    if snapshot is not None:
        check_resume(run_dir, config)
        start = restore(trainer, load_snapshot(snapshot, kind), device)
        if main:
            truncate_log(run_dir, start)
            log(f'resuming {run_dir} from iteration {start} ({snapshot.name})')
    elif main:
        truncate_log(run_dir, 0)                             # a run stopped before its first snapshot starts over
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_text(run_dir / 'config.json', json.dumps(config, indent=1) + '\n')
    distributed.barrier()
    return start


def train_loop(trainer, cfg, outdir, kind, device, log=print, fault_hook=None):
    """Run (or resume) iterations [start, cfg.iters) of `trainer` in `outdir`; returns (iteration, start, paths).

    cfg needs `iters`, `snapshot_every`, `log_every`; fault_hook(iteration) runs after each iteration (tests
    raise from it to simulate a crash)."""
    run_dir, main = Path(outdir), distributed.is_main()
    config = json.loads(json.dumps(jsonable(dataclasses.asdict(cfg))))      # as config.json will hold it
    start = prepare_run_dir(run_dir, config, trainer, kind, device, log)
    t0, paths = time.perf_counter(), []
    for it in range(start, cfg.iters):
        losses = trainer.step(it)
        done = it + 1
        if done % cfg.log_every == 0 or done == cfg.iters:
            losses = {k: float(distributed.all_reduce_sum(torch.tensor(v, dtype=torch.float64))) for k, v in losses.items()}
            if main:
                _log_line(run_dir, trainer, done, losses, time.perf_counter() - t0, log)
        if (done % cfg.snapshot_every == 0 or done == cfg.iters) and main:
            save_snapshot(run_dir, trainer, done, kind)
            paths = trainer.publish(run_dir, done)
        if fault_hook is not None:
            fault_hook(done)
    if start >= cfg.iters and main:
        paths = trainer.publish(run_dir, start)
    distributed.barrier()
    return max(start, cfg.iters), start, paths


def _log_line(run_dir, trainer, done, losses, seconds, log):
    entry = dict(iteration=done, **losses, lr=next(iter(trainer.optimizers.values())).param_groups[0]['lr'])
    entry.update(trainer.validate())
    entry['seconds'] = seconds
    with open(run_dir / 'log.jsonl', 'a') as f:
        f.write(json.dumps(entry) + '\n')
    log(f'iteration {done}: ' + ', '.join(f'{k} {v:.4f}' for k, v in entry.items() if k not in ('iteration', 'seconds')))
