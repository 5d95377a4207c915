"""CycleGAN training (Zhu et al. 2017) on two unpaired image folders, as junyanz/pytorch-CycleGAN-and-pix2pix's
`cycle_gan_model.py` with its defaults: two ResnetGenerators (G_A: A -> B, G_B: B -> A), two 70x70 PatchGANs
(D_A judges G_A's outputs against real B, D_B judges G_B's against real A), least-squares GAN loss, cycle
loss lambda 10 and identity loss 0.5 * lambda (Sec. 5.2), a 50-image pool per discriminator, Adam(2e-4,
betas 0.5, 0.999) and a learning rate constant for the first half and decaying linearly to zero over the
second (here in iterations: `iters`, `decay_iters`).

Data (the reference's `unaligned` dataset with `resize_and_crop`): sample k takes A's images in a seeded
permutation per epoch and a uniformly drawn B image, each resized to load_size^2 (bicubic), randomly cropped
to crop_size^2 and flipped with probability 1/2; every draw depends on (seed, k) only. The run directory,
its snapshots and exact resume are `translator_train`'s.
"""

import dataclasses
import itertools

import torch
from PIL import Image

from pstyle.baselines import runs
from pstyle.baselines import translator_train as tt
from pstyle.baselines.cyclegan import ResnetGenerator
from pstyle.baselines.patchgan import ImagePool, NLayerDiscriminator, init_weights, lsgan_loss, min_size
from pstyle.projectors.image_io import load_image
from pstyle.torch_utils import distributed
from pstyle.torch_utils.fileio import atomic_torch_save
from pstyle.torch_utils.folder_run import list_images

FORMAT = 'pstyle-cyclegan-train'
ORDER, SAMPLE, POOL = 1, 2, 3       # random streams: A's order per epoch, per-sample draws, pool choices per iteration


@dataclasses.dataclass
class CycleganTrainConfig:
    a_dir: str
    b_dir: str
    iters: int = 200000                # total iterations (the reference: 100 + 100 epochs of ~1000 images)
    decay_iters: int = None            # the last this many decay linearly; None = iters // 2
    batch_size: int = 1
    crop_size: int = 256               # training size (`--size`)
    load_size: int = None              # resized to this square first; None = crop_size * 286 / 256
    flip: bool = True
    ngf: int = 64                      # generator width (resnet_9blocks: ngf 64, 9 blocks)
    n_blocks: int = 9
    ndf: int = 64                      # discriminator width and its stride-2 layers (3: 70x70 patches)
    n_layers_d: int = 3
    lr: float = 2e-4
    lambda_cycle: float = 10.0         # lambda_A = lambda_B
    lambda_identity: float = 0.5       # times lambda_cycle
    pool_size: int = 50
    snapshot_every: int = 5000
    log_every: int = 100
    seed: int = 0

    def resolved(self):
        return dataclasses.replace(
            self, decay_iters=self.iters // 2 if self.decay_iters is None else self.decay_iters,
            load_size=int(round(self.crop_size * 286 / 256)) if self.load_size is None else self.load_size)

    def check(self):
        if min(self.iters, self.batch_size, self.snapshot_every, self.log_every, self.ngf, self.ndf, self.n_layers_d) < 1:
            raise ValueError('iters, batch size, snapshot/log intervals, ngf, ndf and D layers must be >= 1')
        if not 0 <= self.decay_iters <= self.iters:
            raise ValueError(f'decay iterations must be in [0, iters={self.iters}], got {self.decay_iters}')
        if self.crop_size > self.load_size:
            raise ValueError(f'crop size {self.crop_size} is larger than load size {self.load_size}')
        if self.crop_size % 4 or self.crop_size < min_size(self.n_layers_d):
            raise ValueError(f'crop size must be a multiple of 4 and >= {min_size(self.n_layers_d)} '
                             f'(the PatchGAN with {self.n_layers_d} layers), got {self.crop_size}')
        if min(self.n_blocks, self.pool_size) < 0 or min(self.lambda_cycle, self.lambda_identity) < 0:
            raise ValueError('blocks, pool size and loss weights must be >= 0')
        return self


