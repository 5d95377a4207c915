"""Train an encoder (image -> W+) for any generator this project loads, without a dataset.

Pairs come from the generator itself, as pSp/e4e train on FFHQ but with the ground-truth latent known:
sample z, map to w, truncate towards the mean w with a per-sample psi, mix two w's at a random W+ row
(style mixing, Karras et al. 2019 Section 3.1), render with G's constant noise, and learn image -> W+ with

    loss = latent_weight * |W+_pred - W+|^2 / w_std^2      (mean over rows; ~1 for the mean-w guess)
         + mse_weight * MSE(G(W+_pred), image) + lpips_weight * LPIPS(G(W+_pred), image)

(pSp's L2 + LPIPS reconstruction terms, Richardson et al. 2021 Eq. 2-4, plus the latent term that synthetic
pairs allow). LPIPS runs when its VGG weights are present, else the run says so and uses MSE only. With
`photos`, a domain-adaptation phase follows: half of each batch are real photos, image loss only.

The architecture is sized to the generator (`encoder_architecture`): a small conv encoder for <= 128^2
(and for w_dim != 512), pSp's IR-SE-50 GradualStyleEncoder (or e4e's) at 256^2 and up. The encoder predicts
offsets from the mapping's mean w (latent_avg), as both papers start from it.

Run directory (rank 0 writes it):
    training_options.json, log.txt, stats.jsonl
    val-<TAG>.png                       held-out targets (top row) and reconstructions (bottom row)
    encoder-snapshot-<TAG>.safetensors  the encoder (`projectors.encoder.save_trained_encoder`)
    training-state-<TAG>.pt             Adam state and counters: exact resume
    encoder.safetensors                 the final encoder
Sample i of the run depends only on (seed, i) (per-sample RandomState), so a resumed run computes exactly
what the uninterrupted run computes, and under torchrun rank r takes samples r, r + world, ... of a batch;
gradients are summed over ranks (the loss is a sum over samples / batch). BatchNorm (IR-SE only) sees
each rank's share.
"""

import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import torch
from pstyle.metrics.lpips_utils import LPIPSWeightsError
from pstyle.metrics.weights import ARCFACE_IRSE50, file_sha256, load_tensors
from pstyle.models import deltas
from pstyle.models.checkpoint import load_network
from pstyle.models.irse import IRTrunk
from pstyle.projectors import encoder as E
from pstyle.projectors import projector as P
from pstyle.projectors.project_folder import load_target
from pstyle.torch_utils.folder_run import list_inputs
from pstyle.torch_utils import distributed
from pstyle.training import run_dir as rd

ARCHS = ('auto', 'small', 'psp', 'e4e')
VAL_STREAM = 2 ** 32 - 1            # Held-out samples: RandomState([seed, VAL_STREAM, k]), never a training draw.


@dataclasses.dataclass
class EncoderTrainConfig:
    network:        str                 # Generator: file, URL or short name.
    outdir:         str = 'encoder-runs'
    kimg:           float = 50          # Synthetic pairs seen, in thousands.
    batch:          int = 16            # Total batch (over all ranks).
    lr:             float = None        # Adam; None = 1e-3 (small) or 1e-4 (IR-SE, pSp's).
    seed:           int = 0
    arch:           str = 'auto'        # ARCHS.
    psi_min:        float = 0.5         # Truncation psi ~ U(psi_min, 1) per sample.
    mixing_prob:    float = 0.5         # Probability of mixing two w's at a random row.
    latent_weight:  float = 1.0
    mse_weight:     float = 1.0
    lpips_weight:   float = 0.8         # 0 = off; used only when the LPIPS weights are present.
    photos:         str = None          # Folder of aligned photos for the domain-adaptation phase.
    arcface:        str = None          # model_ir_se50.pth: initial IR-SE-50 trunk (pSp/e4e), psp/e4e only.
    photo_kimg:     float = None        # Its length; None = kimg / 4 when photos are given.
    tick_kimg:      float = 1.0         # Log and stats every tick.
    snap_ticks:     int = 10            # Snapshot and validation grid every this many ticks.
    val_samples:    int = 8             # Held-out samples in the validation grid and error.
    device:         str = 'auto'
    desc:           str = None

    def check(self):
        if self.arch not in ARCHS:
            raise ValueError(f'arch must be one of {", ".join(ARCHS)}, got {self.arch!r}')
        if self.kimg <= 0 or self.batch < 1 or self.tick_kimg <= 0 or self.snap_ticks < 1 or self.val_samples < 1:
            raise ValueError('kimg, tick_kimg must be > 0 and batch, snap_ticks, val_samples >= 1')
        if not 0 <= self.psi_min <= 1 or not 0 <= self.mixing_prob <= 1:
            raise ValueError(f'psi_min and mixing_prob must be in [0, 1], got {self.psi_min}, {self.mixing_prob}')
        if min(self.latent_weight, self.mse_weight, self.lpips_weight) < 0:
            raise ValueError('loss weights must be >= 0')
        return self

    def total_nimg(self):
        photo = (self.kimg / 4 if self.photo_kimg is None else self.photo_kimg) if self.photos else 0
        return int(round((self.kimg + photo) * 1000))


