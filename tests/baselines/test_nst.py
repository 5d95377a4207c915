"""Gatys et al. style transfer on a VGG19 with random but deterministic weights."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from pstyle.baselines import color, nst
from pstyle.baselines.nst import NSTOptions, nst_folder
from pstyle.metrics.weights import WeightsNotFoundError


class Spy(torch.nn.Module):
    """Records the size of every image the VGG sees."""

    def __init__(self, vgg):
        super().__init__()
        self.vgg, self.sizes = vgg, []

    def forward(self, x, taps):
        self.sizes.append(tuple(x.shape[2:]))
        return self.vgg(x, taps)


def _opts(**kwargs):
    return NSTOptions(**dict(dict(steps=4, size=0), **kwargs))


def test_gram_matches_a_float64_reference():
    feat = torch.randn(2, 5, 3, 4)
    ref = torch.zeros(2, 5, 5, dtype=torch.float64)
    f64 = feat.double()
    for n in range(2):
        for i in range(5):
            for j in range(5):
                ref[n, i, j] = (f64[n, i] * f64[n, j]).sum() / (5 * 3 * 4)
    assert torch.allclose(nst.gram(feat).double(), ref, atol=1e-6)
    assert nst.gram(feat.bfloat16()).dtype == torch.float32 and nst.gram(f64).dtype == torch.float64


def test_tv_loss_is_per_image():
    x = torch.zeros(2, 3, 4, 4)
    x[1, :, :, 2:] = 1
    assert nst.tv_loss(x).tolist() == [0.0, pytest.approx(1 / 3)]   # one step in each of the 4 rows of 3 diffs


@pytest.mark.parametrize('optimizer, lr', [('lbfgs', 1.0), ('adam', 0.02)])
def test_the_loss_decreases(vgg, image, optimizer, lr):
    losses = []
    nst.transfer(vgg, [image(0, 16, 20)], [image(1, 20, 20)], _opts(optimizer=optimizer, learning_rate=lr, steps=6, tv_weight=1.0),
                 callback=lambda step, batch: losses.append(float(batch[0])))
    assert len(losses) == 6 and losses[-1] < 0.5 * losses[0]


def test_runs_are_deterministic(vgg, image):
    args = ([image(0, 16, 20)], [image(1, 20, 20)], _opts(init='noise', seed=3, steps=3))
    assert torch.equal(nst.transfer(vgg, *args), nst.transfer(vgg, *args))


def test_noise_init_is_seeded_per_photo():
    a = nst._noise((2, 3, 4, 5), seed=1, device='cpu')
    assert torch.equal(a[0], a[1]) and torch.equal(a[:1], nst._noise((1, 3, 4, 5), seed=1, device='cpu'))
    assert not torch.equal(a[:1], nst._noise((1, 3, 4, 5), seed=2, device='cpu'))


@pytest.mark.parametrize('optimizer, lr', [('lbfgs', 1.0), ('adam', 0.02)])
def test_results_do_not_depend_on_the_batch(vgg64, image, optimizer, lr):
    """In float64 (float32 convolutions differ at the 1e-7 level between batch sizes, which L-BFGS
    amplifies to about 1e-3)."""
    photos, style = [image(0, 16, 20), image(5, 16, 20)], [image(1, 16, 16)]
    opts = _opts(optimizer=optimizer, learning_rate=lr, steps=4)
    batch = nst.transfer(vgg64, photos, style, opts)
    alone = nst.transfer(vgg64, photos[1:], style, opts)
    assert batch.dtype == torch.float64 and torch.allclose(batch[1], alone[0], atol=1e-10, rtol=0)


def test_output_has_the_photo_size_and_scales_go_coarse_to_fine(vgg, image):
    spy = Spy(vgg)
    out = nst.transfer(spy, [image(0, 36, 44)], [image(1, 30, 30)], _opts(scales=2, steps=2))
    assert out.shape == (1, 3, 36, 44)
    photo_sizes = [s for s in spy.sizes if s not in ((22, 22), (44, 44))]   # the style image at each scale
    assert photo_sizes[0] == (18, 22) and photo_sizes[-1] == (36, 44)


def test_style_blend_weights_blend_the_gram_targets(vgg, image):
    a, b = (torch.from_numpy(np.array(image(s, 24, 24))).permute(2, 0, 1)[None].float() / 255 for s in (1, 2))
    opts = _opts(style_layers=('relu1_1', 'relu3_1'))
    blended = nst.style_grams(vgg, [a, b], [0.25, 0.75], opts)
    ga, gb = nst.style_grams(vgg, [a], [1.0], opts), nst.style_grams(vgg, [b], [1.0], opts)
    for k in opts.style_layers:
        assert torch.allclose(blended[k], 0.25 * ga[k] + 0.75 * gb[k], rtol=1e-5, atol=1e-7)
    assert opts.blend_weights(2) == [0.5, 0.5] and _opts(style_blend_weights=[1, 3]).blend_weights(2) == [0.25, 0.75]


def test_luminance_mode_keeps_the_photo_colours_exactly(vgg, image):
    photo = image(0, 24, 28)
    out = nst.transfer(vgg, [photo], [image(1, 24, 24)], _opts(original_colors='luminance'))
    content = torch.from_numpy(np.array(photo)).permute(2, 0, 1)[None].float() / 255
    assert torch.allclose(color.rgb_to_yiq(out)[:, 1:], color.rgb_to_yiq(content)[:, 1:], atol=1e-5)
    assert not torch.allclose(color.luminance(out), color.luminance(content), atol=1e-3)   # the luminance was stylised


def test_histogram_mode_gives_each_style_the_photo_colour_statistics(image):
    photos = torch.stack([torch.from_numpy(np.array(image(s, 20, 20))).permute(2, 0, 1).float() / 255 for s in (0, 3)])
    photos = photos * 0.5 + 0.25                    # moderate colours: the matched style stays inside [0, 1]
    styles = nst._prepare_styles([image(1, 24, 24)], photos, 24, _opts(original_colors='histogram'), 'cpu')
    assert styles[0].shape == (2, 3, 24, 24) and 0 < styles[0].min() and styles[0].max() < 1
    mean_s, cov_s = color._mean_cov(styles[0])
    mean_c, cov_c = color._mean_cov(photos)
    assert torch.allclose(mean_s, mean_c, atol=1e-6) and torch.allclose(cov_s, cov_c, atol=1e-6)


def test_bf16_autocast_gives_nearly_the_fp32_loss(vgg, image):
    args = ([image(0, 16, 16)], [image(1, 16, 16)])
    losses = {}
    for precision in ('fp32', 'bf16'):
        nst.transfer(vgg, *args, _opts(precision=precision, steps=1), callback=lambda s, batch: losses.update({precision: float(batch[0])}))
    assert losses['bf16'] == pytest.approx(losses['fp32'], rel=0.1)


def test_folder_runs_group_sizes_and_report_unreadable_photos(vgg, image, tmp_path):
    folder = tmp_path / 'photos'
    folder.mkdir()
    image(0, 24, 32).save(folder / 'a.png')
    image(2, 32, 24).save(folder / 'b.png')
    image(4, 24, 32).save(folder / 'c.png')
    (folder / 'd.png').write_bytes(b'broken')
    image(1, 24, 24).save(tmp_path / 'style.png')
    manifest = nst_folder(folder, [tmp_path / 'style.png'], tmp_path / 'out', _opts(size=28, steps=2), vgg=vgg, log=lambda _: None)
    assert [p['status'] for p in manifest['items']] == ['ok', 'ok', 'ok', 'failed']
    assert 'd.png: cannot read image' in manifest['failures'][0]['error']
    sizes = {name: Image.open(tmp_path / 'out' / f'{name}.png').size for name in 'abc'}
    assert sizes == dict(a=(28, 21), b=(21, 28), c=(28, 21))
    assert json.loads((tmp_path / 'out' / 'manifest.json').read_text())['method'] == 'nst'


def test_a_photo_too_small_for_vgg_is_reported(vgg, image, tmp_path):
    image(0, 10, 10).save(tmp_path / 'tiny.png')
    image(1, 24, 24).save(tmp_path / 'style.png')
    manifest = nst_folder(tmp_path / 'tiny.png', [tmp_path / 'style.png'], tmp_path / 'out', _opts(), vgg=vgg, log=lambda _: None)
    assert manifest['num_failed'] == 1 and 'too small for VGG19' in manifest['failures'][0]['error']


def test_missing_vgg_weights_name_the_file(image, tmp_path, monkeypatch):
    monkeypatch.setenv('PSTYLE_CACHE_DIR', str(tmp_path / 'cache'))
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch'))
    monkeypatch.setenv('PSTYLE_OFFLINE', '1')
    monkeypatch.delenv('PSTYLE_VGG19_WEIGHTS', raising=False)
    image(0, 24, 24).save(tmp_path / 'p.png')
    with pytest.raises(WeightsNotFoundError, match=r'vgg19-dcbb9e9d.pth not found.*download.pytorch.org'):
        nst_folder(tmp_path / 'p.png', [tmp_path / 'p.png'], tmp_path / 'out', _opts())


@pytest.mark.parametrize('kwargs, message', [
    (dict(optimizer='sgd'), 'optimizer must be one of lbfgs, adam'),
    (dict(content_layers=('relu9_9',)), "unknown VGG19 layer 'relu9_9'"),
    (dict(style_blend_weights=[1.0]), 'needs 2 values'),
    (dict(original_colors='sepia'), 'original_colors must be one of none, luminance, histogram'),
])
def test_bad_options_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        _opts(**kwargs).check(num_styles=2)
