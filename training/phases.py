"""One training iteration: the G and D phases with lazy regularization, gradient averaging across
processes, non-finite detection, the G_ema update and the ADA adjustment.

Lazy regularization (StyleGAN2, Section 3.1): the regularizers run every `interval` minibatches
with their loss multiplied by `interval`, and Adam's lr and betas are rescaled by
mb_ratio = interval / (interval + 1) (NVIDIA's `mb_ratio`), since each optimizer then takes
interval + 1 steps in the time the unregularized one takes interval.
"""

import dataclasses

import numpy as np
import torch

from pstyle.torch_utils import distributed
from pstyle.training.loss import PhaseBatch
from pstyle.training.sampler import rank_share


class NonFiniteError(RuntimeError):
    """Training produced NaN/Inf; the message names the phase and the kimg."""


@dataclasses.dataclass
class Phase:
    name:       str         # 'Gmain', 'Greg', 'Gboth', 'Dmain', 'Dreg', 'Dboth'
    module:     str         # 'G' or 'D'
    params:     list        # Trainable parameters (frozen ones excluded).
    opt:        torch.optim.Optimizer
    interval:   int         # Runs when batch_idx % interval == 0.


def make_phases(G_params, D_params, G_opt_kwargs, D_opt_kwargs, G_reg_interval, D_reg_interval):
    """G and D phases with their Adam optimizers; networks with nothing trainable get no phase."""
    phases = []
    for module, params, opt_kwargs, reg_interval in (('G', G_params, G_opt_kwargs, G_reg_interval),
                                                      ('D', D_params, D_opt_kwargs, D_reg_interval)):
        if not params:
            continue
        opt_kwargs = dict(opt_kwargs, betas=[float(b) for b in opt_kwargs['betas']])
        if reg_interval is None:
            opt = torch.optim.Adam(params, **opt_kwargs)
            phases.append(Phase(module + 'both', module, params, opt, 1))
            continue
        mb_ratio = reg_interval / (reg_interval + 1)
        opt_kwargs = dict(opt_kwargs, lr=opt_kwargs['lr'] * mb_ratio, betas=[b ** mb_ratio for b in opt_kwargs['betas']])
        opt = torch.optim.Adam(params, **opt_kwargs)
        phases.append(Phase(module + 'main', module, params, opt, 1))
        phases.append(Phase(module + 'reg', module, params, opt, reg_interval))
    return phases


@dataclasses.dataclass
class DrawSpec:
    """What `draw_batch` needs to know about the networks and the dataset."""
    z_dim: int
    num_ws: int
    img_shape: tuple            # (C, H, W)
    labels: np.ndarray          # float32 [num_items, c_dim] of the training set (c_dim may be 0)
    style_mixing_prob: float
    pl_batch_shrink: int


def draw_batch(gen, spec, phase_name, global_size):
    """Per-sample random inputs of one phase for the whole global batch, from the CPU generator `gen`.

    Every process draws the same numbers and keeps its share, so results do not depend on the split.
    """
    z = torch.randn([global_size, spec.z_dim], generator=gen)
    label_idx = torch.randint(len(spec.labels), [global_size], generator=gen).numpy()
    c = torch.from_numpy(spec.labels[label_idx]).float()
    out = PhaseBatch(gen_z=z, gen_c=c)
    if spec.style_mixing_prob > 0:
        out.mix_z = torch.randn([global_size, spec.z_dim], generator=gen)
        cutoff = torch.randint(1, spec.num_ws, [global_size], generator=gen) if spec.num_ws > 1 \
            else torch.ones([global_size], dtype=torch.int64)
        mixed = torch.rand([global_size], generator=gen) < spec.style_mixing_prob
        out.mix_cutoff = torch.where(mixed, cutoff, torch.full_like(cutoff, spec.num_ws))
    if phase_name in ('Greg', 'Gboth'):
        out.pl_noise = torch.randn([global_size, *spec.img_shape], generator=gen)
    return out


