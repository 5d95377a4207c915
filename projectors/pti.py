"""Pivotal tuning (Roich et al. 2022, "Pivotal Tuning for Latent-based Editing of Real Images").

After the latent phase has found a pivot w for an image, the generator's weights are fine-tuned so
that G(w_pivot) reproduces the image (LPIPS + L2, Eq. 2), while the locality regulariser (Section
3.3, Eq. 4) keeps G unchanged around the pivot: latents w_r on the way from the pivot towards random
w_z are rendered by the tuned and the original G, and their outputs are kept close (L2 + LPIPS).
Defaults are the paper's code (`configs/hyperparameters.py`): lr 3e-4, 350 steps, alpha 30, lambdas
0.1/0.1, one ball sample per step. Written for this project.

The tuned generator is stored as a compact delta `{param name: tuned - original}` over the tensors
that changed (optionally in fp16/bf16), tagged with the base network's weights sha256, so a folder
of N faces costs N small files rather than N generator copies.
"""

import copy
import dataclasses
import time

import numpy as np
import torch
from pstyle.models import deltas as D
from pstyle.models import render as R
from pstyle.models import wplus
from pstyle.projectors import projector as P
from pstyle.torch_utils import misc
from pstyle.torch_utils.errors import check_finite

RANK_MODES = ('tune', 'svd')


@dataclasses.dataclass
class PTIConfig:
    num_steps:                          int = 350       # max_pti_steps
    learning_rate:                      float = 3e-4    # pti_learning_rate
    lpips_weight:                       float = 1.0     # pt_lpips_lambda
    l2_weight:                          float = 1.0     # pt_l2_lambda
    use_locality_regularization:        bool = True     # Section 3.3
    locality_regularization_interval:   int = 1         # Apply the regulariser every this many steps.
    regularizer_alpha:                  float = 30.0    # Distance from the pivot towards w_z.
    regularizer_l2_weight:              float = 0.1     # regulizer_l2_lambda
    regularizer_lpips_weight:           float = 0.1     # regulizer_lpips_lambda
    regularizer_truncation_psi:         float = 0.5     # w_z = mapping(z, psi=0.5)
    latent_ball_num_of_samples:         int = 1         # w_z samples per regularised step
    early_stop_lpips:                   float = None    # LPIPS_value_threshold (0.06 with LPIPS-Alex in PTI)
    trainable:                          tuple = ('synthesis.*',)  # W+ row specs or globs of G's parameter names.
    lpips_resolution:                   int = 256
    precision:                          str = 'fp32'
    seed:                               int = 0
    delta_dtype:                        str = 'fp32'    # Storage of the weight delta: fp32, fp16 or bf16.
    rank:                               int = 0         # Rank-R weight deltas (per weight as [out, in*k*k]); 0 = full.
    rank_mode:                          str = 'tune'    # 'tune': tune W0 + U V directly; 'svd': tune fully, store a truncated SVD.
    factor_lr_scale:                    float = 4.0     # Learning rate of U and V relative to full tensors ('tune').

    def check(self):
        if int(self.num_steps) != self.num_steps or self.num_steps < 1:
            raise ValueError(f'PTI num_steps must be a positive integer, got {self.num_steps}')
        if self.learning_rate <= 0:
            raise ValueError(f'PTI learning_rate must be > 0, got {self.learning_rate}')
        if self.locality_regularization_interval < 1 or self.latent_ball_num_of_samples < 1:
            raise ValueError('locality_regularization_interval and latent_ball_num_of_samples must be >= 1')
        if self.delta_dtype not in D.DELTA_DTYPES:
            raise ValueError(f'delta_dtype must be one of {", ".join(D.DELTA_DTYPES)}, got {self.delta_dtype!r}')
        if self.precision not in P.PRECISIONS:
            raise ValueError(f'precision must be one of {P.PRECISIONS}, got {self.precision!r}')
        if int(self.rank) != self.rank or self.rank < 0:
            raise ValueError(f'PTI rank must be an integer >= 0 (0 = full deltas), got {self.rank}')
        if self.rank_mode not in RANK_MODES:
            raise ValueError(f'PTI rank_mode must be one of {", ".join(RANK_MODES)}, got {self.rank_mode!r}')
        if self.factor_lr_scale <= 0:
            raise ValueError(f'PTI factor_lr_scale must be > 0, got {self.factor_lr_scale}')
        if isinstance(self.trainable, str):
            self.trainable = tuple(p.strip() for p in self.trainable.split(',') if p.strip())
        if not self.trainable:
            raise ValueError('trainable: give at least one W+ row spec or parameter-name pattern, e.g. "synthesis.*"')
        return self

    def as_dict(self):
        d = dataclasses.asdict(self)
        d['trainable'] = list(self.trainable)
        return d


