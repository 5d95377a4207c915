"""Projection core: NVIDIA's schedules, noise maps, losses, W vs W+, batch independence, errors."""

import copy
import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pstyle.projectors import projector as P
from pstyle.models.render import to_uint8
from pstyle.models import latents
from pstyle.models import render as rendering
from pstyle.models.networks import Generator


@pytest.fixture(scope='module')
def w_stats(G):
    return P.compute_w_stats(G, 2000)


@torch.no_grad()
def targets_from_ws(G, ws):
    return torch.from_numpy(to_uint8(G.synthesis(ws, noise_mode='const'))).permute(0, 3, 1, 2)


@pytest.fixture(scope='module')
def mixed_targets(G):
    """Targets from W+ codes whose rows come from two different w: out of reach of W."""
    torch.manual_seed(5)
    w_a, w_b = G.mapping(torch.randn(3, 16), None), G.mapping(torch.randn(3, 16), None)
    ws = w_a.clone()
    ws[:, G.num_ws // 2:] = w_b[:, G.num_ws // 2:]
    return targets_from_ws(G, ws)


def test_learning_rate_schedule_matches_nvidia():
    cfg = P.ProjectConfig()
    assert P.learning_rate(0.0, cfg) == 0
    assert P.learning_rate(0.025, cfg) == pytest.approx(0.05)        # ramp-up: t / 0.05
    assert P.learning_rate(0.5, cfg) == pytest.approx(0.1)           # plateau
    assert P.learning_rate(0.875, cfg) == pytest.approx(0.05)        # cosine: 0.5 - 0.5 cos(pi / 2)
    assert P.latent_noise_scale(0.0, cfg, 2.0) == pytest.approx(2.0 * 0.05)
    assert P.latent_noise_scale(0.375, cfg, 2.0) == pytest.approx(2.0 * 0.05 * 0.25)
    assert P.latent_noise_scale(0.8, cfg, 2.0) == 0


def test_w_stats(G):
    w_avg, w_std = P.compute_w_stats(G, 500, seed=3)
    z = torch.from_numpy(np.random.RandomState(3).randn(500, 16)).float()
    w = G.mapping(z, None)[:, 0].double().numpy()
    assert w_avg.shape == (1, 1, 16)
    assert np.allclose(w_avg[0, 0].numpy(), w.mean(0), atol=1e-5)
    assert w_std == pytest.approx(np.sqrt(((w - w.mean(0)) ** 2).sum() / 500), rel=1e-5)


def test_noise_regularization_is_per_image_and_matches_naive():
    torch.manual_seed(0)
    noise = {'a': torch.randn(2, 1, 32, 32), 'b': torch.randn(2, 1, 8, 8)}
    noise['a'][1] = torch.linspace(-1, 1, 32)[None, :, None]  # Smooth: strongly autocorrelated.
    reg = P.noise_regularization(noise)
    for k in range(2):
        expected = 0.0
        for v in noise.values():
            x = v[k:k + 1]
            while True:
                expected += float((x * x.roll(1, 3)).mean()) ** 2 + float((x * x.roll(1, 2)).mean()) ** 2
                if x.shape[2] <= 8:
                    break
                x = F.avg_pool2d(x, 2)
        assert float(reg[k]) == pytest.approx(expected, rel=1e-5)
    assert reg[1] > 10 * reg[0]


def test_per_image_noise_inputs_feed_each_image_and_leave_G_alone(G):
    ws = G.mapping(torch.randn(2, 16), None)
    layers = latents.noise_layers(G)
    assert list(layers)[0] == 'synthesis.b4.conv1'
    saved = copy.deepcopy(G.state_dict())
    noise = {k: torch.stack([l.noise_const[None], torch.randn_like(l.noise_const)[None]]) for k, l in layers.items()}
    img = G.synthesis(ws, noise_mode='const', noise_inputs=rendering.noise_inputs(noise))
    plain = G.synthesis(ws, noise_mode='const')
    assert torch.allclose(img[0], plain[0], atol=1e-6)       # image 0 got G's own maps
    assert (img[1] - plain[1]).abs().max() > 1e-3            # image 1 its own
    assert all(torch.equal(t, saved[k]) for k, t in G.state_dict().items())
    with pytest.raises(ValueError, match="no noise layer 'b8.torgb'"):
        G.synthesis(ws, noise_inputs={'b8.torgb': noise['synthesis.b8.conv0']})


def test_lpips_distance_equals_lpips_model(lpips_model):
    torch.manual_seed(0)
    target = torch.rand(3, 3, 32, 32) * 2 - 1
    x = (target + 0.3 * torch.randn_like(target)).clamp(-1, 1)
    d = P.LPIPSDistance(lpips_model, target)
    assert torch.allclose(d(x), lpips_model(x, target).flatten(), atol=1e-6)
    assert torch.allclose(d(x[1:], torch.tensor([1, 2])), d(x)[1:], atol=1e-6)
    big = P.LPIPSDistance(lpips_model, target, resolution=16)  # area-downsampled like NVIDIA's 256
    assert torch.allclose(big(x), lpips_model(F.interpolate(x, size=16, mode='area'),
                                              F.interpolate(target, size=16, mode='area')).flatten(), atol=1e-6)


def test_w_plus_beats_w_on_the_same_budget(G, lpips_model, w_stats, mixed_targets):
    common = dict(num_steps=40, optimize_noise=False, mse_weight=1.0)
    r_w = P.project(G, mixed_targets, P.ProjectConfig(space='w', **common), lpips_model, w_stats=w_stats)
    r_wp = P.project(G, mixed_targets, P.ProjectConfig(space='w+', **common), lpips_model, w_stats=w_stats)
    assert r_w.ws.shape == r_wp.ws.shape == (3, G.num_ws, 16)
    assert torch.equal(r_w.ws[:, :1].expand(-1, G.num_ws, -1), r_w.ws)  # W: all rows equal
    loss = lambda r: np.array([m['lpips'] + m['mse'] for m in r.metrics])
    assert (loss(r_wp) < loss(r_w)).all(), (loss(r_wp), loss(r_w))


def test_reconstruction_error_falls_over_steps(G, lpips_model, w_stats, mixed_targets):
    cfg = P.ProjectConfig(num_steps=40, optimize_noise=True)
    r = P.project(G, mixed_targets, cfg, lpips_model, w_stats=w_stats)
    start = P.project(G, mixed_targets, P.ProjectConfig(num_steps=1, initial_learning_rate=1e-12), lpips_model, w_stats=w_stats)
    for k in range(3):
        assert r.metrics[k]['lpips'] < 0.7 * start.metrics[k]['lpips']
        assert r.history['lpips'][-5:, k].mean() < r.history['lpips'][:5, k].mean()
    assert set(r.noise) == set(latents.noise_layers(G)) and r.noise['synthesis.b16.conv1'].shape == (3, 1, 16, 16)
    for v in r.noise.values():  # renormalised after every step
        assert torch.allclose(v.mean(dim=[1, 2, 3]), torch.zeros(3), atol=1e-4)
        assert torch.allclose(v.square().mean(dim=[1, 2, 3]), torch.ones(3), atol=1e-3)
    again = rendering.render(G, r.ws, r.noise)
    assert np.abs(to_uint8(again).astype(int) - r.images.astype(int)).max() <= 1


@pytest.mark.parametrize('space', ['w', 'w+'])
def test_results_do_not_depend_on_the_batch(G, lpips_model, w_stats, mixed_targets, space):
    cfg = P.ProjectConfig(space=space, num_steps=12, optimize_noise=True, mse_weight=0.5)
    together = P.project(G, mixed_targets, cfg, lpips_model, w_stats=w_stats)
    alone = P.project(G, mixed_targets[1:2], cfg, lpips_model, w_stats=w_stats)
    assert torch.allclose(together.ws[1], alone.ws[0], atol=1e-4)
    for name in together.noise:
        assert torch.allclose(together.noise[name][1], alone.noise[name][0], atol=1e-4)
    assert together.metrics[1]['lpips'] == pytest.approx(alone.metrics[0]['lpips'], abs=1e-5)
    other = P.project(G, mixed_targets.flip(0), cfg, lpips_model, w_stats=w_stats)  # other neighbours
    assert torch.allclose(together.ws[0], other.ws[2], atol=1e-4)


def test_one_image_per_pass_is_bit_exact_with_projecting_alone_and_micro_batches_are_exact(G, lpips_model, w_stats, mixed_targets):
    """micro_batch 1 (the CPU default at 256^2 and above): image k's result is bit for bit its result
    alone. Any other split gives the same optimisation up to float rounding."""
    cfg = P.ProjectConfig(num_steps=6, optimize_noise=True, mse_weight=0.5, micro_batch=1)
    together = P.project(G, mixed_targets, cfg, lpips_model, w_stats=w_stats)
    alone = P.project(G, mixed_targets[2:3], cfg, lpips_model, w_stats=w_stats)
    assert torch.equal(together.ws[2], alone.ws[0]) and np.array_equal(together.images[2], alone.images[0])
    assert together.metrics[2] == alone.metrics[0]
    for name in together.noise:
        assert torch.equal(together.noise[name][2], alone.noise[name][0])
    for micro_batch in (2, 0):
        split = P.project(G, mixed_targets, dataclasses.replace(cfg, micro_batch=micro_batch), lpips_model, w_stats=w_stats)
        assert torch.allclose(split.ws, together.ws, atol=1e-4)
    assert not torch.allclose(together.ws[0], together.ws[1], atol=1e-2)  # images differ: the checks can fail
    with pytest.raises(ValueError, match='micro_batch must be an integer >= 0'):
        P.ProjectConfig(micro_batch=-1).check()


def test_automatic_micro_batch_is_one_image_on_the_cpu_from_256_and_the_batch_below(tiny_network_factory):
    cpu, cuda = torch.device('cpu'), torch.device('cuda')
    assert P.auto_micro_batch(tiny_network_factory(resolution=16), 6, cpu) == 6
    assert P.auto_micro_batch(tiny_network_factory(resolution=256), 6, cpu) == 1
    assert P.auto_micro_batch(tiny_network_factory(resolution=256), 6, cuda) == 6


def test_early_stopping_freezes_each_image_on_its_own(G, lpips_model, w_stats, mixed_targets):
    free = P.project(G, mixed_targets, P.ProjectConfig(num_steps=20), lpips_model, w_stats=w_stats)
    threshold = float(np.median(free.history['lpips'][-1]))  # Some images get there, some do not.
    cfg = P.ProjectConfig(num_steps=20, early_stop_lpips=threshold)
    r = P.project(G, mixed_targets, cfg, lpips_model, w_stats=w_stats)
    steps = [m['steps'] for m in r.metrics]
    assert min(steps) < 20 and any(m['stopped_early'] for m in r.metrics)
    k = int(np.argmin(steps))
    assert np.isnan(r.history['lpips'][steps[k]:, k]).all()
    alone = P.project(G, mixed_targets[k:k + 1], cfg, lpips_model, w_stats=w_stats)
    assert alone.metrics[0]['steps'] == steps[k]
    assert torch.allclose(alone.ws[0], r.ws[k], atol=1e-3)  # float noise of batched convolutions only


def test_bf16_on_cpu_runs_and_improves(G, lpips_model, w_stats, mixed_targets):
    cfg = P.ProjectConfig(num_steps=8, precision='bf16', optimize_noise=True)
    r = P.project(G, mixed_targets[:2], cfg, lpips_model, w_stats=w_stats)
    fp32 = P.project(G, mixed_targets[:2], P.ProjectConfig(num_steps=8, optimize_noise=True), lpips_model, w_stats=w_stats)
    assert r.ws.dtype == torch.float32 and torch.isfinite(r.ws).all()
    for a, b in zip(r.metrics, fp32.metrics):
        assert abs(a['lpips'] - b['lpips']) < 0.05
    assert np.nanmean(r.history['lpips'][-3:]) < np.nanmean(r.history['lpips'][:3])


def test_init_ws_and_seeds(G, lpips_model, w_stats, mixed_targets):
    cfg = P.ProjectConfig(num_steps=1, initial_learning_rate=1e-12, initial_noise_factor=0.0, optimize_noise=False)
    start = torch.randn(3, G.num_ws, 16)
    r = P.project(G, mixed_targets, cfg, lpips_model, w_stats=w_stats, init_ws=start)
    assert torch.allclose(r.ws, start, atol=1e-6)
    with pytest.raises(ValueError, match='init_ws has shape'):
        P.project(G, mixed_targets, cfg, lpips_model, w_stats=w_stats, init_ws=torch.randn(2, 16))
    with pytest.raises(ValueError, match='2 seeds for 3 images'):
        P.project(G, mixed_targets, cfg, lpips_model, w_stats=w_stats, seeds=[1, 2])


def test_identity_term_is_a_clear_no_op_without_weights(G, lpips_model, w_stats, mixed_targets, monkeypatch, tmp_path):
    monkeypatch.setenv('PSTYLE_ARCFACE_WEIGHTS', str(tmp_path / 'missing.pth'))
    cfg = P.ProjectConfig(num_steps=2, id_weight=0.5, optimize_noise=False)
    with pytest.warns(UserWarning, match='identity term disabled'):
        r = P.project(G, mixed_targets[:1], cfg, lpips_model, w_stats=w_stats)
    assert r.metrics[0]['identity'] is None and 'identity term disabled' in r.notes[0]


def test_identity_term_with_a_stand_in_embedder(G, lpips_model, w_stats, mixed_targets):
    torch.manual_seed(0)
    embedder = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.Flatten(), torch.nn.LazyLinear(32))
    embedder(torch.zeros(1, 3, 16, 16))
    cfg = P.ProjectConfig(num_steps=15, id_weight=1.0, lpips_weight=0.0, optimize_noise=False)
    r = P.project(G, mixed_targets[:2], cfg, identity_model=embedder, w_stats=w_stats)
    assert all(-1 <= m['identity'] <= 1 for m in r.metrics) and r.metrics[0]['lpips'] is None


