"""Batched GAN inversion: photos -> W or W+ latents (and per-image noise maps).

The optimisation follows NVIDIA's stylegan2-ada-pytorch `projector.py` (Karras et al. 2020,
"Analyzing and Improving the Image Quality of StyleGAN", Section 5 / Appendix D): start at the mean
w, Adam on the latent with a cosine learning-rate ramp, a decaying Gaussian perturbation of the
latent, an LPIPS-VGG loss at 256x256, and noise maps kept decorrelated by a multi-scale
autocorrelation penalty and renormalised after every step. Written for this project.

What differs from NVIDIA's script:
- N images are optimised together with their own latents, noise maps, latent-noise draws and
  early-stopping state; losses are summed over the batch, so image k's gradient, Adam state and
  result do not depend on the other images (Adam is element-wise).
- `w+` (one row per synthesis layer) as well as `w`; optimised noise maps are returned, not dropped.
- Optional MSE and identity terms, an LPIPS early-stopping threshold, bf16 on the CPU.
"""

import dataclasses
import warnings

import numpy as np
import torch
import torch.nn.functional as F
from pstyle.metrics import arcface
from pstyle.metrics import weights as W
from pstyle.metrics.lpips_utils import LPIPSWeightsError, load_lpips
from pstyle.torch_utils.errors import check_finite
from pstyle.models.latents import noise_layers
from pstyle.models.render import noise_inputs, render, to_uint8
from pstyle.torch_utils import cpu_features, misc

SPACES = ('w', 'w+')
PRECISIONS = ('fp32', 'bf16', 'fp16')


@dataclasses.dataclass
class ProjectConfig:
    space:                      str = 'w+'      # 'w': one vector broadcast to all rows; 'w+': one per row.
    num_steps:                  int = 500       # Optimisation steps (NVIDIA: 1000).
    optimize_noise:             bool = True     # Optimise per-image noise maps (NVIDIA does, then drops them).
    w_avg_samples:              int = 10000     # Mapping samples for the initial w and its spread.
    initial_learning_rate:      float = 0.1     # Peak Adam learning rate.
    initial_noise_factor:       float = 0.05    # Latent perturbation at t=0, in units of w_std.
    lr_rampdown_length:         float = 0.25    # Fraction of the run spent ramping the lr down (cosine).
    lr_rampup_length:           float = 0.05    # Fraction of the run spent ramping the lr up (linear).
    noise_ramp_length:          float = 0.75    # Fraction of the run over which the latent perturbation fades.
    regularize_noise_weight:    float = 1e5     # Noise-map autocorrelation penalty.
    lpips_weight:               float = 1.0     # LPIPS-VGG term.
    mse_weight:                 float = 0.0     # Pixel MSE term (images in [-1, 1]).
    id_weight:                  float = 0.0     # Identity term 1 - cos(emb(synth), emb(target)).
    lpips_resolution:           int = 256       # Images larger than this are area-downsampled for LPIPS.
    early_stop_lpips:           float = None    # Freeze an image once its LPIPS falls below this.
    precision:                  str = 'fp32'    # 'fp32', 'bf16' (CPU/GPU) or 'fp16' (CUDA).
    seed:                       int = 0         # Per-image generators (latent noise, initial noise maps).
    beta1:                      float = 0.9     # Adam betas.
    beta2:                      float = 0.999
    fused_modconv:              bool = False    # One code path at every batch size: batch-independent numerics.
    micro_batch:                int = 0         # Images per forward/backward pass; 0 = automatic (auto_micro_batch).
    # Only `encoder+optimize` (projectors.invert.warm_start_config) reads these; `project` from the mean w ignores them.
    warm_start_learning_rate:   float = 0.2     # Peak Adam learning rate from an encoder's latent.
    warm_start_rampup_steps:    int = 5         # Its lr ramp-up lasts at least this many steps.

    def check(self):
        if self.space not in SPACES:
            raise ValueError(f'space must be one of {SPACES}, got {self.space!r}')
        if self.precision not in PRECISIONS:
            raise ValueError(f'precision must be one of {PRECISIONS}, got {self.precision!r}')
        if int(self.num_steps) != self.num_steps or self.num_steps < 1:
            raise ValueError(f'num_steps must be a positive integer, got {self.num_steps}')
        if int(self.micro_batch) != self.micro_batch or self.micro_batch < 0:
            raise ValueError(f'micro_batch must be an integer >= 0 (0 = automatic), got {self.micro_batch}')
        if self.warm_start_learning_rate <= 0:
            raise ValueError(f'warm_start_learning_rate must be > 0, got {self.warm_start_learning_rate}')
        if int(self.warm_start_rampup_steps) != self.warm_start_rampup_steps or self.warm_start_rampup_steps < 0:
            raise ValueError(f'warm_start_rampup_steps must be an integer >= 0, got {self.warm_start_rampup_steps}')
        if self.w_avg_samples < 1:
            raise ValueError(f'w_avg_samples must be >= 1, got {self.w_avg_samples}')
        weights = dict(lpips_weight=self.lpips_weight, mse_weight=self.mse_weight, id_weight=self.id_weight,
                       regularize_noise_weight=self.regularize_noise_weight)
        negative = [k for k, v in weights.items() if v < 0]
        if negative:
            raise ValueError(f'loss weights must be >= 0: {", ".join(negative)}')
        if self.lpips_weight == 0 and self.mse_weight == 0 and self.id_weight == 0:
            raise ValueError('all loss weights are 0: set lpips_weight, mse_weight or id_weight')
        for name in ('lr_rampdown_length', 'lr_rampup_length', 'noise_ramp_length'):
            if not 0 < getattr(self, name) <= 1:
                raise ValueError(f'{name} must be in (0, 1], got {getattr(self, name)}')
        return self

    def as_dict(self):
        return dataclasses.asdict(self)


