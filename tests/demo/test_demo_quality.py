"""Quality on the shipped demo networks (issue #12): claims that random weights cannot support.

Every assertion is relative (against the mean image, the W projection, the untuned generator, the
data's own toon rendering, a degraded generator), so it holds for the shipped networks and says
something when a change to projection, PTI, swapping or the metrics breaks them.
"""

import copy

import numpy as np
import pytest
import torch
from PIL import Image

from pstyle.datasets.synthetic_portraits import portrait_image
from pstyle.metrics.api import MetricOptions, Prebuilt, run_metrics
from pstyle.metrics.resize import DEFAULT_PROTOCOL
from pstyle.models import checkpoint, demo
from pstyle.models import render as gen
from pstyle.projectors import invert, pti
from pstyle.projectors import projector as P
from pstyle.stylize import blend, fewshot, layer_weights
from pstyle.training.train_metrics import PixelFeatureExtractor

NUM_PHOTOS = 2
STEPS = 80


@pytest.fixture(scope='module')
def nets():
    torch.manual_seed(0)
    return {name: checkpoint.load_network(name)['G_ema'] for name in demo.DEMO_NETWORKS}


@pytest.fixture(scope='module')
def photos():
    """uint8 [N, 3, 64, 64]: held-out photo renders (seed 1), as shipped."""
    arrays = [np.array(Image.open(p).convert('RGB')) for p in demo.sample_photos()[:NUM_PHOTOS]]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


def _project(G, photos, space):
    cfg = P.ProjectConfig(space=space, num_steps=STEPS, lpips_weight=0.0, mse_weight=1.0, optimize_noise=False)
    return P.project(G, photos, cfg)


@pytest.fixture(scope='module')
def projected(nets, photos):
    return {space: _project(nets['demo'], photos, space) for space in ('w', 'w+')}


def _mse(a, b):
    """Per-image MSE of uint8 images in [0, 1] units; NHWC or NCHW given consistently."""
    return ((torch.as_tensor(a).float() - torch.as_tensor(b).float()) / 255).square().flatten(1).mean(1)


def _nhwc(photos):
    return photos.permute(0, 2, 3, 1)


def _nchw(images):
    """uint8 NHWC (numpy or torch) -> float NCHW in [0, 255]."""
    return torch.as_tensor(images).permute(0, 3, 1, 2).float()


def test_the_sample_photos_are_held_out_photo_renders():
    # Seed 1 of the synthetic set; the networks trained on seed 0 (docs/demo_networks.md).
    for k, path in enumerate(demo.sample_photos()):
        assert np.array_equal(np.array(Image.open(path).convert('RGB')), portrait_image(1, k, 'photo'))


def test_projection_reconstructs_held_out_photos_far_better_than_the_mean_image(projected, photos):
    # The mean image of the distribution (64 other held-out renders): the best single image for every photo.
    mean_image = torch.from_numpy(np.stack([portrait_image(2, k, 'photo') for k in range(64)])).float().mean(0).round()
    baseline = _mse(mean_image[None].expand(len(photos), -1, -1, -1), _nhwc(photos))
    error = _mse(projected['w+'].images, _nhwc(photos))
    assert (error < 0.35 * baseline).all(), (error, baseline)


def test_w_plus_reconstructs_better_than_w(projected, photos):
    error_w = _mse(projected['w'].images, _nhwc(photos))
    error_wplus = _mse(projected['w+'].images, _nhwc(photos))
    assert error_wplus.mean() < 0.9 * error_w.mean(), (error_wplus, error_w)


def test_pivotal_tuning_improves_the_reconstruction(nets, projected, photos):
    G = nets['demo']
    cfg = pti.PTIConfig(num_steps=25, lpips_weight=0.0, regularizer_lpips_weight=0.0, learning_rate=1e-3)
    result = projected['w+']
    G_tuned, _ = pti.tune(G, photos[:1], result.ws[:1], cfg=cfg)
    before = _mse(gen.to_uint8(gen.render(G, result.ws[:1])), _nhwc(photos[:1]))
    after = _mse(gen.to_uint8(gen.render(G_tuned, result.ws[:1])), _nhwc(photos[:1]))
    assert after < 0.8 * before, (after, before)


