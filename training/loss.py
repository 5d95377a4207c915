"""StyleGAN2 objective (Karras et al. 2020, "Analyzing and Improving the Image Quality of StyleGAN").

Non-saturating logistic loss (Goodfellow et al. 2014), R1 on reals (Mescheder et al. 2018), path
length regularization (StyleGAN2, Section 3.2) and style mixing (StyleGAN, Section 3.1), with the
phase names of NVIDIA's stylegan2-ada-pytorch: 'Gmain', 'Greg', 'Gboth', 'Dmain', 'Dreg', 'Dboth'.

Every random quantity of a step (latents, style-mixing cut-offs, path-length noise) comes in with
the batch, drawn per sample by the loop, so a batch split over processes sees exactly the numbers
a single process would (`training/phases.py`).
"""

import dataclasses

import numpy as np
import torch
import torch.nn.functional as F

from pstyle.torch_utils import distributed, misc

PHASES = ('Gmain', 'Greg', 'Gboth', 'Dmain', 'Dreg', 'Dboth')


@dataclasses.dataclass
class PhaseBatch:
    """The inputs of one accumulation round (this process's share)."""
    real_img:   torch.Tensor = None     # float32 [N, C, H, W] in [-1, 1]
    real_c:     torch.Tensor = None     # float32 [N, c_dim]
    gen_z:      torch.Tensor = None     # float32 [N, z_dim]
    gen_c:      torch.Tensor = None     # float32 [N, c_dim]
    mix_z:      torch.Tensor = None     # float32 [N, z_dim], second latent for style mixing
    mix_cutoff: torch.Tensor = None     # int64 [N], first W+ row taken from mix_z (num_ws = no mixing)
    pl_noise:   torch.Tensor = None     # float32 [N, C, H, W], path-length projection noise

    def slice(self, start, stop):
        return PhaseBatch(**{f.name: (None if getattr(self, f.name) is None else getattr(self, f.name)[start:stop])
                             for f in dataclasses.fields(self)})