def test_config_errors():
    with pytest.raises(ValueError, match='space must be one of'):
        P.ProjectConfig(space='z').check()
    with pytest.raises(ValueError, match='precision must be one of'):
        P.ProjectConfig(precision='int8').check()
    with pytest.raises(ValueError, match='loss weights must be >= 0: mse_weight'):
        P.ProjectConfig(mse_weight=-1).check()
    with pytest.raises(ValueError, match='all loss weights are 0'):
        P.ProjectConfig(lpips_weight=0).check()
    with pytest.raises(ValueError, match='num_steps must be a positive integer'):
        P.ProjectConfig(num_steps=0).check()
    with pytest.raises(ValueError, match=r'lr_rampdown_length must be in \(0, 1\]'):
        P.ProjectConfig(lr_rampdown_length=0).check()
    with pytest.raises(ValueError, match='preset must be one of fast, default, best'):
        P.preset_config('ultra')
    with pytest.raises(ValueError, match='unknown projection settings: bogus'):
        P.preset_config('fast', bogus=1)
    cfg = P.preset_config('fast', num_steps=7, space=None)
    assert (cfg.num_steps, cfg.space, cfg.optimize_noise) == (7, 'w+', False)


def test_input_errors(G, w_stats):
    cfg = P.ProjectConfig(num_steps=1, lpips_weight=0, mse_weight=1)
    with pytest.raises(ValueError, match='targets must be uint8'):
        P.project(G, torch.zeros(1, 3, 16, 16), cfg, w_stats=w_stats)
    with pytest.raises(AssertionError, match='Wrong size'):
        P.project(G, torch.zeros(1, 3, 32, 32, dtype=torch.uint8), cfg, w_stats=w_stats)
    with pytest.raises(ValueError, match='fp16 needs a CUDA device'):
        P.project(G, torch.zeros(1, 3, 16, 16, dtype=torch.uint8), P.ProjectConfig(num_steps=1, precision='fp16'), w_stats=w_stats)
    Gc = Generator(z_dim=8, w_dim=8, c_dim=2, img_resolution=8, img_channels=3, synthesis_kwargs=dict(channel_base=64, channel_max=8))
    with pytest.raises(ValueError, match='unconditional networks only'):
        P.compute_w_stats(Gc, 10)


def test_missing_vgg_weights_message(monkeypatch, tmp_path):
    monkeypatch.setenv('TORCH_HOME', str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r'vgg16-397923af\.pth.*download\.pytorch\.org.*--lpips-weight 0 --mse-weight 1'):
        P.default_lpips('cpu')
