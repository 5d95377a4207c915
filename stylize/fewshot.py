"""Few-shot stylization from a handful of reference portraits (Chong & Forsyth 2022, "JoJoGAN: One Shot Face
Stylization"), written for this project.

Each reference is inverted into the base generator (the same projection as `pstyle stylize`). Training pairs
mix the reference's W+ code with random w on the rows chosen by the per-row weight spec (JoJoGAN Sec. 3.2:
rows 7-17 at 1024, our `fine` preset, come from random w; weight 1 = random w, 0 = the reference's row,
between = lerp). G is fine-tuned so that every mixed code renders the reference, with JoJoGAN's loss: the L1
distance between the frozen discriminator's features of G(mixed) and of the reference (Sec. 3.3), or LPIPS
when the checkpoint has no D. Adam with lr 2e-3 and betas (0, 0.99) as JoJoGAN's code.

The tuned weights are never written as a network: the style is a delta against the base (`models/deltas.py`,
kind 'style'), full tensors (`rank=0`) or tuned directly in the low-rank form W = W0 + U V (Hu et al. 2021,
Eq. 3) per weight flattened to [out, in * k * k]; 1-D tensors (biases, noise strengths) stay full.
The tuning state is saved in the run folder every `checkpoint_every` steps and `resume` continues it bit
for bit: the random latents of step s are drawn from (seed, step, reference, sample) alone.
"""

import copy
import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from pstyle.models import deltas
from pstyle.models import render as gen
from pstyle.models import wplus
from pstyle.models.checkpoint import load_network, torch_load_checked
from pstyle.projectors import projector as P
from pstyle.stylize import blend, files, layer_weights
from pstyle.stylize import pipeline as pipe
from pstyle.torch_utils import misc
from pstyle.torch_utils.fileio import atomic_torch_save, sha256_file
from pstyle.torch_utils.folder_run import list_inputs

LOSSES = ('disc', 'lpips')
DISTANCES = ('l1', 'l2')
STATE_NAME = 'fewshot-state.pt'
DELTA_NAME = 'style.safetensors'
MANIFEST_VERSION = 1
# Settings a resumed run may change; any other difference refuses the resume.
RESUMABLE_CHANGES = ('steps', 'checkpoint_every')
GRID_STEP = 2 ** 31  # The step number whose latents the figures show (never a training step).


@dataclasses.dataclass
class FewshotConfig:
    steps:              int = 300       # JoJoGAN's notebook: 200-300 iterations.
    learning_rate:      float = 2e-3    # JoJoGAN: Adam(lr=2e-3, betas=(0, 0.99)).
    beta1:              float = 0.0
    beta2:              float = 0.99
    loss:               str = 'disc'    # 'disc': frozen-D features (JoJoGAN Sec. 3.3); 'lpips': LPIPS-VGG.
    distance:           str = 'l1'      # Between D features: 'l1' (JoJoGAN) or 'l2'.
    tune_rows:          str = None      # W+ row spec: tune only the tensors those rows own; None = all of synthesis.
    rank:               int = 0         # 0 = full-rank tuning; R = W0 + U V with U [out, R], V [R, in*k*k].
    factor_lr_scale:    float = 4.0     # Learning rate of U and V relative to full tensors (benchmarks/bench_fewshot.py).
    samples:            int = 1         # Mixed latents per reference and step.
    precision:          str = 'fp32'    # 'fp32', 'bf16' (CPU/GPU autocast) or 'fp16' (CUDA).
    seed:               int = 0         # Random latents and the initial V factors.
    checkpoint_every:   int = 50        # Save the tuning state (and a progress grid) every this many steps.
    lpips_resolution:   int = 256
    delta_dtype:        str = 'fp16'    # Storage of the style delta: fp16, bf16 or fp32.

    def check(self):
        positive = dict(steps=self.steps, samples=self.samples, checkpoint_every=self.checkpoint_every)
        for name, value in positive.items():
            if int(value) != value or value < 1:
                raise ValueError(f'few-shot {name} must be a positive integer, got {value}')
        if not (self.learning_rate > 0 and self.factor_lr_scale > 0):
            raise ValueError(f'few-shot learning rates must be > 0, got {self.learning_rate} (x {self.factor_lr_scale} for factors)')
        if int(self.rank) != self.rank or self.rank < 0:
            raise ValueError(f'--rank must be an integer >= 0 (0 = full rank), got {self.rank}')
        choices = dict(loss=(self.loss, LOSSES), distance=(self.distance, DISTANCES),
                       precision=(self.precision, P.PRECISIONS), delta_dtype=(self.delta_dtype, tuple(deltas.DELTA_DTYPES)))
        for name, (value, allowed) in choices.items():
            if value not in allowed:
                raise ValueError(f'few-shot {name} must be one of {", ".join(allowed)}, got {value!r}')
        return self

    def as_dict(self):
        return dataclasses.asdict(self)