# Speed/quality dial. `default` is W+ because portrait stylization swaps layers of a W+ code, and
# W+ reaches a clearly lower LPIPS than W on the same budget; 500 steps is where NVIDIA's
# schedule has converged for most FFHQ faces. `best` adds pivotal tuning (see projectors/pti.py).
PRESETS = {
    'fast':    dict(project=dict(space='w+', num_steps=200, optimize_noise=False), pti=None),
    'default': dict(project=dict(space='w+', num_steps=500, optimize_noise=True), pti=None),
    'best':    dict(project=dict(space='w+', num_steps=1000, optimize_noise=True), pti=dict(num_steps=350)),
}


def preset_config(preset='default', **overrides):
    """ProjectConfig of a named preset with field overrides (None values are ignored)."""
    if preset not in PRESETS:
        raise ValueError(f'preset must be one of {", ".join(PRESETS)}, got {preset!r}')
    kwargs = dict(PRESETS[preset]['project'])
    fields = {f.name for f in dataclasses.fields(ProjectConfig)}
    unknown = sorted(k for k in overrides if k not in fields)
    if unknown:
        raise ValueError(f'unknown projection settings: {", ".join(unknown)} (known: {", ".join(sorted(fields))})')
    kwargs.update({k: v for k, v in overrides.items() if v is not None})
    return ProjectConfig(**kwargs).check()


# ----------------------------------------------------------------------------
# Schedules (NVIDIA projector.py).

def learning_rate(t, cfg):
    """Linear ramp-up over lr_rampup_length, cosine ramp-down over the last lr_rampdown_length."""
    ramp = min(1.0, (1.0 - t) / cfg.lr_rampdown_length)
    ramp = 0.5 - 0.5 * np.cos(ramp * np.pi)
    ramp = ramp * min(1.0, t / cfg.lr_rampup_length)
    return cfg.initial_learning_rate * ramp


def latent_noise_scale(t, cfg, w_std):
    """Std of the Gaussian added to w: w_std * factor * max(0, 1 - t / noise_ramp_length)^2."""
    return w_std * cfg.initial_noise_factor * max(0.0, 1.0 - t / cfg.noise_ramp_length) ** 2


@torch.no_grad()
def compute_w_stats(G, num_samples=10000, seed=123, device=None):
    """(w_avg [1, 1, w_dim], w_std scalar) from mapping samples, as NVIDIA's projector estimates them."""
    if G.c_dim != 0:
        raise ValueError(f'projection supports unconditional networks only (this one has c_dim={G.c_dim})')
    device = misc.device_of(G) if device is None else torch.device(device)
    z = torch.from_numpy(np.random.RandomState(seed).randn(num_samples, G.z_dim)).to(device, torch.float32)
    w = G.mapping(z, None, update_emas=False)[:, :1, :].double()  # [N, 1, w_dim]
    w_avg = w.mean(dim=0, keepdim=True)  # [1, 1, w_dim]
    w_std = float(((w - w_avg).square().sum() / num_samples).sqrt())
    return w_avg.float(), w_std


