"""The training state: networks, optimizers, loss, ADA, counters and RNGs, built from a config, with
the one-iteration step and a state_dict that makes resuming exact.

Transfer learning (`resume`): the networks come from any file `load_network` reads and are copied
tensor by tensor with `checkpoint.copy_state`, which refuses missing, unexpected or mis-shaped
tensors and names them: never a silent partial copy.
"""

import copy
import random

import numpy as np
import torch

from pstyle.torch_utils import distributed
from pstyle.models import checkpoint
from pstyle.training import freeze, phases as ph
from pstyle.training.loss import StyleGAN2Loss
from pstyle.models.networks import Discriminator, Generator
from pstyle.training.stats import StatsCollector
from pstyle.training.train_config import ConfigError
from pstyle.models.augment import AdaptiveP, AugmentPipe, augpipe_specs


def load_source(resume, device='cpu'):
    """{'G', 'G_ema', 'D' (when present)} of the transfer-learning source."""
    return checkpoint.load_network(resume, device=device)


def _copy_from(net, src, what):
    checkpoint.copy_state(net, src.state_dict(), what=what)


def build_networks(cfg, device, source=None, log=print):
    """G, D, G_ema from the config; weights copied strictly from `source` when given."""
    G = Generator(**cfg['G_kwargs']).train().requires_grad_(False)
    D = Discriminator(**cfg['D_kwargs']).train().requires_grad_(False)
    if source is not None:
        name = cfg.get('resume') or 'the resume network'
        _copy_from(G, source.get('G', source['G_ema']), f'--resume {name}: G')
        if source.get('D') is not None:
            _copy_from(D, source['D'], f'--resume {name}: D')
        else:
            log(f'--resume {name} has no discriminator: D starts from random weights')
    G_ema = copy.deepcopy(G).eval()
    if source is not None:
        _copy_from(G_ema, source['G_ema'], f'--resume {cfg.get("resume")}: G_ema')
    return G.to(device), D.to(device), G_ema.to(device)


def apply_freezing(G, D, cfg, log=print):
    """FreezeD / FreezeG by module name; returns (G params, D params) still trainable."""
    d_names = freeze.freezed_modules(D, cfg['freeze_d'])
    g_names = freeze.freezeg_modules(G, cfg['freeze_g'], cfg['freeze_mapping'])
    G.requires_grad_(True)
    D.requires_grad_(True)
    freeze.freeze_modules(D, d_names)
    freeze.freeze_modules(G, g_names)
    G_params = [p for _, p in freeze.trainable_params(G)]
    D_params = [p for _, p in freeze.trainable_params(D)]
    frozen = {'G': [n for n, p in G.named_parameters() if not p.requires_grad],
              'D': [n for n, p in D.named_parameters() if not p.requires_grad]}
    G.requires_grad_(False)  # The phases switch the trainable ones on while they run.
    D.requires_grad_(False)
    if d_names or g_names:
        log(f'FreezeD: {d_names or "none"}')
        log(f'FreezeG: {g_names or "none"}')
    return G_params, D_params, frozen


def build_augment(cfg, device):
    """(AugmentPipe or None, AdaptiveP or None) from cfg['augment_kwargs']."""
    a = cfg['augment_kwargs']
    if a['mode'] == 'noaug':
        return None, None
    if a['augpipe'] not in augpipe_specs:
        raise ConfigError(f'--augpipe must be one of {sorted(augpipe_specs)}, got {a["augpipe"]!r}')
    pipe = AugmentPipe(**augpipe_specs[a['augpipe']]).train().requires_grad_(False).to(device)
    ada = AdaptiveP(target=a['target'] if a['target'] is not None else 0.6, interval=a['interval'],
                    kimg=a['kimg'] or 500, p=a['p'], fixed=a['mode'] == 'fixed')
    ada.apply(pipe)
    return pipe, ada


def rng_state():
    """This process's torch / CUDA / numpy / python RNG states as weights_only-loadable values."""
    np_state = np.random.get_state()
    return dict(torch=torch.get_rng_state(),
                cuda=torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else [],
                numpy=[np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
                python=random.getstate())


def set_rng_state(state):
    torch.set_rng_state(state['torch'])
    if state['cuda'] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state['cuda'])
    n = state['numpy']
    np.random.set_state((n[0], n[1].numpy().astype(np.uint32), *n[2:]))
    random.setstate(tuple(tuple(v) if isinstance(v, list) else v for v in state['python']))