def encoder_architecture(G, arch='auto'):
    """(arch name, JSON kwargs, input size) of the encoder for G."""
    if arch == 'auto':
        arch = 'small' if G.img_resolution <= 128 or G.w_dim != 512 else 'psp'
    if arch == 'small':
        size = int(min(max(G.img_resolution, 8), 128))
        return 'SmallEncoder', dict(num_ws=G.num_ws, w_dim=G.w_dim, input_size=size, input_nc=G.img_channels), size
    if G.w_dim != 512:
        raise ValueError(f'--arch {arch}: the IR-SE-50 encoders predict 512-dim rows; this generator has w_dim {G.w_dim} '
                         f'(use --arch small)')
    name = 'GradualStyleEncoder' if arch == 'psp' else 'Encoder4Editing'
    return name, dict(n_styles=G.num_ws, input_nc=G.img_channels, se=True), 256


def init_from_arcface(net, path):
    """Copy ArcFace's IR-SE-50 trunk (`model_ir_se50.pth`: `input_layer.*`, `body.*`) into a pSp/e4e encoder, as
    pSp and e4e start training (their `load_weights` with `strict=False`); the heads keep their random init. The
    input layer is skipped when the encoder's input channels are not 3. Returns the number of tensors copied."""
    own = net.state_dict()
    if not isinstance(net, IRTrunk):
        raise ValueError(f'--arcface {path}: initialises the IR-SE-50 trunk of --arch psp or e4e; this encoder '
                         f'({type(net).__name__}) has none')
    state = {k.removeprefix('module.'): v for k, v in load_tensors(path, ARCFACE_IRSE50).items()}
    wanted = [k for k in own if k.startswith('body.') or (k.startswith('input_layer.') and
                                                          own['input_layer.0.weight'].shape[1] == 3)]
    for k in wanted:
        if k not in state and not k.endswith('num_batches_tracked'):
            raise ValueError(f'--arcface {path}: not an ArcFace IR-SE-50 state_dict: it lacks {k} (expected '
                             f'model_ir_se50.pth as distributed with pSp/e4e)')
        if k in state and tuple(state[k].shape) != tuple(own[k].shape):
            raise ValueError(f'--arcface {path}: {k} has shape {list(state[k].shape)}, the encoder needs '
                             f'{list(own[k].shape)} (IR-SE-50 expected, not IR-50 or IR-100)')
    net.load_state_dict({k: state[k] for k in wanted if k in state}, strict=False)
    return sum(k in state for k in wanted)


# ----------------------------------------------------------------------------
# Synthetic pairs.

@torch.no_grad()
def sample_ws(G, indices, seed, w_mean, psi_min=0.5, mixing_prob=0.5, stream=()):
    """W+ [n, num_ws, w_dim] for sample indices: sample i depends only on (seed, *stream, i)."""
    zs, psis, cuts = [], [], []
    for i in indices:
        rs = np.random.RandomState([seed, *stream, int(i)])
        zs.append(rs.randn(2, G.z_dim))
        psis.append(rs.uniform(psi_min, 1.0))
        cuts.append(rs.randint(1, G.num_ws) if G.num_ws > 1 and rs.uniform() < mixing_prob else G.num_ws)
    device = w_mean.device
    z = torch.from_numpy(np.stack(zs)).to(device, torch.float32)                # [n, 2, z_dim]
    w = G.mapping(z.flatten(0, 1), None, truncation_psi=1).unflatten(0, (len(indices), 2))  # [n, 2, num_ws, w_dim]
    psi = torch.tensor(psis, dtype=torch.float32, device=device)[:, None, None, None]
    w = w_mean + psi * (w - w_mean)                                            # Truncation (Karras et al. 2019, Eq. 3).
    rows = torch.arange(G.num_ws, device=device)[None, :]
    first = rows < torch.tensor(cuts, device=device)[:, None]                  # [n, num_ws]
    return torch.where(first[:, :, None], w[:, 0], w[:, 1])


def render(G, ws):
    return G.synthesis(ws, noise_mode='const', force_fp32=True)


