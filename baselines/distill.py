"""A feed-forward portrait network distilled from a blended StyleGAN (the production answer of Toonify,
Pinkney & Adler 2020): a ResnetGenerator trained on pairs rendered from shared latents,

    input  = A(w)            the base generator (what an aligned photo looks like to it)
    target = blend(A, B)(w)  the generator `pstyle stylize` renders the photo's latent with (same spec)

with loss = l1_weight * |G(input) - target|_1 + lpips_weight * LPIPS (when its weights are present)
+ gan_weight * LSGAN of a conditional 70x70 PatchGAN on (input, output) (pix2pix, Isola et al. 2017 Eq. 4).
The blended generator is `stylize.pipeline.load_models`' (the same blending and delta code as stylize).
Sample k's latent is z = RandomState([seed, k]).randn(z_dim) through A's mapping (truncation psi), so pairs
depend on (seed, k) alone: exact resume and torchrun come from `translator_train`. Held-out latents
(stream VAL) measure the student against the teacher and against the identity mapping in log.jsonl.

Files: `net_G.pth` (a plain ResnetGenerator state_dict: `pstyle cyclegan --checkpoint` and `load_cyclegan`
load it) and `net_G.pth.json` (format `pstyle-distilled`: base and styled sha256, spec, weights, training).
"""

import dataclasses

import numpy as np
import torch

from pstyle.baselines import translator_train as tt
from pstyle.baselines.cyclegan import ResnetGenerator
from pstyle.baselines.cyclegan_train import l1
from pstyle.baselines.patchgan import NLayerDiscriminator, init_weights, lsgan_loss, min_size
from pstyle.models import render as gen
from pstyle.projectors.invert import optional_lpips
from pstyle.projectors.projector import lpips_input
from pstyle.stylize import layer_weights
from pstyle.stylize.pipeline import StylizeConfig, load_models
from pstyle.torch_utils import distributed
from pstyle.torch_utils.fileio import atomic_torch_save, atomic_write_json, jsonable

FORMAT = 'pstyle-distill'
SIDECAR_FORMAT, SIDECAR_VERSION = 'pstyle-distilled', 1
VAL_STREAM = 2 ** 32 - 1