# ----------------------------------------------------------------------------
# Per-image noise maps: [N, 1, r, r] tensors passed to G.synthesis as `noise_inputs` (see
# models.render.noise_inputs), so each image gets its own map and G's buffers are never touched.

def init_noise(G, generators, device):
    """Fresh unit Gaussian maps {name: [N, 1, r, r]}, image k drawn from generators[k]."""
    out = {}
    for name, layer in noise_layers(G).items():
        r = layer.resolution
        maps = [torch.randn([1, r, r], generator=g) for g in generators]
        out[name] = torch.stack(maps).to(device)  # [N, 1, r, r]
    return out


def noise_regularization(noise):
    """Per-image [N] sum of squared autocorrelations at shift 1 in x and y, over a 2x pyramid down to 8x8."""
    total = 0.0
    for v in noise.values():
        x = v
        while True:
            # Roll wraps around, as NVIDIA's reg_loss does; the mean is per image (dims 1-3).
            total = total + (x * torch.roll(x, shifts=1, dims=3)).mean(dim=[1, 2, 3]).square()
            total = total + (x * torch.roll(x, shifts=1, dims=2)).mean(dim=[1, 2, 3]).square()
            if x.shape[2] <= 8:
                break
            x = F.avg_pool2d(x, kernel_size=2)
    return total


@torch.no_grad()
def normalize_noise_(noise):
    """Zero mean, unit variance per image and layer (in place)."""
    for v in noise.values():
        v -= v.mean(dim=[1, 2, 3], keepdim=True)
        v *= v.square().mean(dim=[1, 2, 3], keepdim=True).rsqrt()


# ----------------------------------------------------------------------------
# Losses.

def chunks(n, size=None):
    """Slices covering range(n), `size` items each (one slice for all when size is None)."""
    size = size or max(n, 1)
    return [slice(start, start + size) for start in range(0, n, size)]


def lpips_input(img, resolution=256):
    """float [N, C, H, W] in [-1, 1] -> 3 channels, area-downsampled to `resolution` when larger (NVIDIA)."""
    if img.shape[1] == 1:
        img = img.repeat(1, 3, 1, 1)
    if img.shape[2] > resolution:
        img = F.interpolate(img, size=(resolution, resolution), mode='area')
    return img


class LPIPSDistance:
    """Per-image LPIPS (Zhang et al. 2018, Eq. 1) to fixed targets; target features computed once.

    Uses the modules of an `lpips.LPIPS` model (scaling layer, trunk, linear heads) so that the
    distance equals `model(x, target)` while the targets' trunk pass is not repeated every step.
    """

    def __init__(self, model, targets, resolution=256, micro_batch=None):
        self.model = model
        self.resolution = resolution
        # oneDNN runs VGG's convolutions ~12% faster in channels_last (fp32 and bf16, forward and backward,
        # measured at 256^2); the values are the same, only the layout of the trunk's weights changes.
        self.channels_last = targets.device.type == 'cpu'
        if self.channels_last:
            model.net.to(memory_format=torch.channels_last)
        feats = [self.features(targets[sl]) for sl in chunks(len(targets), micro_batch)]
        self.target_feats = [torch.cat(layer) for layer in zip(*feats)]

    def features(self, img):
        import lpips
        x = self.model.scaling_layer(lpips_input(img, self.resolution))
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        # Unit-normalise in fp32: under bf16 autocast the trunk output is bf16.
        return [lpips.normalize_tensor(f.float()) for f in self.model.net(x)]

    def __call__(self, img, index=None):
        """img float [n, C, H, W] in [-1, 1] vs targets[index] -> [n]."""
        feats = self.features(img)
        total = 0.0
        for k, (f0, f1) in enumerate(zip(feats, self.target_feats)):
            f1 = f1 if index is None else f1[index]
            diff = (f0 - f1).square()  # [nCHW]
            head = self.model.lins[k](diff) if self.model.lpips else diff.sum(dim=1, keepdim=True)
            total = total + head.float().mean(dim=[1, 2, 3])  # spatial average
        return total