# ----------------------------------------------------------------------------
# What is tuned, and how.

def tuned_names(G, tune_rows=None):
    """Synthesis parameter names to tune: all of them, or those owned by the rows `tune_rows` selects (the
    mapping network never is: the training latents are w, so it gets no gradient)."""
    if tune_rows is None:
        return [n for n, _ in G.named_parameters() if n.startswith('synthesis.')]
    names = [n for n in wplus.select_params(G, tune_rows) if n.startswith('synthesis.')]
    if not names:
        raise ValueError(f'--tune-rows {tune_rows}: selects no synthesis parameter of this network')
    return names


# ----------------------------------------------------------------------------
# Training pairs and the loss.

def step_seed(seed, step, k):
    """One seed per (run seed, step, latent): the latents of a step do not depend on what came before."""
    return int(np.random.SeedSequence([int(seed), int(step), int(k)]).generate_state(1)[0])


@torch.no_grad()
def mixed_latents(G, ws_ref, row_weights, seed, step, samples=1):
    """JoJoGAN's training latents (Sec. 3.2): each reference's W+ [N, num_ws, w_dim] lerped towards a random w
    per row by `row_weights` [num_ws] (1 = the random w). Returns [N * samples, num_ws, w_dim], reference-major."""
    device = ws_ref.device
    n = ws_ref.shape[0] * samples
    z = torch.stack([torch.randn([G.z_dim], generator=torch.Generator().manual_seed(step_seed(seed, step, k)))
                     for k in range(n)]).to(device)
    w = G.mapping(z, None)  # [n, num_ws, w_dim], untruncated as JoJoGAN's get_latent
    ref = ws_ref.repeat_interleave(samples, dim=0)
    weights = torch.as_tensor(row_weights, dtype=torch.float32, device=device).reshape(1, -1, 1)
    return torch.lerp(ref, w, weights)


def disc_features(D, img):
    """The output of each discriminator block b{res}, high resolution first (JoJoGAN's feature list)."""
    feats, x = [], None
    for res in D.block_resolutions:
        x, img = getattr(D, f'b{res}')(x, img)
        feats.append(x)
    return feats


class FewshotLoss:
    """Distance of G's renders [B, C, H, W] to their references: mean over D's blocks of the L1 (or L2)
    between frozen-D features (JoJoGAN), or LPIPS. Reference features are computed once."""

    def __init__(self, cfg, targets, D=None, lpips_model=None):
        self.cfg, self.D = cfg, D
        with torch.no_grad(), P._autocast(targets.device, cfg.precision):
            if cfg.loss == 'disc':
                self.target_feats = [f.float() for f in disc_features(D, targets)]
            else:
                self.lpips = P.LPIPSDistance(lpips_model, targets, cfg.lpips_resolution)

    def __call__(self, img, index):
        """img: renders; index [B]: the reference of each render -> scalar loss."""
        if self.cfg.loss == 'lpips':
            return self.lpips(img, index).mean()
        dist = F.l1_loss if self.cfg.distance == 'l1' else F.mse_loss
        feats = disc_features(self.D, img)
        return sum(dist(f.float(), t[index]) for f, t in zip(feats, self.target_feats)) / len(feats)


def check_inputs(G, D, cfg):
    if cfg.loss == 'disc':
        if D is None:
            raise ValueError('--loss disc needs the discriminator, and this network file holds none (only the '
                             'generator): use --loss lpips, or a checkpoint saved with its D')
        if D.img_resolution != G.img_resolution or D.img_channels != G.img_channels:
            raise ValueError(f'the discriminator takes {D.img_resolution}x{D.img_resolution}x{D.img_channels} images, '
                             f'the generator makes {G.img_resolution}x{G.img_resolution}x{G.img_channels}')
    if G.c_dim != 0:
        raise ValueError('few-shot stylization needs an unconditional generator (c_dim 0)')