@dataclasses.dataclass
class DistillConfig:
    base: str                          # A: file, URL or short name (demo, ffhq, ...)
    styled: str = None                 # B, a fine-tune of A; or
    styled_delta: str = None           # B = A + delta_alpha * delta (`pstyle fewshot`'s style.safetensors)
    delta_alpha: float = 1.0
    spec: dict = dataclasses.field(default_factory=lambda: layer_weights.make_spec().as_dict())  # WeightSpec fields
    mapping: str = 'from-a'
    truncation_psi: float = 1.0        # of the training latents
    iters: int = 20000
    decay_iters: int = None            # None = iters // 2
    batch_size: int = 4
    ngf: int = 32                      # student width and depth (CycleGAN's: 64, 9)
    n_blocks: int = 6
    l1_weight: float = 1.0
    lpips_weight: float = 1.0          # used when the LPIPS weights are present (else noted in the log)
    gan_weight: float = 0.0            # 0 = no discriminator
    ndf: int = 64
    n_layers_d: int = 3
    lr: float = 2e-4
    val_samples: int = 16
    snapshot_every: int = 2000
    log_every: int = 100
    seed: int = 0

    def resolved(self):
        return dataclasses.replace(self, decay_iters=self.iters // 2 if self.decay_iters is None else self.decay_iters)

    def check(self):
        if min(self.iters, self.batch_size, self.snapshot_every, self.log_every, self.ngf, self.val_samples) < 1:
            raise ValueError('iters, batch size, snapshot/log intervals, ngf and validation samples must be >= 1')
        if not 0 <= self.decay_iters <= self.iters:
            raise ValueError(f'decay iterations must be in [0, iters={self.iters}], got {self.decay_iters}')
        if min(self.l1_weight, self.lpips_weight, self.gan_weight, self.n_blocks) < 0:
            raise ValueError('loss weights and blocks must be >= 0')
        if self.l1_weight == self.lpips_weight == self.gan_weight == 0:
            raise ValueError('every loss weight is 0: nothing to train')
        if self.styled is None and self.styled_delta is None:
            raise ValueError('distill needs a teacher: give --styled (a fine-tune of --base) or --styled-delta')
        self.stylize_config().check()
        return self

    def weight_spec(self):
        return layer_weights.WeightSpec(**{k: tuple(v) if k == 'weights' and v is not None else v for k, v in self.spec.items()})

    def stylize_config(self, device='cpu'):
        """The `pstyle stylize` settings whose blended generator is the teacher."""
        return StylizeConfig(base=self.base, styled=self.styled, styled_delta=self.styled_delta, delta_alpha=self.delta_alpha,
                             spec=self.weight_spec(), mapping=self.mapping, device=str(device))


def to_photo(img):
    """float [N,3,H,W] ~[-1,1] -> what `translate` makes of that image saved as a PNG: quantised as
    `models.render.to_uint8`, then /255 * 2 - 1."""
    return (img * 127.5 + 128).clamp(0, 255).to(torch.uint8).float() / 255 * 2 - 1


class Teacher:
    """Pairs (input, target) float [n,3,R,R] in [-1,1] for sample indices, from A and the blended generator."""

    def __init__(self, cfg, device):
        self.cfg, self.device = cfg, device
        self.models = load_models(cfg.stylize_config(device), device)

    @torch.no_grad()
    def latents(self, indices, stream=()):
        G = self.models.G_a
        z = np.stack([np.random.RandomState([self.cfg.seed, *stream, int(k)]).randn(G.z_dim) for k in indices])
        z = torch.from_numpy(z).to(self.device, torch.float32)
        return G.mapping(z, None, truncation_psi=self.cfg.truncation_psi)                 # [n, num_ws, w_dim]

    def pairs(self, indices, stream=()):
        ws = self.latents(indices, stream)
        return (to_photo(gen.render(self.models.G_a, ws, noise_mode='const')),
                to_photo(gen.render(self.models.G_render, ws, noise_mode='const')))


class DistillTrainer(tt.TranslatorTrainer):
    def __init__(self, cfg, device, log=print):
        self.cfg, self.device = cfg, device
        self.teacher = Teacher(cfg, device)
        resolution = self.teacher.models.G_a.img_resolution
        g = torch.Generator().manual_seed(cfg.seed)
        self.nets = dict(G=init_weights(ResnetGenerator(ngf=cfg.ngf, n_blocks=cfg.n_blocks), g).to(device).train())
        if cfg.gan_weight > 0:
            if resolution < min_size(cfg.n_layers_d):
                raise ValueError(f'the PatchGAN with {cfg.n_layers_d} layers needs >= {min_size(cfg.n_layers_d)} px, '
                                 f'the networks are {resolution} px (use fewer --n-layers-d)')
            D = NLayerDiscriminator(input_nc=6, ndf=cfg.ndf, n_layers=cfg.n_layers_d)  # conditional: (input, output)
            self.nets['D'] = init_weights(D, g).to(device).train()
        for net in self.nets.values():
            distributed.broadcast_module(net)
        self.optimizers = {k: tt.adam(net.parameters(), cfg.lr) for k, net in self.nets.items()}
        rule = tt.linear_decay(cfg.iters, cfg.decay_iters)
        self.schedulers = {k: torch.optim.lr_scheduler.LambdaLR(o, rule) for k, o in self.optimizers.items()}
        self.pools = {}
        self.lpips, note = optional_lpips(device) if cfg.lpips_weight > 0 else (None, None)
        if note and distributed.is_main():
            log(f'note: L1 only, {note}')
        self.val = self.teacher.pairs(range(cfg.val_samples), (VAL_STREAM,)) if distributed.is_main() else None

    def generator_terms(self, x, y):
        cfg, G = self.cfg, self.nets['G']
        out = G(x)
        terms = dict(l1=l1(out, y) * cfg.l1_weight)
        if self.lpips is not None:
            terms['lpips'] = self.lpips(lpips_input(out), lpips_input(y)).flatten() * cfg.lpips_weight
        if 'D' in self.nets:
            terms['G_gan'] = lsgan_loss(self.nets['D'](torch.cat([x, out], 1)), True) * cfg.gan_weight
        return terms, out

    def step(self, iteration):
        B = self.cfg.batch_size
        start, stop = tt.my_share(B)
        x, y = self.teacher.pairs(range(iteration * B + start, iteration * B + stop))
        D = self.nets.get('D')
        if D is not None:
            D.requires_grad_(False)
        terms, out = self.generator_terms(x, y)
        self._update('G', sum(terms.values()).sum() / B)
        if D is not None:
            D.requires_grad_(True)
            terms['D'] = 0.5 * (lsgan_loss(D(torch.cat([x, y], 1)), True) + lsgan_loss(D(torch.cat([x, out.detach()], 1)), False))
            self._update('D', terms['D'].sum() / B)
        for sched in self.schedulers.values():
            sched.step()
        return {k: float(v.detach().sum()) / B for k, v in terms.items()}

    def _update(self, name, loss):
        opt = self.optimizers[name]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        tt.sum_gradients(self.nets[name])
        opt.step()

    def validate(self):
        """Held-out L1 of the student, of the identity mapping (input as output), and their ratio."""
        return held_out_errors(self.nets['G'], *self.val)

    def publish(self, run_dir, iteration):
        G = self.nets['G']
        path = atomic_torch_save({k: v.detach().cpu() for k, v in G.state_dict().items()}, run_dir / 'net_G.pth')
        paths = [path, atomic_write_json(path.with_name(path.name + '.json'), self.record(iteration))]
        if 'D' in self.nets:
            paths.append(atomic_torch_save({k: v.detach().cpu() for k, v in self.nets['D'].state_dict().items()},
                                           run_dir / 'net_D.pth'))
        return paths

    def record(self, iteration):
        cfg, models = self.cfg, self.teacher.models
        return jsonable(dict(format=SIDECAR_FORMAT, version=SIDECAR_VERSION, kind='distilled ResnetGenerator',
                             base=models.info['base'], styled=models.info['styled'], spec=cfg.spec,
                             spec_text=cfg.weight_spec().describe(), weights=models.weights, mapping=cfg.mapping,
                             resolution=models.G_a.img_resolution, generator=dict(ngf=cfg.ngf, n_blocks=cfg.n_blocks),
                             input='an aligned photo (RGB in [0, 1], as `pstyle cyclegan` feeds it)',
                             training=dict(iteration=iteration, truncation_psi=cfg.truncation_psi, seed=cfg.seed,
                                           lpips=self.lpips is not None, gan_weight=cfg.gan_weight),
                             validation=self.validate()))


@torch.no_grad()
def held_out_errors(G, x, y):
    was_training = G.training
    G.eval()
    student = float(l1(G(x), y).mean())
    G.train(was_training)
    identity = float(l1(x, y).mean())
    return dict(val_l1=student, val_identity_l1=identity, val_ratio=student / max(identity, 1e-12))


def distill(cfg, outdir, device=None, log=print, fault_hook=None):
    """Train (or resume) a distilled network in `outdir`; returns {'iteration', 'resumed_from', 'networks', 'validation'}."""
    cfg = cfg.resolved().check()
    device = distributed.init_from_env(device)
    trainer = DistillTrainer(cfg, device, log)
    iteration, start, paths = tt.train_loop(trainer, cfg, outdir, FORMAT, device, log, fault_hook)
    return dict(iteration=iteration, resumed_from=start or None, networks=[str(p) for p in paths],
                validation=trainer.validate() if distributed.is_main() else None)