def test_swapping_fine_rows_moves_toward_the_toon_rendering_while_coarse_rows_keep_the_layout(nets, projected):
    G_a, G_b = nets['demo'], nets['demo-toon']
    ws = projected['w+'].ws
    toon = torch.from_numpy(np.stack([portrait_image(1, k, 'toon') for k in range(NUM_PHOTOS)]))
    base = gen.to_uint8(gen.render(G_a, ws))
    swapped = gen.to_uint8(gen.render(blend.blend_generators(G_a, G_b, layer_weights.smooth_weights(G_a, 16, 0)), ws))
    full_b = gen.to_uint8(gen.render(G_b, ws))
    # Fine rows from the toon network: nearer the toon drawing of the same face than the base render is, in the
    # pixel-feature space (thumbnail, edge energy, colour histogram), and with its ink outlines (more edge energy).
    # Pixel MSE cannot tell: the blurry renders' misalignment dominates it (measured 0.0178 vs 0.0177).
    extractor = PixelFeatureExtractor(DEFAULT_PROTOCOL)

    def to_toon(images):
        return (extractor(_nchw(images))['pool3'] - extractor(_nchw(toon))['pool3']).norm(dim=1)

    def edge_energy(images):
        gray = _nchw(images).mean(1) / 255
        return ((gray[:, 1:, :-1] - gray[:, :-1, :-1]).abs() + (gray[:, :-1, 1:] - gray[:, :-1, :-1]).abs()).mean((1, 2))
    assert to_toon(swapped).mean() < 0.97 * to_toon(base).mean()  # Measured 1.33 vs 1.43.
    assert (edge_energy(swapped) > 1.15 * edge_energy(base)).all()  # Measured 0.050, 0.035 vs 0.038, 0.025.

    def layout(images):  # 8x8 thumbnails: where head, hair, shirt and background are.
        return torch.nn.functional.avg_pool2d(torch.as_tensor(images).permute(0, 3, 1, 2).float(), 8)
    # Coarse rows from the base: the layout stays nearer the base's than the whole toon network's is.
    assert _mse(layout(swapped), layout(base)).mean() < _mse(layout(full_b), layout(base)).mean()


def test_the_metrics_rank_the_demo_network_above_a_degraded_copy(nets, tmp_path):
    # The weight-free pixel-feature proxy (no Inception weights offline); real = held-out photo renders.
    real = tmp_path / 'real'
    real.mkdir()
    for k in range(150):
        Image.fromarray(portrait_image(2, k, 'photo')).save(real / f'{k:04d}.png')
    degraded = copy.deepcopy(nets['demo'])
    with torch.no_grad():
        for param in degraded.synthesis.parameters():
            param.add_(0.5 * param.abs().mean() * torch.randn_like(param))
    opts = MetricOptions(num_gen=150, batch_size=50, kid_subset_size=100)
    proxy = Prebuilt(inception=PixelFeatureExtractor(DEFAULT_PROTOCOL))
    good = run_metrics('fid,kid', real=real, network=nets['demo'], options=opts, prebuilt=proxy)
    bad = run_metrics('fid,kid', real=real, network=degraded, options=opts, prebuilt=proxy)
    assert good['fid'] < 0.5 * bad['fid'], (good['fid'], bad['fid'])
    assert 'errors' not in good and good['kid_mean'] < bad['kid_mean']


def test_few_shot_tuning_on_one_toon_drawing_brings_the_demo_network_toward_it(nets):
    # JoJoGAN on the demo base: one reference (a held-out face drawn as a toon), inverted into `demo`, the fine
    # rows mixed with random w, tuned against frozen-D features; full rank and rank 4 both move toward it.
    G, D = nets['demo'], checkpoint.load_network('demo')['D']
    reference = torch.from_numpy(portrait_image(1, 0, 'toon')).permute(2, 0, 1)[None].contiguous()
    ws_ref = _project(G, reference, 'w+').ws
    row_weights = layer_weights.resolve(G, layer_weights.make_spec())
    fresh = fewshot.mixed_latents(G, ws_ref, row_weights, seed=0, step=fewshot.GRID_STEP, samples=4)

    def distance(G_):  # Renders of mixed latents never trained on, against the reference.
        return float((gen.render(G_, fresh) - (reference.float() / 127.5 - 1)).square().mean())
    base = distance(G)
    for rank in (0, 4):
        delta, _ = fewshot.finetune(G, reference, ws_ref, row_weights, fewshot.FewshotConfig(steps=20, rank=rank), D=D)
        assert distance(fewshot.tuned_generator(G, delta)) < 0.8 * base, rank


@pytest.fixture(scope='module')
def demo_encoder(nets):
    inversion = invert.prepare_inversion('encoder', 'demo-encoder', nets['demo'])
    assert inversion.notes == []  # Trained for the shipped `demo` weights (its record's sha256 matches).
    return inversion.encoder


def test_the_shipped_encoder_inverts_held_out_photos_in_one_pass(nets, photos, demo_encoder):
    G = nets['demo']
    ws = demo_encoder(photos.float() / 127.5 - 1)
    error = _mse(gen.to_uint8(gen.render(G, ws)), _nhwc(photos))
    mean_latent = demo_encoder.latent_avg[None].expand(len(photos), -1, -1).contiguous()
    baseline = _mse(gen.to_uint8(gen.render(G, mean_latent)), _nhwc(photos))
    assert (error < 0.5 * baseline).all(), (error, baseline)  # Measured: 0.20-0.36 of the mean latent's error.


def test_encoder_then_optimize_beats_optimizing_from_the_mean_with_the_same_steps(nets, photos, demo_encoder):
    G, steps = nets['demo'], 10
    cfg = P.ProjectConfig(space='w+', num_steps=steps, lpips_weight=0.0, mse_weight=1.0, optimize_noise=False)
    mse = {method: np.mean([m['mse'] for m in invert.invert(
        G, photos, invert.Inversion(method, demo_encoder if method != 'optimize' else None), cfg).metrics])
        for method in ('encoder', 'encoder+optimize', 'optimize')}
    assert mse['encoder+optimize'] < mse['encoder'] and mse['encoder+optimize'] < 0.8 * mse['optimize'], mse
