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
import fnmatch
import json
import time
from pathlib import Path

import numpy as np
import torch

from projectors import projector as P
from torch_utils import misc

DELTA_FORMAT = 'pstyle-pti-delta'
DELTA_VERSION = 1
DELTA_DTYPES = {'fp32': torch.float32, 'fp16': torch.float16, 'bf16': torch.bfloat16}


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
    trainable:                          tuple = ('synthesis.*',)  # Glob patterns over G's parameter names.
    lpips_resolution:                   int = 256
    precision:                          str = 'fp32'
    seed:                               int = 0
    delta_dtype:                        str = 'fp32'    # Storage of the weight delta: fp32, fp16 or bf16.

    def check(self):
        if int(self.num_steps) != self.num_steps or self.num_steps < 1:
            raise ValueError(f'PTI num_steps must be a positive integer, got {self.num_steps}')
        if self.learning_rate <= 0:
            raise ValueError(f'PTI learning_rate must be > 0, got {self.learning_rate}')
        if self.locality_regularization_interval < 1 or self.latent_ball_num_of_samples < 1:
            raise ValueError('locality_regularization_interval and latent_ball_num_of_samples must be >= 1')
        if self.delta_dtype not in DELTA_DTYPES:
            raise ValueError(f'delta_dtype must be one of {", ".join(DELTA_DTYPES)}, got {self.delta_dtype!r}')
        if self.precision not in P.PRECISIONS:
            raise ValueError(f'precision must be one of {P.PRECISIONS}, got {self.precision!r}')
        if isinstance(self.trainable, str):
            self.trainable = tuple(p.strip() for p in self.trainable.split(',') if p.strip())
        if not self.trainable:
            raise ValueError('trainable: give at least one parameter-name pattern, e.g. "synthesis.*"')
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


def trainable_names(G, patterns):
    """Parameter names of G matching any glob pattern; an error when none does."""
    names = [n for n, _ in G.named_parameters() if any(fnmatch.fnmatchcase(n, p) for p in patterns)]
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


def tune(G, target, ws, noise=None, cfg=None, lpips_model=None, callback=None):
    """Fine-tune a copy of G on one image around its pivot. Returns (G_tuned, info dict).

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
    G_tuned = copy.deepcopy(G).eval().requires_grad_(False)
    names = trainable_names(G_tuned, cfg.trainable)
    params = dict(G_tuned.named_parameters())
    tuned = [params[n].requires_grad_(True) for n in names]
    opt = torch.optim.Adam(tuned, lr=cfg.learning_rate)
    lpips_target = P.LPIPSDistance(lpips_model, target, cfg.lpips_resolution) if lpips_model is not None else None
    generator = torch.Generator().manual_seed(int(cfg.seed))
    history, steps = [], cfg.num_steps
    for step in range(cfg.num_steps):
        with P._autocast(device, cfg.precision):
            synth = G_tuned.synthesis(pivot, noise_mode='const', dtype=dtype, fused_modconv=False,
                                      noise_inputs=P.noise_inputs(noise))
            l2 = (synth.float() - target).square().mean()
            lp = lpips_target(synth)[0] if lpips_target is not None else torch.zeros([], device=device)
            loss = cfg.l2_weight * l2 + cfg.lpips_weight * lp
            if cfg.use_locality_regularization and step % cfg.locality_regularization_interval == 0:
                loss = loss + locality_loss(G_orig, G_tuned, pivot, cfg, lpips_model, generator, dtype)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        history.append(dict(loss=float(loss.detach()), l2=float(l2.detach()), lpips=float(lp.detach())))
        if callback is not None:
            callback(step, synth.detach())
        if cfg.early_stop_lpips is not None and lpips_target is not None and float(lp.detach()) < cfg.early_stop_lpips:
            steps = step + 1
            break
    G_tuned.requires_grad_(False)
    return G_tuned, dict(steps=steps, trainable=names, history=history)


def tune_and_save(G, target, ws, noise, cfg, lpips_model, path, base_sha256, meta=None):
    """`tune` one image, then write its delta to `path` (see `save_delta`).

    Returns (G_tuned, dict(steps, seconds, delta_bytes)); `base_sha256` is `projector.weights_sha256(G)`.
    """
    start = time.time()
    G_tuned, info = tune(G, target, ws, noise, cfg, lpips_model)
    delta = compute_delta(G, G_tuned, cfg.delta_dtype)
    save_delta(path, delta, base_sha256, meta)
    return G_tuned, dict(steps=info['steps'], seconds=time.time() - start, delta_bytes=delta_nbytes(delta))


def locality_loss(G_orig, G_tuned, pivot, cfg, lpips_model, generator, dtype):
    """Eq. 4: L2 and LPIPS between the tuned and original G at latents near the pivot (noise off, as PTI)."""
    w_r = morphed_ws(G_orig, pivot, cfg, generator)
    with torch.no_grad():
        old = G_orig.synthesis(w_r, noise_mode='none', dtype=dtype, fused_modconv=False).float()
    new = G_tuned.synthesis(w_r, noise_mode='none', dtype=dtype, fused_modconv=False).float()
    loss = cfg.regularizer_l2_weight * (new - old).square().mean()
    if lpips_model is not None and cfg.regularizer_lpips_weight > 0:
        loss = loss + cfg.regularizer_lpips_weight * P.LPIPSDistance(lpips_model, old, cfg.lpips_resolution)(new).mean()
    return loss  # PTI divides its sum over samples by their count: the means above already average


# ----------------------------------------------------------------------------
# Weight deltas.

@torch.no_grad()
def compute_delta(G_base, G_tuned, dtype='fp32'):
    """{name: tuned - base} for every parameter that changed, stored in `dtype` (fp32, fp16, bf16)."""
    if dtype not in DELTA_DTYPES:
        raise ValueError(f'delta dtype must be one of {", ".join(DELTA_DTYPES)}, got {dtype!r}')
    base = dict(G_base.named_parameters())
    delta = {}
    for name, tensor in G_tuned.named_parameters():
        if name not in base or base[name].shape != tensor.shape:
            raise ValueError(f'the tuned network does not match the base network at {name}')
        if not torch.equal(tensor, base[name]):
            delta[name] = (tensor.float() - base[name].float()).to(DELTA_DTYPES[dtype]).cpu().contiguous()
    return delta


@torch.no_grad()
def apply_delta(G, delta, base_sha256=None):
    """Add a delta to G's parameters in place (checks the base network when `base_sha256` is given)."""
    if base_sha256 is not None:
        actual = P.weights_sha256(G)
        if actual != base_sha256:
            raise ValueError(f'this delta was made for the network with weights sha256 {base_sha256[:16]}..., '
                             f'but the given network has {actual[:16]}...: load the same base network')
    params = dict(G.named_parameters())
    bad = [n for n in delta if n not in params or params[n].shape != delta[n].shape]
    if bad:
        raise ValueError(f'the delta does not fit this network: {", ".join(bad[:5])}')
    for name, d in delta.items():
        p = params[name]
        p.copy_((p.float() + d.to(p.device, torch.float32)).to(p.dtype))
    return G