class Losses:
    """The weighted per-sample terms; `lpips` is an LPIPS model or None."""

    def __init__(self, cfg, w_std, lpips_model):
        self.cfg, self.w_var, self.lpips = cfg, w_std ** 2, lpips_model

    def image(self, synth, target):
        terms = dict(mse=(synth - target).square().mean(dim=[1, 2, 3]))
        if self.lpips is not None and self.cfg.lpips_weight > 0:
            terms['lpips'] = self.lpips(P.lpips_input(synth), P.lpips_input(target)).flatten()
        return terms

    def __call__(self, G, ws_pred, target, ws_true=None):
        """{term: [n]} and 'total' [n]; ws_true None = a real photo (image terms only)."""
        terms = self.image(render(G, ws_pred), target)
        if ws_true is not None:
            terms['latent'] = (ws_pred - ws_true).square().sum(dim=2).mean(dim=1) / self.w_var
        weights = dict(latent=self.cfg.latent_weight, mse=self.cfg.mse_weight, lpips=self.cfg.lpips_weight)
        terms['total'] = sum(weights[k] * v for k, v in terms.items())
        return terms


# ----------------------------------------------------------------------------
# The run.

def train_encoder(cfg=None, resume=None, kimg=None, log=print, progress=None, max_steps=None, photo_kimg=None):
    """Train per `cfg` (EncoderTrainConfig), or continue the run directory `resume` exactly with its own options
    (`kimg`, `photo_kimg` extend it or its photo phase). Returns the final encoder path (rank 0) or None. progress: a
    `torch_utils.progress.reporter` factory or None. max_steps: stop after this many steps, with a snapshot."""
    device_name = _saved_options(resume).device if resume is not None else cfg.device if cfg is not None else 'auto'
    device = distributed.init_from_env(None if device_name == 'auto' else device_name)  # Before the run dir is chosen.
    cfg, run_dir, state = _setup(cfg, resume, kimg, photo_kimg)
    run, nimg, note = _build_run(cfg, run_dir, state, device)
    G, net, main, (arch, _, input_size) = run['G'], run['encoder'].net, run['main'], run['arch']
    rlog = rd.RunLog(run_dir, enabled=main, echo=False)
    say = (lambda m: (rlog.log(m), log(m))) if main else (lambda m: None)
    if note:
        say(f'note: {note}')
    val = _validation_set(G, cfg, run['w_mean'])
    say(f'{arch} encoder ({sum(p.numel() for p in net.parameters()):,} parameters, input {input_size}^2) for '
        f'{cfg.network} ({G.img_resolution}^2, {G.num_ws} W+ rows); {"resumed at" if nimg else "from"} {nimg} img; '
        f'run dir {run_dir}')
    total, tick_img = cfg.total_nimg(), max(1, int(cfg.tick_kimg * 1000))
    steps = 0
    tick_start, tick_nimg, tick_losses = time.time(), nimg, []
    bar = progress(max(0, -(-(total - nimg) // cfg.batch)), 'train-encoder') if progress and main else None
    while nimg < total and (max_steps is None or steps < max_steps):
        terms = _step(run, nimg)
        nimg += cfg.batch
        steps += 1
        tick_losses.append(terms)
        if bar is not None:
            bar.update(loss=terms['total'])
        done = nimg >= total or (max_steps is not None and steps >= max_steps)
        if nimg // tick_img > tick_nimg // tick_img or done:
            tick = nimg // tick_img
            snap = done or tick % cfg.snap_ticks == 0
            _tick(run, rlog, say, nimg, tick_losses, time.time() - tick_start, val if snap else None)
            if snap and main:
                _snapshot(run, nimg, val)
            tick_start, tick_nimg, tick_losses = time.time(), nimg, []
    if bar is not None:
        bar.close()
    rlog.close()
    if not main:
        return None
    final = run_dir / 'encoder.safetensors'
    _save_encoder(run, final, nimg)
    say(f'encoder saved to {final}')
    return final


def _build_run(cfg, run_dir, state, device):
    """(run dict: G, encoder, Adam, losses, ...; images done so far; a note or None) of this process."""
    rank, world = distributed.get_rank(), distributed.get_world_size()
    main = rank == 0
    G = load_network(cfg.network, device=device)['G_ema']
    w_mean, w_std = P.compute_w_stats(G, 10000, device=device)
    arch, arch_kwargs, input_size = encoder_architecture(G, cfg.arch)
    torch.manual_seed(cfg.seed)                                                # Initial weights.
    net = E.build_architecture(arch, arch_kwargs).to(device).train()
    latent_avg = w_mean.reshape(1, G.w_dim).repeat(G.num_ws, 1)
    encoder = E.Encoder(net, latent_avg, encoder_type=arch, input_size=input_size, input_nc=G.img_channels,
                        kind='pstyle').to(device)
    if cfg.arcface and state is None:                                          # A resumed run has its own weights.
        init_from_arcface(net, cfg.arcface)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr or (1e-3 if arch == 'SmallEncoder' else 1e-4))
    nimg = 0
    if state is not None:
        nimg = _restore(encoder, opt, state)
    lpips_model, note = _lpips(cfg, device)
    record = dict(source=str(cfg.network), sha256=_file_sha(cfg.network), weights_sha256=deltas.weights_sha256(G),
                  img_resolution=G.img_resolution, num_ws=G.num_ws, w_dim=G.w_dim)
    photos = _load_photos(cfg.photos, G) if cfg.photos else None
    losses = Losses(cfg, w_std, lpips_model)
    run = dict(cfg=cfg, G=G, encoder=encoder, opt=opt, losses=losses, w_mean=w_mean, photos=photos, rank=rank, world=world,
               run_dir=run_dir, record=record, arch=(arch, arch_kwargs, input_size), main=main)
    return run, nimg, note


def _setup(cfg, resume, kimg=None, photo_kimg=None):
    """(cfg, run dir, training state or None): a new run dir, or the resumed run's options and newest state."""
    if resume is None:
        if cfg is None:
            raise ValueError('give a generator to train an encoder for (--network), or --resume a run directory')
        cfg = dataclasses.replace(cfg, kimg=kimg or cfg.kimg).check()
        desc = 'encoder-' + Path(str(cfg.network)).stem + (f'-{cfg.desc}' if cfg.desc else '')
        path = rd.next_run_dir(cfg.outdir, desc) if distributed.is_main() else None
        run_dir = Path(distributed.broadcast_object(str(path)))
        if distributed.is_main():
            run_dir.mkdir(parents=True, exist_ok=True)
            rd.write_json(run_dir / 'training_options.json', dataclasses.asdict(cfg))
        return cfg, run_dir, None
    run_dir = Path(resume)
    saved = _saved_options(run_dir)
    if kimg is not None:
        saved.kimg = kimg                                                      # Extend (or shorten) the run.
    if photo_kimg is not None:
        if not saved.photos:
            raise ValueError(f'--resume {run_dir}: --photo-kimg extends the photo phase, but this run has none (--photos)')
        saved.photo_kimg = photo_kimg                                          # ... or its photo phase.
    states = sorted(run_dir.glob('training-state-*.pt'), key=lambda p: _state_nimg(p))
    if not states:
        raise ValueError(f'--resume {run_dir}: no snapshot yet (training-state-*.pt)')
    return saved.check(), run_dir, rd.load_training_state(states[-1])


def _saved_options(run_dir):
    options = Path(run_dir) / 'training_options.json'
    if not options.is_file():
        raise ValueError(f'--resume {run_dir}: not an encoder run directory (no training_options.json)')
    try:
        return EncoderTrainConfig(**json.loads(options.read_text()))
    except (TypeError, ValueError) as e:
        raise ValueError(f'--resume {run_dir}: {options.name} is not an encoder run\'s options ({e})') from None


def _state_nimg(path):
    return rd.snapshot_nimg(path.name.replace('training-state-', 'network-snapshot-'))


def _restore(encoder, opt, state):
    encoder.net.load_state_dict(state['net'])
    opt.load_state_dict(state['opt'])
    return int(state['nimg'])


def _lpips(cfg, device):
    if cfg.lpips_weight == 0:
        return None, None
    try:
        return P.default_lpips(device).requires_grad_(False), None
    except LPIPSWeightsError as e:
        return None, f'image loss is MSE only: LPIPS weights not found ({e})'


def _file_sha(network):
    return file_sha256(network) if Path(str(network)).is_file() else None


def _load_photos(photos, G):
    """uint8 [M, C, H, W] at G's resolution (centre-cropped); unreadable files are an error naming them."""
    images = [load_target(p, G.img_resolution, G.img_channels, crop='center') for p in list_inputs(photos)]
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()


def _validation_set(G, cfg, w_mean):
    ws = sample_ws(G, range(cfg.val_samples), cfg.seed, w_mean, cfg.psi_min, cfg.mixing_prob, stream=(VAL_STREAM,))
    with torch.no_grad():
        images = render(G, ws)
        baseline = render(G, w_mean.reshape(1, 1, -1).expand(1, G.num_ws, -1))
    return dict(ws=ws, images=images, baseline_mse=float((baseline - images).square().mean()))


def _step(run, nimg):
    """One optimizer step on batch [nimg, nimg + batch) (this rank's share); returns the batch-mean terms."""
    cfg, G, encoder, opt = run['cfg'], run['G'], run['encoder'], run['opt']
    mine = list(range(nimg, nimg + cfg.batch))[run['rank']::run['world']]
    photo_phase = run['photos'] is not None and nimg >= cfg.kimg * 1000
    synthetic = mine[:len(mine) - len(mine) // 2] if photo_phase else mine
    ws_true = sample_ws(G, synthetic, cfg.seed, run['w_mean'], cfg.psi_min, cfg.mixing_prob)
    with torch.no_grad():
        images = render(G, ws_true)
    terms = run['losses'](G, encoder(images), images, ws_true)
    total = terms['total'].sum()
    if photo_phase and len(mine) > len(synthetic):
        photos = _photo_batch(run, mine[len(synthetic):])
        photo_terms = run['losses'](G, encoder(photos), photos)
        total = total + photo_terms['total'].sum()
    opt.zero_grad(set_to_none=True)
    (total / cfg.batch).backward()
    _sum_gradients(encoder.net)
    opt.step()
    return {k: float(v.detach().mean()) for k, v in terms.items()}


def _photo_batch(run, indices):
    """Photos for sample indices: photo (seed, i) -> a uniform draw, float [-1, 1] on G's device."""
    photos = run['photos']
    pick = [np.random.RandomState([run['cfg'].seed, 1, int(i)]).randint(len(photos)) for i in indices]
    return photos[pick].to(run['w_mean'].device, torch.float32) / 127.5 - 1


def _sum_gradients(net):
    if distributed.get_world_size() > 1:
        grads = [p.grad for p in net.parameters() if p.grad is not None]
        flat = distributed.all_reduce_sum(torch.cat([g.flatten() for g in grads]))
        for g, part in zip(grads, flat.split([g.numel() for g in grads])):
            g.copy_(part.view_as(g))


def _tick(run, rlog, say, nimg, tick_losses, seconds, val):
    means = {k: float(np.mean([t[k] for t in tick_losses if k in t])) for k in tick_losses[0]}
    stats = {f'Loss/{k}': v for k, v in means.items()}
    line = f'kimg {nimg / 1000:.3f}  ' + '  '.join(f'{k} {v:.4f}' for k, v in means.items())
    line += f'  {seconds / max(len(tick_losses), 1):.3f} s/step'
    if val is not None and run['main']:
        mse = validate(run['encoder'], run['G'], val['images'])[0]
        stats.update({'Val/mse': mse, 'Val/baseline_mse': val['baseline_mse'], 'Val/ratio': mse / val['baseline_mse']})
        line += f'  val mse {mse:.4f} (latent_avg {val["baseline_mse"]:.4f}, ratio {mse / val["baseline_mse"]:.3f})'
    rlog.stats(dict(stats, **{'Progress/kimg': nimg / 1000}), nimg)
    say(line)


@torch.no_grad()
def validate(encoder, G, images):
    """(image MSE of G(encoder(images)) to images, reconstructions): the held-out reconstruction error."""
    was_training = encoder.training
    encoder.eval()
    recon = render(G, encoder(images))
    encoder.train(was_training)
    return float((recon - images).square().mean()), recon


def _snapshot(run, nimg, val):
    tag = rd.snapshot_tag(nimg)
    run_dir = run['run_dir']
    _, recon = validate(run['encoder'], run['G'], val['images'])
    grid = rd.to_uint8(torch.cat([val['images'], recon]))                     # Top row targets, bottom row recon.
    rd.save_image_grid(grid, run_dir / f'val-{tag}.png', (len(val['images']), 2))
    rd.save_training_state(run_dir / f'training-state-{tag}.pt',
                           dict(nimg=nimg, net=run['encoder'].net.state_dict(), opt=run['opt'].state_dict()))
    _save_encoder(run, run_dir / f'encoder-snapshot-{tag}.safetensors', nimg)


def _save_encoder(run, path, nimg):
    arch, arch_kwargs, input_size = run['arch']
    G, cfg = run['G'], run['cfg']
    config = dict(arch=arch, arch_kwargs=arch_kwargs, num_ws=G.num_ws, w_dim=G.w_dim, input_size=input_size,
                  input_nc=G.img_channels, generator=run['record'],
                  training=dict(nimg=nimg, seed=cfg.seed, lpips=run['losses'].lpips is not None, photos=cfg.photos))
    return E.save_trained_encoder(path, run['encoder'].net, run['encoder'].latent_avg, config)