def pti_config(**overrides):
    """PTIConfig with field overrides (None values are ignored); unknown names raise."""
    fields = {f.name for f in dataclasses.fields(PTIConfig)}
    unknown = sorted(k for k in overrides if k not in fields)
    if unknown:
        raise ValueError(f'unknown PTI settings: {", ".join(unknown)} (known: {", ".join(sorted(fields))})')
    return PTIConfig(**{k: v for k, v in overrides.items() if v is not None}).check()


def following_projection(preset, project_cfg, settings):
    """PTIConfig for a projection with `project_cfg`, from a preset dict (or None) and explicit settings.

    PTI shares the projection's precision, seed and LPIPS resolution, and uses LPIPS exactly when the
    projection does: `lpips_weight=0` (offline, no VGG weights) turns LPIPS off in both, in every command.
    """
    kwargs = dict(preset or {}, precision=project_cfg.precision, seed=project_cfg.seed,
                  lpips_resolution=project_cfg.lpips_resolution)
    if project_cfg.lpips_weight == 0:
        kwargs.update(lpips_weight=0.0, regularizer_lpips_weight=0.0)
    return pti_config(**dict(kwargs, **{k: v for k, v in settings.items() if v is not None}))


def trainable_names(G, patterns):
    """Parameter names of G selected by W+ row specs ('fine', 'res:64-256', 'b32', '7-12': the tensors the
    rows own, `wplus.select_params`) or glob patterns of names ('synthesis.*'); an error when none is."""
    names = wplus.select_params(G, patterns)
    if not names:
        raise ValueError(f'no generator parameter matches {list(patterns)} (names look like '
                         f'"synthesis.b64.conv0.weight", "mapping.fc0.weight")')
    return names


def morphed_ws(G_orig, pivot, cfg, generator):
    """Locality samples (Eq. 4): w_r = pivot + alpha * (w_z - pivot) / ||w_z - pivot||, [B, num_ws, w_dim]."""
    device = pivot.device
    z = torch.randn([cfg.latent_ball_num_of_samples, G_orig.z_dim], generator=generator).to(device)
    with torch.no_grad(), torch.autocast(device.type, enabled=False):  # Latents in fp32 under bf16/fp16 tuning.
        w_z = G_orig.mapping(z, None, truncation_psi=cfg.regularizer_truncation_psi, update_emas=False)
    direction = w_z - pivot  # [B, num_ws, w_dim]
    norm = direction.flatten(1).norm(dim=1).reshape(-1, 1, 1)
    return pivot + cfg.regularizer_alpha * direction / norm


def tune(G, target, ws, noise=None, cfg=None, lpips_model=None, callback=None, progress=None):
    """Fine-tune a copy of G on one image around its pivot. Returns (G_tuned, info dict).
    progress: a `torch_utils.progress.Progress`, updated each step with the loss.

    target: uint8 [1, C, H, W] (or [C, H, W]); ws: pivot [1, num_ws, w_dim]; noise: the image's
    maps {layer: [1, 1, r, r]} from the latent phase, or None for G's constant noise.
    """
    cfg = (cfg or PTIConfig()).check()
    device = misc.device_of(G)
    target = torch.as_tensor(target)
    target = P.targets_to_float(target[None] if target.ndim == 3 else target, G, device)
    if target.shape[0] != 1:
        raise ValueError(f'PTI tunes one image at a time, got {target.shape[0]}')
    pivot = torch.as_tensor(ws, dtype=torch.float32).to(device).reshape(1, G.num_ws, G.w_dim)
    noise = {k: v.to(device) for k, v in noise.items()} if noise else None
    dtype = P.synthesis_dtype(cfg.precision, device)
    if lpips_model is None and (cfg.lpips_weight > 0 or cfg.regularizer_lpips_weight > 0):
        lpips_model = P.default_lpips(device)

    G_orig = G
    names = trainable_names(G, cfg.trainable)
    if cfg.rank and cfg.rank_mode == 'tune':
        tunable = low_rank_tunable(G, names, cfg)
        tuned = tunable.parameters()
        opt = torch.optim.Adam(tunable.param_groups(cfg.learning_rate, cfg.factor_lr_scale))
        synthesis = lambda w, **kwargs: D.synthesize(G, tunable.synthesis_params(), w, **kwargs)
    else:
        tunable = None
        G_tuned = copy.deepcopy(G).eval().requires_grad_(False)
        params = dict(G_tuned.named_parameters())
        tuned = [params[n].requires_grad_(True) for n in names]
        opt = torch.optim.Adam(tuned, lr=cfg.learning_rate)
        synthesis = lambda w, **kwargs: G_tuned.synthesis(w, fused_modconv=False, **kwargs)
    lpips_target = P.LPIPSDistance(lpips_model, target, cfg.lpips_resolution) if lpips_model is not None else None
    generator = torch.Generator().manual_seed(int(cfg.seed))
    history, steps = [], cfg.num_steps
    for step in range(cfg.num_steps):
        with P._autocast(device, cfg.precision):
            synth = synthesis(pivot, noise_mode='const', dtype=dtype, noise_inputs=R.noise_inputs(noise))
            l2 = (synth.float() - target).square().mean()
            lp = lpips_target(synth)[0] if lpips_target is not None else torch.zeros([], device=device)
            loss = cfg.l2_weight * l2 + cfg.lpips_weight * lp
            if cfg.use_locality_regularization and step % cfg.locality_regularization_interval == 0:
                loss = loss + locality_loss(G_orig, synthesis, pivot, cfg, lpips_model, generator, dtype)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        history.append(dict(loss=float(loss.detach()), l2=float(l2.detach()), lpips=float(lp.detach())))
        if progress is not None:
            progress.update(loss=history[-1]['loss'])
        if callback is not None:
            callback(step, synth.detach())
        if cfg.early_stop_lpips is not None and lpips_target is not None and float(lp.detach()) < cfg.early_stop_lpips:
            steps = step + 1
            break
    check_finite('pivotal tuning', history[-1]['loss'], *tuned)  # A diverged tuning is a failure, never a result.
    info = dict(steps=steps, trainable=names, history=history)
    if tunable is not None:  # The factors are the result: G_tuned is what they give back.
        info['delta'] = tunable.delta()
        G_tuned = D.apply_delta(copy.deepcopy(G).eval(), info['delta'])
    return G_tuned.requires_grad_(False), info