# ----------------------------------------------------------------------------
# The fine-tuning loop, with an exact resume.

def _fingerprint(G, cfg, ws_ref, row_weights):
    return dict(config={k: v for k, v in cfg.as_dict().items() if k not in RESUMABLE_CHANGES},
                base_weights_sha256=deltas.weights_sha256(G), row_weights=[float(w) for w in row_weights],
                references=ws_ref.shape[0])


def save_state(path, step, tunable, opt, history, fingerprint, ws_ref):
    """The tuning state after `step` steps (tensors and JSON only: loads with weights_only)."""
    atomic_torch_save(dict(step=step, tensors={k: t.detach().cpu() for k, t in tunable.tensors.items()},
                           optimizer=opt.state_dict(), history=json.dumps(history),
                           fingerprint=json.dumps(fingerprint), ws_ref=ws_ref.detach().cpu()), path)


def load_state(path):
    state = torch_load_checked(path)
    if not isinstance(state, dict) or 'fingerprint' not in state:
        raise ValueError(f'{path}: not a few-shot tuning state')
    return state


def restore_state(path, state, tunable, opt, fingerprint):
    """Put a saved state into `tunable` and `opt`; returns (step, history). Refuses another run's state."""
    saved = json.loads(state['fingerprint'])
    for key in fingerprint:
        if saved.get(key) != fingerprint[key]:
            diff = key if key != 'config' else ', '.join(sorted(k for k in fingerprint['config']
                                                                if saved['config'].get(k) != fingerprint['config'][k]))
            raise ValueError(f'{path}: cannot resume: this run differs from the saved one in {diff} '
                             f'(only {", ".join(RESUMABLE_CHANGES)} may change)')
    with torch.no_grad():
        for k, t in tunable.tensors.items():
            t.copy_(state['tensors'][k])
    opt.load_state_dict(state['optimizer'])
    return int(state['step']), json.loads(state['history'])


def finetune(G, targets, ws_ref, row_weights, cfg, D=None, lpips_model=None, state_path=None, resume=False,
             progress=None, callback=None):
    """Tune G (not modified) on references. Returns (delta {name: tensor or LowRank}, info dict).

    targets: uint8 [N, C, H, W] at G's resolution; ws_ref: their W+ [N, num_ws, w_dim]; row_weights [num_ws]
    (1 = random w in the training latents). state_path: the tuning state, saved every cfg.checkpoint_every
    steps and at the end; with `resume` it is read first. callback(step, tunable) after each step.
    """
    cfg.check()
    check_inputs(G, D, cfg)
    device = misc.device_of(G)
    dtype = P.synthesis_dtype(cfg.precision, device)
    ws_ref = torch.as_tensor(ws_ref, dtype=torch.float32).to(device)
    misc.assert_shape(ws_ref, [None, G.num_ws, G.w_dim])
    if cfg.loss == 'lpips' and lpips_model is None:
        lpips_model = P.default_lpips(device)
    tunable = deltas.DeltaParams(G, tuned_names(G, cfg.tune_rows), cfg.rank, cfg.seed)
    opt = torch.optim.Adam(tunable.param_groups(cfg.learning_rate, cfg.factor_lr_scale), betas=(cfg.beta1, cfg.beta2))
    fingerprint = _fingerprint(G, cfg, ws_ref, row_weights)
    start, history = 0, []
    if resume and state_path is not None and Path(state_path).is_file():
        start, history = restore_state(state_path, load_state(state_path), tunable, opt, fingerprint)
    loss_fn = FewshotLoss(cfg, P.targets_to_float(torch.as_tensor(targets), G, device), D, lpips_model)
    index = torch.arange(ws_ref.shape[0], device=device).repeat_interleave(cfg.samples)
    for step in range(start, cfg.steps):
        ws = mixed_latents(G, ws_ref, row_weights, cfg.seed, step, cfg.samples)
        with P._autocast(device, cfg.precision):
            loss = loss_fn(deltas.synthesize(G, tunable.synthesis_params(), ws, noise_mode='const', dtype=dtype).float(), index)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        history.append(float(loss.detach()))
        if progress is not None:
            progress.update(loss=history[-1])
        done = step + 1
        if state_path is not None and (done % cfg.checkpoint_every == 0 or done == cfg.steps):
            save_state(state_path, done, tunable, opt, history, fingerprint, ws_ref)
        if callback is not None:
            callback(done, tunable)
    return tunable.delta(), dict(history=history, tuned=sorted(tunable.base), factored=sorted(tunable.factored),
                                 resumed_from=start)