def phase_global_size(phase_name, batch_size, world_size, pl_batch_shrink):
    """Samples of a phase over all processes: the path-length phase runs on batch / pl_batch_shrink."""
    if phase_name != 'Greg':
        return batch_size
    size = max(batch_size // pl_batch_shrink, world_size)
    return size - size % world_size


def to_device(batch, device):
    return PhaseBatch(**{f.name: (None if getattr(batch, f.name) is None else getattr(batch, f.name).to(device, non_blocking=True))
                         for f in dataclasses.fields(batch)})


def share_of(batch, rank, world_size):
    return PhaseBatch(**{f.name: (None if getattr(batch, f.name) is None else rank_share(getattr(batch, f.name), rank, world_size))
                         for f in dataclasses.fields(batch)})


def rounds(batch, batch_gpu):
    """Split this process's share into accumulation rounds of at most batch_gpu samples."""
    n = batch.gen_z.shape[0]
    bounds = list(range(0, n, batch_gpu)) + [n]
    return [(batch.slice(a, b), (b - a) / n) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]


def sync_and_check(phase, kimg):
    """Average gradients over processes; raise NonFiniteError on NaN/Inf anywhere."""
    grads = [p.grad for p in phase.params if p.grad is not None]
    if not grads:
        return
    if distributed.get_world_size() > 1:
        flat = torch.cat([g.flatten() for g in grads])
        distributed.all_reduce_mean(flat)
        for g, part in zip(grads, flat.split([g.numel() for g in grads])):
            g.copy_(part.reshape(g.shape))
        finite = torch.isfinite(flat).all()
    else:
        finite = torch.isfinite(torch.stack(torch._foreach_norm(grads))).all()
    if not bool(finite):
        bad = sum(1 for g in grads if not torch.isfinite(g).all())
        raise NonFiniteError(f'non-finite gradients in phase {phase.name} at kimg {kimg:.3f} '
                             f'({bad} of {len(grads)} {phase.module} tensors): the run diverged; '
                             f'the last snapshot before this point is intact')


def run_phase(phase, loss, batch, batch_gpu, kimg):
    """zero_grad, forward/backward over the rounds of `batch`, sync, check, Adam step."""
    for p in phase.params:
        p.requires_grad_(True)
    phase.opt.zero_grad(set_to_none=True)
    for part, fraction in rounds(batch, batch_gpu):
        # Gradients are the mean over the whole batch whatever batch_gpu is; lazy reg scales by interval.
        loss.accumulate_gradients(phase.name, part, gain=phase.interval * fraction)
    for p in phase.params:
        p.requires_grad_(False)
    sync_and_check(phase, kimg)
    phase.opt.step()


@torch.no_grad()
def update_ema(G_ema_params, G_params, G_ema_buffers, G_buffers, cur_nimg, batch_size, ema_kimg, ema_rampup):
    """G_ema = beta * G_ema + (1 - beta) * G, half-life ema_kimg (ramped up early in training)."""
    ema_nimg = ema_kimg * 1000
    if ema_rampup is not None:
        ema_nimg = min(ema_nimg, cur_nimg * ema_rampup)
    ema_beta = 0.5 ** (batch_size / max(ema_nimg, 1e-8))
    if G_ema_params:
        torch._foreach_lerp_(G_ema_params, G_params, 1 - ema_beta)
    for b_ema, b in zip(G_ema_buffers, G_buffers):
        b_ema.copy_(b)
    return ema_beta


def ada_step(ada, loss, augment_pipe):
    """Feed this iteration's global D(real) signs to the ADA heuristic; copy p into the pipeline."""
    n_pos, n_neg, n_all = [int(v) for v in distributed.all_reduce_sum(loss.pop_ada_signs()).tolist()]
    signs = torch.cat([torch.ones(n_pos), -torch.ones(n_neg), torch.zeros(n_all - n_pos - n_neg)])
    ada.step(signs)
    ada.apply(augment_pipe)
    loss.augment_p = ada.p