class UnpairedImages:
    """Sample k -> (a, b): float [3, crop, crop] in [-1, 1], from (seed, k) alone. Every file is decoded once
    when the folders are opened, so an unreadable image is one error naming it, before any training."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.a, self.b = self._check(cfg.a_dir, 'A'), self._check(cfg.b_dir, 'B')
        self._order = {}

    @staticmethod
    def _check(folder, what):
        folder = str(folder)
        try:
            files = list_images(folder)
        except (FileNotFoundError, NotADirectoryError):
            raise ValueError(f'folder {what} ({folder}) does not exist or is not a folder') from None
        if not files:
            raise ValueError(f'folder {what} ({folder}) has no images')
        for path in files:
            load_image(path)                    # ImageLoadError: '<path>: cannot read image (...)'
        return files

    def _a_index(self, k):
        epoch, pos = divmod(k, len(self.a))
        if epoch not in self._order:
            self._order = {epoch: torch.randperm(len(self.a), generator=tt.stream_generator(self.cfg.seed, ORDER, epoch))}
        return int(self._order[epoch][pos])

    def _load(self, path, g):
        size, c = self.cfg.load_size, self.cfg.crop_size
        img = load_image(path).resize((size, size), Image.BICUBIC)
        top, left = (int(v) for v in torch.randint(0, size - c + 1, (2,), generator=g))
        x = runs.to_tensor(img.crop((left, top, left + c, top + c)))[0] * 2 - 1
        flip = float(torch.rand((), generator=g)) < 0.5
        return x.flip(-1) if self.cfg.flip and flip else x

    def __call__(self, k):
        g = tt.stream_generator(self.cfg.seed, SAMPLE, k)
        b_index = int(torch.randint(0, len(self.b), (), generator=g))
        return self._load(self.a[self._a_index(k)], g), self._load(self.b[b_index], g)

    def batch(self, indices, device):
        pairs = [self(k) for k in indices]
        return (torch.stack([a for a, _ in pairs]).to(device), torch.stack([b for _, b in pairs]).to(device))


def l1(x, y):
    """Per-sample mean absolute error -> [N]."""
    return (x - y).abs().flatten(1).mean(dim=1)


class CycleganTrainer(tt.TranslatorTrainer):
    def __init__(self, cfg, device):
        self.cfg, self.device = cfg, device
        self.data = UnpairedImages(cfg)
        g = torch.Generator().manual_seed(cfg.seed)
        G = [init_weights(ResnetGenerator(ngf=cfg.ngf, n_blocks=cfg.n_blocks), g) for _ in range(2)]
        D = [init_weights(NLayerDiscriminator(ndf=cfg.ndf, n_layers=cfg.n_layers_d), g) for _ in range(2)]
        self.nets = {name: net.to(device).train() for name, net in zip(('G_A', 'G_B', 'D_A', 'D_B'), G + D)}
        for net in self.nets.values():
            distributed.broadcast_module(net)
        n = self.nets
        self.optimizers = dict(G=tt.adam(itertools.chain(n['G_A'].parameters(), n['G_B'].parameters()), cfg.lr),
                               D=tt.adam(itertools.chain(n['D_A'].parameters(), n['D_B'].parameters()), cfg.lr))
        rule = tt.linear_decay(cfg.iters, cfg.decay_iters)
        self.schedulers = {k: torch.optim.lr_scheduler.LambdaLR(o, rule) for k, o in self.optimizers.items()}
        self.pools = dict(fake_A=ImagePool(cfg.pool_size), fake_B=ImagePool(cfg.pool_size))

    def generator_terms(self, real_A, real_B):
        """cycle_gan_model.backward_G: per-sample losses {name: [n]} and the fakes."""
        cfg, n = self.cfg, self.nets
        fake_B, fake_A = n['G_A'](real_A), n['G_B'](real_B)
        terms = dict(G_A=lsgan_loss(n['D_A'](fake_B), True), G_B=lsgan_loss(n['D_B'](fake_A), True),
                     cycle_A=l1(n['G_B'](fake_B), real_A) * cfg.lambda_cycle,       # ||G_B(G_A(A)) - A||_1 (Eq. 2)
                     cycle_B=l1(n['G_A'](fake_A), real_B) * cfg.lambda_cycle)
        if cfg.lambda_identity > 0:                                                  # G_A(B) ~ B (Sec. 5.2)
            weight = cfg.lambda_cycle * cfg.lambda_identity
            terms.update(idt_A=l1(n['G_A'](real_B), real_B) * weight, idt_B=l1(n['G_B'](real_A), real_A) * weight)
        return terms, fake_A, fake_B

    def step(self, iteration):
        cfg, n, B = self.cfg, self.nets, self.cfg.batch_size
        start, stop = tt.my_share(B)
        real_A, real_B = self.data.batch(range(iteration * B + start, iteration * B + stop), self.device)
        for name in ('D_A', 'D_B'):
            n[name].requires_grad_(False)
        terms, fake_A, fake_B = self.generator_terms(real_A, real_B)
        self._update('G', sum(terms.values()).sum() / B, n['G_A'], n['G_B'])
        for name in ('D_A', 'D_B'):
            n[name].requires_grad_(True)
        g = tt.stream_generator(cfg.seed, POOL, iteration)       # the same draws on every rank: one global pool
        pooled_B = self.pools['fake_B'].query(tt.gather_batch(fake_B.detach()), g)[start:stop]
        pooled_A = self.pools['fake_A'].query(tt.gather_batch(fake_A.detach()), g)[start:stop]
        d_terms = dict(D_A=0.5 * (lsgan_loss(n['D_A'](real_B), True) + lsgan_loss(n['D_A'](pooled_B), False)),
                       D_B=0.5 * (lsgan_loss(n['D_B'](real_A), True) + lsgan_loss(n['D_B'](pooled_A), False)))
        self._update('D', sum(d_terms.values()).sum() / B, n['D_A'], n['D_B'])
        for sched in self.schedulers.values():
            sched.step()
        return {k: float(v.detach().sum()) / B for k, v in {**terms, **d_terms}.items()}

    def _update(self, name, loss, *nets):
        opt = self.optimizers[name]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        tt.sum_gradients(*nets)
        opt.step()

    def publish(self, run_dir, iteration):
        """latest_net_{G_A,G_B,D_A,D_B}.pth: plain state_dicts, as the reference saves them (`pstyle cyclegan` loads G's)."""
        paths = []
        for name, net in self.nets.items():
            paths.append(atomic_torch_save({k: v.detach().cpu() for k, v in net.state_dict().items()},
                                           run_dir / f'latest_net_{name}.pth'))
        return paths


def cyclegan_train(cfg, outdir, device=None, log=print, fault_hook=None):
    """Train (or resume) a CycleGAN in `outdir`; returns {'iteration', 'resumed_from', 'networks'}.
    Under torchrun each rank takes its share of every batch (device None: cuda:LOCAL_RANK or the CPU)."""
    cfg = cfg.resolved().check()
    device = distributed.init_from_env(device)
    trainer = CycleganTrainer(cfg, device)
    iteration, start, paths = tt.train_loop(trainer, cfg, outdir, FORMAT, device, log, fault_hook)
    return dict(iteration=iteration, resumed_from=start or None, networks=[str(p) for p in paths])


def cycle_error(G_A, G_B, images):
    """Mean |G_B(G_A(x)) - x| over images float [N, 3, H, W] in [-1, 1] (no gradients)."""
    with torch.no_grad():
        return float(l1(G_B(G_A(images)), images).mean())

