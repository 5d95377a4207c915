"""AdaIN on the published-format weights: parity with the original test.py, options, errors, folders."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from pstyle.baselines import adain
from pstyle.baselines.adain import AdainOptions, adain_folder


def _run(published, tmp_path, styles=('style',), **opts):
    outdir = tmp_path / 'out'
    manifest = adain_folder(published['content'], [published[s] for s in styles], outdir, vgg=published['vgg'],
                            decoder_file=published['decoder'], opts=AdainOptions(content_size=0, style_size=0, **opts),
                            log=lambda _: None)
    return manifest, outdir


@pytest.mark.parametrize('key, styles, opts', [
    ('adain_alpha1', ('style',), dict(alpha=1.0)),
    ('adain_alpha05', ('style',), dict(alpha=0.5)),
    ('adain_interp_3_7', ('style', 'style2'), dict(style_weights=[3, 7])),
    ('adain_preserve_color', ('style',), dict(preserve_color=True)),
])
def test_outputs_match_the_original_test_py(published, ref, tmp_path, assert_parity, key, styles, opts):
    manifest, outdir = _run(published, tmp_path, styles, **opts)
    assert manifest['num_ok'] == 1 and manifest['items'][0]['outputs'] == ['content.png']
    out = np.asarray(Image.open(outdir / 'content.png'))
    diff = assert_parity(out, ref[key][0])
    print(f'{key}: max {diff.max()}, mean {diff.mean():.5f}')


def test_several_styles_without_weights_give_one_image_per_style(published, ref, tmp_path, assert_parity):
    manifest, outdir = _run(published, tmp_path, ('style', 'style2'))
    assert manifest['items'][0]['outputs'] == ['content-style.png', 'content-style2.png']
    assert_parity(np.asarray(Image.open(outdir / 'content-style.png')), ref['adain_alpha1'][0])


def test_content_size_resizes_the_shorter_side_like_torchvision_resize(published, tmp_path):
    img = Image.open(published['content']).resize((64, 40))
    img.save(tmp_path / 'wide.png')
    outdir = tmp_path / 'out'
    adain_folder(tmp_path / 'wide.png', [published['style']], outdir, vgg=published['vgg'], decoder_file=published['decoder'],
                 opts=AdainOptions(content_size=32, style_size=32), log=lambda _: None)
    # Resize(32) on 64x40: shorter side 32, longer int(32 * 64 / 40) = 51 (output keeps the content size).
    assert Image.open(outdir / 'wide.png').size == (51, 32)


def test_style_interpolation_weights_are_normalised_to_sum_one(published, tmp_path):
    a = _run(published, tmp_path / 'a', ('style', 'style2'), style_weights=[3, 7])[1] / 'content.png'
    b = _run(published, tmp_path / 'b', ('style', 'style2'), style_weights=[0.3, 0.7])[1] / 'content.png'
    assert np.array_equal(np.asarray(Image.open(a)), np.asarray(Image.open(b)))


def test_adain_matches_the_style_statistics_exactly():
    torch.manual_seed(0)
    content, style = torch.randn(2, 5, 6, 7), torch.randn(2, 5, 4, 3) * 3 + 1
    out = adain.adaptive_instance_normalization(content, style)
    mean_o, std_o = adain.calc_mean_std(out, eps=0)
    mean_s, std_s = adain.calc_mean_std(style, eps=1e-5)
    assert torch.allclose(mean_o, mean_s, atol=1e-5)
    # sigma(out) = sigma(s) * sigma(c) / sqrt(var(c) + eps): equal up to the eps in the content's std.
    assert torch.allclose(std_o, std_s, rtol=1e-4)


def test_coral_gives_the_style_the_content_mean_and_spread():
    torch.manual_seed(1)
    source, target = torch.rand(3, 20, 30), torch.rand(3, 30, 20) * 0.5 + 0.2
    out = adain.coral(source, target).reshape(3, -1)
    assert torch.allclose(out.mean(1), target.reshape(3, -1).mean(1), atol=1e-5)
    assert torch.allclose(out.std(1), target.reshape(3, -1).std(1), rtol=0.01)
    # The original sums the covariances over pixels (no 1/n), so the spread follows the pixel-count ratio.
    small = adain.coral(source, target[:, :15]).reshape(3, -1)
    half_std = target[:, :15].reshape(3, -1).std(1)
    assert torch.allclose(small.std(1) / half_std, torch.full((3,), 0.5 ** 0.5), rtol=0.01)


def test_odd_sizes_come_out_at_the_input_size(published, tmp_path):
    Image.open(published['content']).resize((37, 29)).save(tmp_path / 'odd.png')
    outdir = tmp_path / 'out'
    adain_folder(tmp_path / 'odd.png', [published['style']], outdir, vgg=published['vgg'], decoder_file=published['decoder'],
                 opts=AdainOptions(content_size=0, style_size=0), log=lambda _: None)
    assert Image.open(outdir / 'odd.png').size == (37, 29)


def test_an_unreadable_image_in_a_folder_is_reported_and_the_others_go_on(published, tmp_path):
    folder = tmp_path / 'photos'
    folder.mkdir()
    for name in ('a.png', 'c.png'):
        Image.open(published['content']).save(folder / name)
    (folder / 'b.jpg').write_bytes(b'not a jpeg')
    Image.open(published['content']).resize((8, 8)).save(folder / 'd_tiny.png')
    outdir = tmp_path / 'out'
    manifest = adain_folder(folder, [published['style']], outdir, vgg=published['vgg'], decoder_file=published['decoder'],
                            opts=AdainOptions(content_size=0, style_size=0), log=lambda _: None)
    status = {p['name']: p['status'] for p in manifest['items']}
    assert status == dict(a='ok', b='failed', c='ok', d_tiny='failed')
    errors = {f['input'].rsplit('/', 1)[-1]: f['error'] for f in manifest['failures']}
    assert 'b.jpg' in errors['b.jpg'] and 'cannot read image' in errors['b.jpg']
    assert 'too small' in errors['d_tiny.png']
    assert sorted(p.name for p in outdir.iterdir()) == ['a.png', 'c.png', 'manifest.json']
    on_disk = json.loads((outdir / 'manifest.json').read_text())
    assert on_disk['num_failed'] == 2 and on_disk['inputs']['vgg']['sha256'] and on_disk['seconds_per_photo'] > 0


def test_a_missing_tensor_is_named(published, tmp_path):
    state = torch.load(published['decoder'], weights_only=True)
    del state['14.weight']
    torch.save(state, tmp_path / 'decoder.pth')
    with pytest.raises(ValueError, match=r"decoder.pth.*1 missing keys.*'14.weight'"):
        adain.load_adain(published['vgg'], tmp_path / 'decoder.pth')


def test_swapped_files_are_refused_with_the_file_named(published):
    with pytest.raises(ValueError, match=r'decoder.pth: not an AdaIN vgg_normalised.pth state_dict'):
        adain.load_adain(published['decoder'], published['vgg'])


def test_an_image_given_as_weights_is_refused(published):
    with pytest.raises(ValueError, match=r'content.png: not a PyTorch state_dict file for AdaIN vgg_normalised.pth'):
        adain.load_adain(published['content'], published['decoder'])


@pytest.mark.parametrize('opts, message', [
    (dict(alpha=1.5), r'alpha must be in \[0, 1\]'),
    (dict(style_weights=[1, 2, 3]), '--style-weights has 3 values for 1 styles'),
    (dict(style_weights=[0]), 'positive sum'),
])
def test_bad_options_are_refused(published, tmp_path, opts, message):
    with pytest.raises(ValueError, match=message):
        _run(published, tmp_path, **opts)


def test_bf16_autocast_stays_close_to_fp32_and_the_manifest_records_it(published, tmp_path):
    images = {}
    for precision in ('fp32', 'bf16'):
        manifest, outdir = _run(published, tmp_path / precision, precision=precision)
        assert manifest['num_ok'] == 1 and manifest['options']['precision'] == precision
        images[precision] = np.asarray(Image.open(outdir / 'content.png')).astype(np.int32)
    diff = np.abs(images['bf16'] - images['fp32'])
    # bf16 keeps 8 bits of mantissa: a few grey levels at most, on average under one; not bit-equal (autocast ran).
    assert images['fp32'].std() > 10 and 0 < diff.mean() < 1.5 and diff.max() <= 8, (diff.mean(), diff.max())


def test_fp16_on_the_cpu_is_refused_before_any_work(published, tmp_path):
    with pytest.raises(ValueError, match='fp16 needs a CUDA device; on the CPU use --precision bf16'):
        _run(published, tmp_path, precision='fp16', device='cpu')
    assert not (tmp_path / 'out').exists()