def low_rank_tunable(G, names, cfg):
    """`models.deltas.DeltaParams` over the tensors PTI tunes (synthesis only: W0 + U V replaces them in
    `functional_call` of G.synthesis), U zero so that tuning starts at G exactly."""
    outside = [n for n in names if not n.startswith('synthesis.')]
    if outside:
        raise ValueError(f'low-rank PTI tunes synthesis parameters only, but trainable selects {", ".join(outside[:3])}: '
                         f'use rank 0, rank_mode "svd", or trainable patterns inside synthesis')
    return D.DeltaParams(G, names, cfg.rank, cfg.seed)


def tune_and_save(G, target, ws, noise, cfg, lpips_model, path, base_sha256, meta=None, progress=None):
    """`tune` one image, then write its delta to `path` (see `models.deltas.save_delta`).

    Returns (G_tuned, dict(steps, seconds, delta_bytes)); `base_sha256` is `models.deltas.weights_sha256(G)`.
    """
    start = time.time()
    G_tuned, info = tune(G, target, ws, noise, cfg, lpips_model, progress=progress)
    if 'delta' in info:  # Tuned as factors.
        delta = info['delta']
    else:
        delta = D.compute_delta(G, G_tuned)
        delta = D.factorize(delta, cfg.rank) if cfg.rank else delta
    delta = D.cast_delta(delta, cfg.delta_dtype)
    D.save_delta(path, delta, base_sha256, meta)
    if cfg.rank or cfg.delta_dtype != 'fp32':
        G_tuned = D.apply_delta(copy.deepcopy(G), delta)  # What the stored delta gives back.
    return G_tuned, dict(steps=info['steps'], seconds=time.time() - start, delta_bytes=D.delta_nbytes(delta))


def locality_loss(G_orig, synthesis, pivot, cfg, lpips_model, generator, dtype):
    """Eq. 4: L2 and LPIPS between the tuned (`synthesis(ws, **kwargs)`) and original G at latents near the pivot
    (noise off, as PTI)."""
    w_r = morphed_ws(G_orig, pivot, cfg, generator)
    with torch.no_grad():
        old = G_orig.synthesis(w_r, noise_mode='none', dtype=dtype, fused_modconv=False).float()
    new = synthesis(w_r, noise_mode='none', dtype=dtype).float()
    loss = cfg.regularizer_l2_weight * (new - old).square().mean()
    if lpips_model is not None and cfg.regularizer_lpips_weight > 0:
        loss = loss + cfg.regularizer_lpips_weight * P.LPIPSDistance(lpips_model, old, cfg.lpips_resolution)(new).mean()
    return loss  # PTI divides its sum over samples by their count: the means above already average


# ----------------------------------------------------------------------------
# Weight deltas.

def pti_metrics(G_tuned, target, ws, noise, lpips_model, resolution=256):
    """Final fp32 LPIPS / MSE of the tuned generator's render of the pivot, and the render (uint8)."""
    device = misc.device_of(G_tuned)
    target = P.targets_to_float(torch.as_tensor(target).reshape(1, *np.shape(target)[-3:]), G_tuned, device)
    synth = R.render(G_tuned, torch.as_tensor(ws).reshape(1, G_tuned.num_ws, G_tuned.w_dim), noise)
    out = dict(mse=float((synth - target).square().mean()), lpips=None)
    if lpips_model is not None:
        out['lpips'] = float(P.LPIPSDistance(lpips_model, target, resolution)(synth)[0])
    return out, R.to_uint8(synth)[0]