class StyleGAN2Loss:
    """accumulate_gradients(phase, batch, gain): forward + backward of one phase on one round."""

    def __init__(self, G, D, augment_pipe=None, r1_gamma=10, style_mixing_prob=0.9, pl_weight=2,
                 pl_batch_shrink=2, pl_decay=0.01, stats=None, update_w_avg=True):
        self.G = G
        self.D = D
        self.augment_pipe = augment_pipe
        self.r1_gamma = r1_gamma
        self.style_mixing_prob = style_mixing_prob
        self.pl_weight = pl_weight
        self.pl_batch_shrink = pl_batch_shrink
        self.pl_decay = pl_decay
        self.stats = stats
        self.update_w_avg = update_w_avg    # False with a frozen mapping: w_avg stays the source's.
        self.pl_mean = torch.zeros([], device=misc.device_of(G))
        self.augment_p = 1.0                # Python copy of augment_pipe.p: p = 0 skips the pipeline.
        self._loss_Dgen = None
        self._ada_signs = torch.zeros(3, device=self.pl_mean.device)   # (#positive, #negative, #all) real logits

    def state_dict(self):
        return dict(pl_mean=self.pl_mean.detach().cpu().clone())

    def load_state_dict(self, state):
        self.pl_mean.copy_(state['pl_mean'])

    def _report(self, name, value):
        if self.stats is not None:
            self.stats.report(name, value)

    def run_G(self, z, c, mix_z=None, mix_cutoff=None, update_emas=True, ws_grad=False):
        """Images and the W+ they came from; per-sample style mixing when `mix_z` is given.

        ws_grad: make W+ differentiable even when the mapping is frozen (path-length regularization)."""
        ws = self.G.mapping(z, c, update_emas=update_emas and self.update_w_avg)
        if mix_z is not None:
            # StyleGAN, Section 3.1: rows >= cutoff come from a second latent. Per sample, not per batch.
            ws_mix = self.G.mapping(mix_z, c, update_emas=False)
            take = torch.arange(ws.shape[1], device=ws.device)[None, :] >= mix_cutoff[:, None]  # [N, num_ws]
            ws = torch.where(take[:, :, None], ws_mix, ws)
        if ws_grad and not ws.requires_grad:
            ws = ws.detach().requires_grad_(True)
        img = self.G.synthesis(ws)
        return img, ws

    def pop_ada_signs(self):
        """Counts of positive / negative / all D(real) logits of the main D phases since the last call."""
        out, self._ada_signs = self._ada_signs, torch.zeros_like(self._ada_signs)
        return out

    def run_D(self, img, c):
        if self.augment_pipe is not None and self.augment_p > 0:
            img = self.augment_pipe(img)
        return self.D(img, c)

    def accumulate_gradients(self, phase, batch, gain):
        """Backpropagate `phase`'s loss on `batch`, scaled by `gain` (lazy-reg interval / rounds)."""
        if phase not in PHASES:
            raise ValueError(f'phase must be one of {PHASES}, got {phase!r}')
        do_Gmain = phase in ('Gmain', 'Gboth')
        do_Dmain = phase in ('Dmain', 'Dboth')
        do_Gpl = phase in ('Greg', 'Gboth') and self.pl_weight != 0
        do_Dr1 = phase in ('Dreg', 'Dboth') and self.r1_gamma != 0
        if do_Gmain:
            self._G_main(batch, gain)
        if do_Gpl:
            self._G_pl(batch, gain)
        if do_Dmain:
            self._D_fake(batch, gain)
        if do_Dmain or do_Dr1:
            self._D_real(batch, gain, do_Dmain, do_Dr1)

    def _G_main(self, b, gain):
        # Non-saturating loss: -log(sigmoid(D(G(z)))) = softplus(-D(G(z))).
        gen_img, _ = self.run_G(b.gen_z, b.gen_c, b.mix_z, b.mix_cutoff)
        gen_logits = self.run_D(gen_img, b.gen_c)
        loss_G = F.softplus(-gen_logits)
        self._report('Loss/scores/fake', gen_logits)
        self._report('Loss/signs/fake', gen_logits.sign())
        self._report('Loss/G/loss', loss_G)
        loss_G.mean().mul(gain).backward()

    def _G_pl(self, b, gain):
        # Path length regularization (StyleGAN2, Eq. 4): E[(|J_w^T y|_2 - a)^2], y ~ N(0, I) / sqrt(HW).
        gen_img, gen_ws = self.run_G(b.gen_z, b.gen_c, b.mix_z, b.mix_cutoff, ws_grad=True)
        misc.assert_shape(b.pl_noise, list(gen_img.shape))
        pl_noise = b.pl_noise / np.sqrt(gen_img.shape[2] * gen_img.shape[3])
        pl_grads, = torch.autograd.grad(outputs=[(gen_img * pl_noise).sum()], inputs=[gen_ws], create_graph=True)
        pl_lengths = pl_grads.square().sum(2).mean(1).sqrt()  # [N]
        # `a` is a running mean of the lengths; averaged over processes so that splits agree.
        batch_mean = distributed.all_reduce_mean(pl_lengths.detach().mean().clone())
        pl_mean = self.pl_mean.lerp(batch_mean, self.pl_decay)
        self.pl_mean.copy_(pl_mean)
        pl_penalty = (pl_lengths - pl_mean).square()
        loss_Gpl = pl_penalty * self.pl_weight
        self._report('Loss/pl_penalty', pl_penalty)
        self._report('Loss/G/reg', loss_Gpl)
        # gen_img[:, 0, 0, 0] * 0 keeps every synthesis parameter in the graph (as NVIDIA does).
        (gen_img[:, 0, 0, 0] * 0 + loss_Gpl).mean().mul(gain).backward()

    def _D_fake(self, b, gain):
        # Minimize softplus(D(G(z))): push fakes down. G is not trained here, so no graph through it.
        with torch.no_grad():
            gen_img, _ = self.run_G(b.gen_z, b.gen_c, b.mix_z, b.mix_cutoff)
        gen_logits = self.run_D(gen_img, b.gen_c)
        loss_Dgen = F.softplus(gen_logits)
        self._report('Loss/scores/fake', gen_logits)
        self._report('Loss/signs/fake', gen_logits.sign())
        self._loss_Dgen = loss_Dgen.detach()  # Reported with the real part as Loss/D/loss, as NVIDIA does.
        loss_Dgen.mean().mul(gain).backward()

    def _D_real(self, b, gain, do_main, do_r1):
        real_img = b.real_img.detach().requires_grad_(do_r1)
        real_logits = self.run_D(real_img, b.real_c)
        self._report('Loss/scores/real', real_logits)
        self._report('Loss/signs/real', real_logits.sign())
        loss = real_logits * 0
        if do_main:
            loss_Dreal = F.softplus(-real_logits)  # -log(sigmoid(D(x)))
            fake_part = self._loss_Dgen if self._loss_Dgen is not None else 0
            self._report('Loss/D/loss', loss_Dreal.detach() + fake_part)
            self._loss_Dgen = None
            loss = loss + loss_Dreal
            signs = real_logits.detach().sign()  # ADA's overfitting heuristic r_t (ADA paper, Eq. 1).
            self._ada_signs += torch.stack([(signs > 0).sum(), (signs < 0).sum(), torch.tensor(signs.numel(), device=signs.device)]).to(self._ada_signs.dtype)
        if do_r1:
            # R1 (Mescheder et al. 2018, Eq. 9): gamma/2 * |grad_x D(x)|^2 on reals.
            r1_grads, = torch.autograd.grad(outputs=[real_logits.sum()], inputs=[real_img], create_graph=True)
            r1_penalty = r1_grads.square().sum([1, 2, 3])
            loss_Dr1 = r1_penalty * (self.r1_gamma / 2)
            self._report('Loss/r1_penalty', r1_penalty)
            self._report('Loss/D/reg', loss_Dr1)
            loss = loss + loss_Dr1[:, None]
        loss.mean().mul(gain).backward()