def _autocast(device, precision):
    dtype = {'bf16': torch.bfloat16, 'fp16': torch.float16}.get(precision)
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)


def synthesis_dtype(precision, device):
    if precision == 'fp16' and device.type != 'cuda':
        raise ValueError('fp16 needs a CUDA device; on the CPU use precision bf16')
    return {'fp32': None, 'bf16': torch.bfloat16, 'fp16': torch.float16}[precision]


class ProjectionLoss:
    """Weighted per-image losses of synthesized images against fixed targets (float [-1, 1])."""

    def __init__(self, targets, cfg, lpips_model=None, identity_model=None, precision='fp32', micro_batch=None):
        self.targets = targets
        self.cfg = cfg
        self.precision = precision
        self.identity_model = identity_model
        with torch.no_grad(), _autocast(targets.device, precision):
            self.lpips = LPIPSDistance(lpips_model, targets, cfg.lpips_resolution, micro_batch) if lpips_model is not None else None
            self.target_ids = torch.cat([self._embed(targets[sl]) for sl in chunks(len(targets), micro_batch)]) \
                if identity_model is not None else None

    def _embed(self, img):
        return F.normalize(self.identity_model(img).float(), dim=1)

    def __call__(self, synth, index=None):
        """synth [n, C, H, W] for targets[index] -> dict of [n] tensors ('total' and each term)."""
        targets = self.targets if index is None else self.targets[index]
        terms = {}
        with _autocast(synth.device, self.precision):
            if self.lpips is not None:
                terms['lpips'] = self.lpips(synth, index)
            if self.identity_model is not None:
                ids = self.target_ids if index is None else self.target_ids[index]
                terms['identity'] = 1 - (self._embed(synth) * ids).sum(dim=1)  # 1 - cosine similarity
        terms['mse'] = (synth.float() - targets).square().mean(dim=[1, 2, 3])
        weights = dict(lpips=self.cfg.lpips_weight, mse=self.cfg.mse_weight, identity=self.cfg.id_weight)
        terms['total'] = sum(weights[k] * v for k, v in terms.items() if weights[k] != 0)
        return terms


class ArcFaceIdentity:
    """Differentiable ArcFace IR-SE50 embedding of float images in [-1, 1], cropped as pSp's ID loss
    (Richardson et al. 2021): resize to 256, rows 35:223 and columns 32:220, average-pool to 112."""

    def __init__(self, net):
        self.net = net

    def __call__(self, img):
        if img.shape[2] != 256:
            mode = 'area' if img.shape[2] > 256 else 'bilinear'
            img = F.interpolate(img, size=(256, 256), mode=mode, **({} if mode == 'area' else dict(align_corners=False)))
        x = F.adaptive_avg_pool2d(img[:, :, 35:223, 32:220], (112, 112))
        return self.net(x)


def load_identity_model(device, weights=None):
    """(ArcFaceIdentity, None), or (None, note) when ArcFace weights or code are unavailable."""
    try:
        path = W.resolve_weights(W.ARCFACE_IRSE50, path=weights, download=False)
        return ArcFaceIdentity(arcface.load_arcface(path, device)), None
    except Exception as e:  # noqa: BLE001 -- any failure just disables the optional term
        return None, f'identity term disabled: {type(e).__name__}: {e}'


def default_lpips(device):
    """LPIPS-VGG through `metrics.lpips_utils.load_lpips`; a missing backbone's error names the file and
    how to run without it (every command's `--lpips-weight 0` turns LPIPS off in projection and PTI)."""
    try:
        return load_lpips(net='vgg', device=device)
    except LPIPSWeightsError as e:
        raise LPIPSWeightsError(f'{e} Or run without LPIPS/VGG: --lpips-weight 0 --mse-weight 1.') from None


# ----------------------------------------------------------------------------
# The optimisation.

