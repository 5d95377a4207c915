"""StyleGAN2 loss, per-sample inputs, accumulation rounds and the data sampler."""

import copy

import numpy as np
import pytest
import torch

from pstyle.training import phases as ph, sampler
from pstyle.training.loss import PhaseBatch, StyleGAN2Loss
from pstyle.models.networks import Discriminator, Generator
from pstyle.training.stats import StatsCollector


def nets(mbstd=1):
    torch.manual_seed(0)
    G = Generator(z_dim=8, c_dim=0, w_dim=8, img_resolution=8, img_channels=3, mapping_kwargs=dict(num_layers=2),
                  synthesis_kwargs=dict(channel_base=64, channel_max=16, use_noise=False))
    D = Discriminator(c_dim=0, img_resolution=8, img_channels=3, channel_base=64, channel_max=16,
                      epilogue_kwargs=dict(mbstd_group_size=mbstd))
    return G.train().requires_grad_(False), D.train().requires_grad_(False)


def spec(G, prob=0.9):
    return ph.DrawSpec(z_dim=G.z_dim, num_ws=G.num_ws, img_shape=(3, 8, 8), labels=np.zeros([5, 0], np.float32),
                       style_mixing_prob=prob, pl_batch_shrink=2)


def phase_grads(phase_name, batch_gpu, module='G'):
    G, D = nets()
    loss = StyleGAN2Loss(G, D, r1_gamma=1.0)
    params = list((G if module == 'G' else D).parameters())
    opt = torch.optim.SGD(params, lr=0)
    phase = ph.Phase(phase_name, module, params, opt, 1)
    batch = ph.draw_batch(torch.Generator().manual_seed(1), spec(G), phase_name, 4)
    batch.real_img, batch.real_c = torch.rand([4, 3, 8, 8]) * 2 - 1, torch.zeros([4, 0])
    ph.run_phase(phase, loss, batch, batch_gpu, kimg=0)
    return [p.grad.clone() for p in params]


@pytest.mark.parametrize('phase_name, module', [('Gmain', 'G'), ('Dboth', 'D')])
def test_gradients_do_not_depend_on_batch_gpu(phase_name, module):
    full, split = phase_grads(phase_name, 4, module), phase_grads(phase_name, 2, module)
    for a, b in zip(full, split):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    assert any(a.abs().max() > 0 for a in full)


def test_r1_penalty_and_pl_mean_values():
    G, D = nets()
    stats = StatsCollector('cpu')
    loss = StyleGAN2Loss(G, D, r1_gamma=10, stats=stats, pl_decay=0.01)
    real = torch.rand([4, 3, 8, 8]) * 2 - 1
    D.requires_grad_(True)
    loss.accumulate_gradients('Dreg', PhaseBatch(real_img=real, real_c=torch.zeros([4, 0])), gain=16)
    x = real.clone().requires_grad_(True)
    grad, = torch.autograd.grad(D(x, None).sum(), x)
    expected = grad.square().sum([1, 2, 3]).mean().item()  # R1 = |grad_x D(x)|^2 (Mescheder et al., Eq. 9)
    got = stats.collect()
    assert got['Loss/r1_penalty']['mean'] == pytest.approx(expected, rel=1e-5)
    assert got['Loss/D/reg']['mean'] == pytest.approx(expected * 5, rel=1e-5)
    G.requires_grad_(True)
    batch = ph.draw_batch(torch.Generator().manual_seed(0), spec(G, prob=0), 'Greg', 2)
    loss.accumulate_gradients('Greg', batch, gain=4)
    assert loss.pl_mean.item() > 0
    assert stats.collect()['Loss/pl_penalty']['num'] == 2
    with pytest.raises(ValueError, match="phase must be one of"):
        loss.accumulate_gradients('Gfoo', batch, gain=1)


def test_style_mixing_is_per_sample():
    G, D = nets()
    loss = StyleGAN2Loss(G, D)
    z, z2 = torch.randn([3, 8]), torch.randn([3, 8])
    cutoff = torch.tensor([G.num_ws, 1, 3])
    _, ws = loss.run_G(z, torch.zeros([3, 0]), z2, cutoff, update_emas=False)
    w1, w2 = G.mapping(z, None, update_emas=False), G.mapping(z2, None, update_emas=False)
    torch.testing.assert_close(ws[0], w1[0])                                   # not mixed
    torch.testing.assert_close(ws[1], torch.cat([w1[1, :1], w2[1, 1:]]))       # rows >= 1 from z2
    torch.testing.assert_close(ws[2], torch.cat([w1[2, :3], w2[2, 3:]]))


def test_draw_batch_and_shares():
    G, _ = nets()
    s = spec(G)
    a = ph.draw_batch(torch.Generator().manual_seed(3), s, 'Greg', 4)
    b = ph.draw_batch(torch.Generator().manual_seed(3), s, 'Greg', 4)
    assert torch.equal(a.gen_z, b.gen_z) and a.pl_noise.shape == (4, 3, 8, 8)
    assert ((a.mix_cutoff >= 1) & (a.mix_cutoff <= G.num_ws)).all()
    share = ph.share_of(a, 1, 2)
    assert torch.equal(share.gen_z, a.gen_z[1::2]) and torch.equal(share.pl_noise, a.pl_noise[1::2])
    assert ph.phase_global_size('Greg', 32, 4, 2) == 16 and ph.phase_global_size('Greg', 4, 4, 2) == 4
    assert ph.phase_global_size('Dmain', 32, 4, 2) == 32
    parts = ph.rounds(a, 3)
    assert [p.gen_z.shape[0] for p, _ in parts] == [3, 1] and sum(f for _, f in parts) == 1


def test_sampler_epochs_are_permutations_and_resumable():
    n, bs = 10, 4
    stream = np.concatenate([sampler.batch_indices(n, bs, k, seed=5) for k in range(5)])  # 20 items = 2 epochs
    assert sorted(stream[:10]) == list(range(10)) and sorted(stream[10:20]) == list(range(10))
    assert not np.array_equal(stream[:10], stream[10:20])
    it = iter(sampler.RankBatchSampler(n, bs, 5, rank=1, world_size=2, start_batch=3))
    assert next(it) == sampler.batch_indices(n, bs, 3, 5)[1::2].tolist()
    with pytest.raises(ValueError, match='batch size 5 is not a multiple of the 2 processes'):
        sampler.RankBatchSampler(n, 5, 0, world_size=2)


def test_ema_update_and_rampup():
    G, _ = nets()
    G_ema = copy.deepcopy(G)
    with torch.no_grad():
        for p in G.parameters():
            p.add_(1.0)
    params, ema = list(G.parameters()), list(G_ema.parameters())
    start = [p.clone() for p in ema]
    beta = ph.update_ema(ema, params, [], [], cur_nimg=1000, batch_size=32, ema_kimg=10, ema_rampup=0.05)
    assert beta == pytest.approx(0.5 ** (32 / 50))  # ramp-up: half-life min(10k, 0.05 * 1000) images
    torch.testing.assert_close(ema[0], start[0] + (1 - beta))
    assert ph.update_ema([], [], [], [], 0, 32, 10, None) == pytest.approx(0.5 ** (32 / 10000))