def save_delta(path, delta, base_sha256, meta=None):
    """Write a delta as `.safetensors` (default) or `.pt` (a plain dict, loadable with weights_only)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    info = dict(format=DELTA_FORMAT, version=DELTA_VERSION, base_weights_sha256=base_sha256, meta=meta or {})
    tmp = path.with_name(path.name + '.tmp')
    if path.suffix == '.pt':
        torch.save(dict(info=json.dumps(info), delta=delta), tmp)
    else:
        from safetensors.torch import save_file  # noqa: PLC0415
        save_file(delta, str(tmp), metadata=dict(pstyle=json.dumps(info)))
    tmp.replace(path)
    return path


def load_delta(path):
    """(delta {name: tensor}, info dict with base_weights_sha256 and meta) from `save_delta`'s file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f'{path}: no such PTI delta file')
    try:
        if path.suffix == '.pt':
            payload = torch.load(path, map_location='cpu', weights_only=True)
            info, delta = json.loads(payload['info']), payload['delta']
        else:
            from safetensors import safe_open  # noqa: PLC0415
            with safe_open(str(path), framework='pt') as f:
                info = json.loads((f.metadata() or {})['pstyle'])
                delta = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # noqa: BLE001 -- any decoding problem is the same error for the user
        raise ValueError(f'{path}: not a PTI delta file ({type(e).__name__}: {e})') from e
    if info.get('format') != DELTA_FORMAT:
        raise ValueError(f'{path}: not a PTI delta file (format {info.get("format")!r})')
    return delta, info


def load_tuned_generator(G, path):
    """A copy of G with the PTI delta at `path` applied (the base network is checked)."""
    delta, info = load_delta(path)
    return apply_delta(copy.deepcopy(G), delta, base_sha256=info['base_weights_sha256'])


def delta_paths(latents_path, names):
    """{name: PTI delta file} for the latents of a `pstyle project` or `pstyle stylize` run.

    `pstyle project` lists each image's delta in the metrics.json beside latents.npz; `pstyle stylize`
    names them pti/<name>.safetensors there. A name without a delta is an error naming it.
    """
    folder = Path(latents_path).parent
    listed = {}
    if (folder / 'metrics.json').is_file():
        images = json.loads((folder / 'metrics.json').read_text()).get('images', {})
        listed = {n: folder / e['pti']['delta'] for n, e in images.items() if isinstance(e.get('pti'), dict)}
    paths = {n: listed.get(n, folder / 'pti' / f'{Path(n).stem}.safetensors') for n in names}
    missing = [n for n, p in paths.items() if not p.is_file()]
    if missing:
        raise FileNotFoundError(f'no PTI delta for {", ".join(missing[:5])} beside {latents_path} '
                                f'(project with --pti or --preset best, or render without --pti)')
    return paths


def delta_nbytes(delta):
    return int(sum(t.numel() * t.element_size() for t in delta.values()))


def pti_metrics(G_tuned, target, ws, noise, lpips_model, resolution=256):
    """Final fp32 LPIPS / MSE of the tuned generator's render of the pivot, and the render (uint8)."""
    from training.generate import to_uint8  # noqa: PLC0415
    device = misc.device_of(G_tuned)
    target = P.targets_to_float(torch.as_tensor(target).reshape(1, *np.shape(target)[-3:]), G_tuned, device)
    synth = P.render(G_tuned, torch.as_tensor(ws).reshape(1, G_tuned.num_ws, G_tuned.w_dim), noise)
    out = dict(mse=float((synth - target).square().mean()), lpips=None)
    if lpips_model is not None:
        out['lpips'] = float(P.LPIPSDistance(lpips_model, target, resolution)(synth)[0])
    return out, to_uint8(synth)[0]