@dataclasses.dataclass
class ProjectionResult:
    ws: torch.Tensor            # [N, num_ws, w_dim] float32, CPU
    noise: dict                 # {layer: [N, 1, r, r]} float32 CPU, or None when noise was not optimised
    images: np.ndarray          # uint8 [N, H, W, C] reconstructions (fp32 render)
    metrics: list               # per image: lpips, mse, identity, steps, stopped_early
    history: dict               # 'loss', 'lpips', 'mse': float [num_steps, N] (NaN after an early stop)
    notes: list                 # what was disabled or changed, for the run's metrics file


def cpu_has_fast_bf16():
    """Whether oneDNN has native bf16 kernels here (see torch_utils.cpu_features)."""
    return cpu_features.has_fast_bf16()


def per_image_generators(n, seed, seeds=None):
    """One torch.Generator per image: image k's draws never depend on the batch."""
    seeds = [seed] * n if seeds is None else list(seeds)
    if len(seeds) != n:
        raise ValueError(f'{len(seeds)} seeds for {n} images')
    return [torch.Generator().manual_seed(int(s)) for s in seeds]


def targets_to_float(targets, G, device):
    """uint8 [N, C, H, W] (or [N, H, W, C]) at G's resolution -> float [-1, 1] [N, C, H, W]."""
    targets = torch.as_tensor(targets)
    if targets.ndim == 4 and targets.shape[-1] == G.img_channels and targets.shape[1] != G.img_channels:
        targets = targets.permute(0, 3, 1, 2)  # NHWC -> NCHW
    if targets.dtype != torch.uint8:
        raise ValueError(f'targets must be uint8 images in [0, 255], got {targets.dtype}')
    misc.assert_shape(targets, [None, G.img_channels, G.img_resolution, G.img_resolution])
    return targets.to(device, torch.float32) / 127.5 - 1


def auto_micro_batch(G, N, device):
    """Images per forward/backward pass when the config says 0 (automatic).

    On the CPU at 256^2 and above one image per pass is faster (a batch's activations fall out of the
    caches: measured 0.99 vs 1.72 s per image and step at 256^2, batch 8) and gives bit for bit the numbers
    of projecting each image alone. Below that, per-layer overhead dominates and the whole batch in one pass
    is faster (64^2 demo network, 6 images: 0.12 vs 0.68 s per step). On CUDA: all images.
    """
    if device.type == 'cpu' and G.img_resolution >= 256:
        return 1
    return N