def tuned_generator(G, delta, scale=1.0):
    """A copy of G with `delta` applied (scale as `models.deltas.apply_delta`)."""
    return deltas.apply_delta(copy.deepcopy(G), delta, scale=scale)


def styled_generator(G, path, alpha=1.0, row_weights=None):
    """A copy of G with the style (or PTI) delta at `path`: every tensor at base + alpha * w * (tuned - base), w the
    weight of the W+ row owning it (`stylize.blend.parameter_weights`; 1 everywhere without row_weights).
    alpha 0 is the base, 1 the tuned network. A delta made for another network is refused, naming both hashes."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f'--delta-alpha must be in [0, 1] (0 = base, 1 = tuned), got {alpha}')
    scale = alpha
    if row_weights is not None:
        scale = {n: alpha * w for n, w in blend.parameter_weights(G, row_weights).items()}
    return deltas.load_tuned_generator(G, path, scale)


# ----------------------------------------------------------------------------
# A run: references in, style delta, manifest and grids out.

def load_base(network, device):
    """(G_ema, D or None, provenance dict) of the base network."""
    nets = load_network(network, device=device)
    G = nets['G_ema'].eval().requires_grad_(False)
    D = nets['D'].eval().requires_grad_(False) if nets.get('D') is not None else None
    info = dict(network=str(network), path=nets.get('path'), format=nets.get('format'),
                sha256=sha256_file(nets['path']) if nets.get('path') else None, weights_sha256=deltas.weights_sha256(G),
                img_resolution=int(G.img_resolution), num_ws=int(G.num_ws), has_discriminator=D is not None)
    return G, D, info


def reference_paths(styles):
    """Every reference image: files as given, folders listed; at least one."""
    paths = [p for s in styles for p in list_inputs(s)]
    if not paths:
        raise ValueError('give at least one reference image (--style)')
    return paths


def run_fewshot(styles, outdir, cfg, stylize_cfg, resume=False, log=print, progress=None, lpips_model=None):
    """`pstyle fewshot`: tune stylize_cfg.base on the reference images `styles` (files or folders); write
    style.safetensors, manifest.json, grid.png, samples.png and progress/ grids to `outdir`. Returns the manifest.

    stylize_cfg: a `stylize.pipeline.StylizeConfig` giving the base network, alignment, projection options and the
    per-row spec of the training latents (its styled/mix_style/pti fields are not used)."""
    cfg.check()
    t0 = time.perf_counter()
    outdir = Path(outdir)
    device = gen.pick_device(stylize_cfg.device)
    G, D, base_info = load_base(stylize_cfg.base, device)
    check_inputs(G, D, cfg)
    row_weights = layer_weights.resolve(G, stylize_cfg.spec)
    tuned_names(G, cfg.tune_rows)  # A bad --tune-rows fails before the projection.
    paths = reference_paths(styles)
    targets = np.stack([pipe.prepare_photo(p, G.img_resolution, stylize_cfg)[0] for p in paths])  # [N, H, W, C]
    state_path = outdir / STATE_NAME
    outdir.mkdir(parents=True, exist_ok=True)
    ws_ref = _saved_latents(state_path, len(paths)) if resume else None
    if ws_ref is None:
        project_cfg = dataclasses.replace(stylize_cfg, pti=False)
        ws_ref, _, _ = pipe.Projector(G, project_cfg, device, progress)(targets)
        log(f'inverted {len(paths)} reference(s)')
    seconds = dict(load_and_invert=time.perf_counter() - t0)
    targets_t = torch.from_numpy(targets).permute(0, 3, 1, 2)  # [N, C, H, W]
    grid_ws = mixed_latents(G, ws_ref.to(device), row_weights, cfg.seed, GRID_STEP, 3)  # Fixed latents for the grids.
    (outdir / 'progress').mkdir(exist_ok=True)

    def snapshot(step, tunable):
        if step % cfg.checkpoint_every == 0 or step == cfg.steps:
            G_now = tuned_generator(G, tunable.delta())
            gen.save_image(_progress_grid(G_now, targets, grid_ws), outdir / 'progress' / f'step{step:06d}.png')

    t0 = time.perf_counter()
    bar = progress(cfg.steps, 'fewshot') if progress is not None else None
    try:
        delta, info = finetune(G, targets_t, ws_ref, row_weights, cfg, D, lpips_model, state_path, resume, bar, snapshot)
    finally:
        if bar is not None:
            bar.close()
    seconds['tune'] = time.perf_counter() - t0
    stored = deltas.cast_delta(delta, cfg.delta_dtype)
    meta = dict(references=[Path(p).name for p in paths], config=cfg.as_dict(), row_weights=list(map(float, row_weights)),
                network_sha256=base_info['sha256'])
    delta_path = deltas.save_delta(outdir / DELTA_NAME, stored, base_info['weights_sha256'], meta, kind='style')
    G_tuned = tuned_generator(G, stored)
    _save_figures(G, G_tuned, targets, ws_ref, grid_ws, outdir)
    manifest = files.jsonable(dict(
        version=MANIFEST_VERSION, kind='pstyle fewshot', base=base_info, config=cfg.as_dict(),
        inversion=dict(align=stylize_cfg.align, project_preset=stylize_cfg.project_preset, project=stylize_cfg.project,
                       method=stylize_cfg.invert, encoder=stylize_cfg.encoder),
        spec=stylize_cfg.spec.as_dict(), spec_text=stylize_cfg.spec.describe(), row_weights=row_weights,
        references=[dict(path=str(p), sha256=sha256_file(p)) for p in paths],
        delta=dict(path=delta_path.name, bytes=delta_path.stat().st_size, tensors=len(stored),
                   factored=info['factored'], tensor_bytes=deltas.delta_nbytes(stored)),
        tuned=info['tuned'], resumed_from=info['resumed_from'], steps=cfg.steps,
        loss=dict(first=info['history'][0] if info['history'] else None, last=info['history'][-1] if info['history'] else None),
        history=info['history'], seconds=seconds))
    files.write_json(outdir / 'manifest.json', manifest)
    return manifest


def _saved_latents(state_path, num_refs):
    """The references' W+ from an earlier run's state (a resume does not project again), or None."""
    if not state_path.is_file():
        return None
    ws = load_state(state_path)['ws_ref']
    if ws.shape[0] != num_refs:
        raise ValueError(f'{state_path}: cannot resume: it was made from {ws.shape[0]} reference(s), not {num_refs}')
    return ws


def _progress_grid(G, targets, grid_ws):
    """Rows = references: the reference, then G's renders of its fixed mixed latents."""
    n = len(targets)
    renders = gen.to_uint8(gen.render(G, grid_ws)).reshape(n, -1, *targets.shape[1:])
    tiles = np.concatenate([targets[:, None], renders], axis=1)  # [N, 1 + samples, H, W, C]
    return gen.image_grid(tiles.reshape(-1, *targets.shape[1:]), n, tiles.shape[1])


def _save_figures(G, G_tuned, targets, ws_ref, grid_ws, outdir):
    """grid.png: per reference, the reference, its inversion (base), the tuned G's render of it, then mixed
    latents by the base and by the tuned G; samples.png: seeds 0-7 by the base (top) and the tuned G."""
    n = len(targets)
    render = lambda g, ws: gen.to_uint8(gen.render(g, ws)).reshape(n, -1, *targets.shape[1:])
    cols = [targets[:, None], render(G, ws_ref), render(G_tuned, ws_ref), render(G, grid_ws), render(G_tuned, grid_ws)]
    tiles = np.concatenate(cols, axis=1)
    gen.save_image(gen.image_grid(tiles.reshape(-1, *targets.shape[1:]), n, tiles.shape[1]), outdir / 'grid.png')
    ws = gen.seeds_to_ws(G, list(range(8)))
    before, after = gen.to_uint8(gen.render(G, ws)), gen.to_uint8(gen.render(G_tuned, ws))
    gen.save_image(gen.image_grid(np.concatenate([before, after]), 2, 8), outdir / 'samples.png')