class Trainer:
    """Everything that changes during training, and one `step()`."""

    def __init__(self, cfg, device, labels, source=None, log=print):
        self.cfg = cfg
        self.device = torch.device(device)
        self.rank, self.world = distributed.get_rank(), distributed.get_world_size()
        self.G, self.D, self.G_ema = build_networks(cfg, device, source, log)
        distributed.broadcast_module(self.G)  # Identical starting points everywhere.
        distributed.broadcast_module(self.D)
        distributed.broadcast_module(self.G_ema)
        G_params, D_params, self.frozen = apply_freezing(self.G, self.D, cfg, log)
        names = {id(p): n for n, p in self.G.named_parameters()}
        ema = dict(self.G_ema.named_parameters())
        self.ema_pairs = ([ema[names[id(p)]] for p in G_params], G_params)
        self.ema_buffers = (list(self.G_ema.buffers()), list(self.G.buffers()))
        self.augment_pipe, self.ada = build_augment(cfg, device)
        self.stats = StatsCollector(device)
        self.loss = StyleGAN2Loss(self.G, self.D, self.augment_pipe, stats=self.stats,
                                  update_w_avg=not cfg['freeze_mapping'], **cfg['loss_kwargs'])
        self.loss.augment_p = self.ada.p if self.ada is not None else 0.0
        self.phases = ph.make_phases(G_params, D_params, cfg['G_opt_kwargs'], cfg['D_opt_kwargs'],
                                     cfg['G_reg_interval'], cfg['D_reg_interval'])
        self.draw = ph.DrawSpec(z_dim=self.G.z_dim, num_ws=self.G.num_ws,
                                img_shape=(self.G.img_channels, self.G.img_resolution, self.G.img_resolution),
                                labels=labels, style_mixing_prob=cfg['loss_kwargs']['style_mixing_prob'],
                                pl_batch_shrink=cfg['loss_kwargs']['pl_batch_shrink'])
        self.gen = torch.Generator().manual_seed(cfg['random_seed'])  # Per-sample inputs, same on all ranks.
        self.cur_nimg = self.cur_tick = self.batch_idx = self.tick_start_nimg = 0
        self.elapsed = 0.0

    @property
    def kimg(self):
        return self.cur_nimg / 1000

    def step(self, real_img, real_c):
        """One iteration on this rank's share of a global batch (uint8 images, float labels)."""
        cfg, batch_size = self.cfg, self.cfg['batch_size']
        real_img = real_img.to(self.device, non_blocking=True).to(torch.float32) / 127.5 - 1
        real_c = real_c.to(self.device, non_blocking=True).to(torch.float32)
        for phase in self.phases:
            if self.batch_idx % phase.interval != 0:
                continue
            size = ph.phase_global_size(phase.name, batch_size, self.world, self.draw.pl_batch_shrink)
            batch = ph.share_of(ph.draw_batch(self.gen, self.draw, phase.name, size), self.rank, self.world)
            batch = ph.to_device(batch, self.device)
            if phase.module == 'D':
                batch.real_img, batch.real_c = real_img, real_c
            ph.run_phase(phase, self.loss, batch, cfg['batch_gpu'], self.kimg)
        if self.world > 1 and self.loss.update_w_avg:
            distributed.all_reduce_mean(self.G.mapping.w_avg.data)  # Linear in the batch means: exact.
        ph.update_ema(*self.ema_pairs, *self.ema_buffers, self.cur_nimg, batch_size, cfg['ema_kimg'], cfg['ema_rampup'])
        self.cur_nimg += batch_size
        self.batch_idx += 1
        if self.ada is not None:  # AdaptiveP counts its own interval (NVIDIA: every 4 minibatches).
            ph.ada_step(self.ada, self.loss, self.augment_pipe)

    # -- resume ---------------------------------------------------------------

    def networks(self):
        return dict(G=self.G, D=self.D, G_ema=self.G_ema)

    def optimizers(self):
        return {phase.module: phase.opt for phase in self.phases}

    def state_dict(self):
        """Everything but the networks (saved by save_network); call on all ranks (gathers RNGs)."""
        rngs = distributed.all_gather_object(rng_state())
        return dict(cur_nimg=self.cur_nimg, cur_tick=self.cur_tick, batch_idx=self.batch_idx,
                    tick_start_nimg=self.tick_start_nimg, elapsed=self.elapsed, world_size=self.world,
                    optimizers={k: opt.state_dict() for k, opt in self.optimizers().items()},
                    ada=self.ada.state_dict() if self.ada is not None else None,
                    loss=self.loss.state_dict(), latent_gen=self.gen.get_state(), rng=rngs)

    def load_state_dict(self, state, networks):
        for key, net in self.networks().items():
            _copy_from(net, networks[key], f'resume snapshot: {key}')
        for key, opt in self.optimizers().items():
            opt.load_state_dict(state['optimizers'][key])
        if self.ada is not None:
            self.ada.load_state_dict(state['ada'])
            self.ada.apply(self.augment_pipe)
            self.loss.augment_p = self.ada.p
        self.loss.load_state_dict(state['loss'])
        self.gen.set_state(state['latent_gen'])
        for key in ('cur_nimg', 'cur_tick', 'batch_idx', 'tick_start_nimg', 'elapsed'):
            setattr(self, key, state[key])
        if state['world_size'] == self.world:
            set_rng_state(state['rng'][self.rank])
        else:  # Another process count: data order and latents still continue exactly, noise does not.
            set_rng_state(state['rng'][0])