def project(G, targets, cfg=None, lpips_model=None, identity_model=None, w_stats=None, seeds=None, init_ws=None,
            callback=None, progress=None, init_noise=None):
    """Invert N target images together; returns a ProjectionResult.

    targets: uint8 [N, C, H, W] in [0, 255] at G.img_resolution. lpips_model: an `lpips.LPIPS`
    (None = LPIPS-VGG via metrics.lpips_utils when lpips_weight > 0). w_stats: (w_avg, w_std) from
    `compute_w_stats`, computed when None. seeds: per-image seeds (default: cfg.seed for all).
    init_ws: optional start [N, num_ws, w_dim] (or [N, w_dim]) instead of w_avg. init_noise: optional start
    {layer: [N, 1, r, r]} of the optimised noise maps instead of fresh Gaussian ones.
    callback(step, index, synth) is called after each step with the active images' renders.
    progress: a `torch_utils.progress.Progress`, updated each step with the active images' mean loss.
    """
    cfg = (cfg or ProjectConfig()).check()
    device = misc.device_of(G)
    dtype = synthesis_dtype(cfg.precision, device)
    target = targets_to_float(targets, G, device)
    N = target.shape[0]
    notes = []
    if cfg.precision == 'bf16' and device.type == 'cpu' and not cpu_has_fast_bf16():
        notes.append('bf16 requested on a CPU without native bf16 (AVX512-BF16/AMX): expect it to be slower than fp32')
        warnings.warn(notes[-1])
    if cfg.lpips_weight > 0 and lpips_model is None:
        lpips_model = default_lpips(device)
    if cfg.id_weight > 0 and identity_model is None:
        identity_model, note = load_identity_model(device)
        if note:
            notes.append(note)
            warnings.warn(note)
    micro_batch = cfg.micro_batch or auto_micro_batch(G, N, device)
    loss_fn = ProjectionLoss(target, cfg, lpips_model if cfg.lpips_weight > 0 else None,
                             identity_model if cfg.id_weight > 0 else None, cfg.precision, micro_batch)
    w_avg, w_std = w_stats if w_stats is not None else compute_w_stats(G, cfg.w_avg_samples, device=device)
    gens = per_image_generators(N, cfg.seed, seeds)
    w_opt, noise = _init_variables(G, cfg, N, w_avg, init_ws, gens, device, init_noise)
    params = [w_opt] + (list(noise.values()) if noise else [])
    opt = torch.optim.Adam(params, betas=(cfg.beta1, cfg.beta2), lr=cfg.initial_learning_rate)

    active = torch.ones(N, dtype=torch.bool)
    frozen_values = None
    steps_run = np.full(N, cfg.num_steps)
    history = {k: np.full([cfg.num_steps, N], np.nan, dtype=np.float32) for k in ('loss', 'lpips', 'mse')}
    for step in range(cfg.num_steps):
        t = step / cfg.num_steps
        for group in opt.param_groups:
            group['lr'] = learning_rate(t, cfg)
        index = active.nonzero()[:, 0].to(device)
        scale = latent_noise_scale(t, cfg, w_std)
        w_noise = torch.stack([torch.randn(w_opt.shape[1:], generator=gens[k]) for k in index.tolist()]).to(device)
        synth, terms = _gradients(G, loss_fn, cfg, params, index, w_noise * scale, noise, dtype, micro_batch)
        per_image = terms['total']
        opt.step()
        frozen = ~active
        if frozen.any():
            _restore_frozen(params, frozen_values, frozen)
        if noise:
            normalize_noise_(noise)
        _record(history, step, index, per_image, terms)
        if progress is not None:
            progress.update(loss=float(per_image.detach().mean()))
        if callback is not None:
            callback(step, index.cpu(), synth.detach())
        if cfg.early_stop_lpips is not None and 'lpips' in terms:
            done = index[terms['lpips'].detach() < cfg.early_stop_lpips].cpu()
            if len(done):
                active[done] = False
                steps_run[done.numpy()] = step + 1
                frozen_values = [p.detach().clone() for p in params]
                if not active.any():
                    break
    return _finish(G, cfg, w_opt, noise, target, lpips_model, identity_model, steps_run, history, notes, micro_batch)


def _gradients(G, loss_fn, cfg, params, index, w_noise, noise, dtype, micro_batch):
    """Forward and backward of the active images `index`, `micro_batch` at a time; sets every param's .grad.

    Exact whatever the split: each image's loss depends only on its own latent and noise maps, and
    losses are summed, not averaged, over images. Returns (synth [n, C, H, W] detached, {term: [n]}).
    """
    w_opt, synths, parts = params[0], [], []
    for p in params:
        p.grad = torch.zeros_like(p)
    for start in range(0, len(index), micro_batch):
        sub = index[start:start + micro_batch]
        ws = (w_opt[sub] + w_noise[start:start + micro_batch]).expand(-1, G.num_ws, -1)  # W rows broadcast
        sub_noise = {k: v[sub] for k, v in noise.items()} if noise else None
        synth = G.synthesis(ws, noise_mode='const', dtype=dtype, fused_modconv=cfg.fused_modconv,
                            noise_inputs=noise_inputs(sub_noise))
        terms = loss_fn(synth, sub)
        if noise:
            terms['total'] = terms['total'] + cfg.regularize_noise_weight * noise_regularization(sub_noise)
        grads = torch.autograd.grad(terms['total'].sum(), params, allow_unused=True)
        for p, g in zip(params, grads):
            if g is not None:
                p.grad += g
        synths.append(synth.detach())
        parts.append({k: v.detach() for k, v in terms.items()})
    return torch.cat(synths), {k: torch.cat([part[k] for part in parts]) for k in parts[0]}


def _init_variables(G, cfg, N, w_avg, init_ws, gens, device, start_noise=None):
    """w_opt [N, 1 or num_ws, w_dim] (leaf, fp32) and the noise maps (or None)."""
    rows = 1 if cfg.space == 'w' else G.num_ws
    if init_ws is None:
        w = w_avg.to(device).reshape(1, 1, G.w_dim).repeat(N, rows, 1)
    else:
        w = torch.as_tensor(init_ws, dtype=torch.float32).to(device)
        if w.ndim == 2:
            w = w[:, None, :]
        if w.shape[0] != N or w.shape[2] != G.w_dim or w.shape[1] not in (1, G.num_ws):
            raise ValueError(f'init_ws has shape {list(w.shape)}; expected [{N}, {G.num_ws} or 1, {G.w_dim}]')
        w = w.mean(dim=1, keepdim=True) if rows == 1 else w.expand(N, rows, -1)
    w_opt = w.clone().detach().requires_grad_(True)
    noise = None
    if cfg.optimize_noise and noise_layers(G):
        noise = init_noise(G, gens, device) if start_noise is None else \
            {k: v.detach().clone().to(device) for k, v in start_noise.items()}
        for v in noise.values():
            v.requires_grad_(True)
    return w_opt, noise


@torch.no_grad()
def _restore_frozen(params, values, frozen):
    """Undo Adam's (momentum-driven) update on images that already met the early-stop threshold."""
    for p, v in zip(params, values):
        p[frozen.to(p.device)] = v[frozen.to(p.device)]


def _record(history, step, index, per_image, terms):
    cols = index.cpu().numpy()
    history['loss'][step, cols] = per_image.detach().float().cpu().numpy()
    for key in ('lpips', 'mse'):
        if key in terms:
            history[key][step, cols] = terms[key].detach().float().cpu().numpy()


@torch.no_grad()
def _finish(G, cfg, w_opt, noise, target, lpips_model, identity_model, steps_run, history, notes, micro_batch):
    """Render the result in fp32 without latent noise and measure each image, `micro_batch` at a time."""
    ws = w_opt.detach().expand(-1, G.num_ws, -1).contiguous()
    synth = render(G, ws, noise, fused_modconv=cfg.fused_modconv, batch_size=micro_batch)
    final = dict(mse=(synth - target).square().mean(dim=[1, 2, 3]))
    parts = chunks(len(ws), micro_batch)
    if lpips_model is not None:
        final['lpips'] = torch.cat([LPIPSDistance(lpips_model, target[sl], cfg.lpips_resolution)(synth[sl]) for sl in parts])
    if identity_model is not None:
        embed = lambda img: F.normalize(identity_model(img).float(), dim=1)
        final['identity'] = torch.cat([(embed(synth[sl]) * embed(target[sl])).sum(dim=1) for sl in parts])  # cosine
    metrics = []
    for k in range(ws.shape[0]):
        m = dict(lpips=None, mse=None, identity=None, steps=int(steps_run[k]),
                 stopped_early=bool(steps_run[k] < cfg.num_steps))
        m.update({key: float(v[k]) for key, v in final.items()})
        metrics.append(m)
    noise_out = {k: v.detach().float().cpu() for k, v in noise.items()} if noise else None
    return ProjectionResult(ws=ws.float().cpu(), noise=noise_out, images=to_uint8(synth), metrics=metrics,
                            history=history, notes=notes)


def check_finite_result(what, ws, noise=None, metrics=None):
    """Raise errors.DivergenceError naming `what` when one image's latent, noise maps or measured losses
    are NaN or infinite: a diverged projection is a failure, never a result."""
    numbers = [v for v in (metrics or {}).values() if isinstance(v, float)]
    check_finite(what, ws, *(noise or {}).values(), *numbers)


def measure(G, ws, targets, cfg=None, lpips_model=None, identity_model=None):
    """ProjectionResult of given latents ws [N, num_ws, w_dim] (an encoder's), without optimisation: the fp32
    render with G's own noise buffers and the same per-image metrics as `project` (steps 0)."""
    cfg = (cfg or ProjectConfig()).check()
    device = misc.device_of(G)
    target = targets_to_float(targets, G, device)
    N = target.shape[0]
    micro_batch = cfg.micro_batch or auto_micro_batch(G, N, device)
    history = {k: np.zeros([0, N], dtype=np.float32) for k in ('loss', 'lpips', 'mse')}
    result = _finish(G, cfg, ws.to(device), None, target, lpips_model, identity_model, np.zeros(N, dtype=int), history,
                     [], micro_batch)
    for m in result.metrics:
        m['stopped_early'] = False
    return result


# ----------------------------------------------------------------------------
# (Saved noise maps are read by models.latents.load_projected_noise.)
