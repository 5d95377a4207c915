"""The synthetic portraits (datasets/synthetic_portraits.py): determinism, shared faces, variety, CLI."""

import dataclasses
import hashlib

import numpy as np
import PIL.Image
import pytest
from click.testing import CliRunner

from pstyle.cli import main
from pstyle.datasets import synthetic_portraits as sp
from pstyle.datasets.dataset import ImageFolderDataset

# sha256 of image 0 and 1 of seed 0 at 64x64 (raw RGB bytes). The demo networks were trained on these
# images: a change here means a re-made dataset no longer matches them (docs/demo_networks.md).
GOLDEN = {'photo': ['a20acd56f8a72d16f8502ba7a5d98e9c4ce01540a319418bc41a1dba0b7e0ba7',
                    '5e6699e7071953119a0b0760a352b00ec87cecc3aeb3446f7ee1b6e504939cdb'],
          'toon': ['fc6730fc6a9411ccb8f229dcae401846eeef1933a030360bcfbaa77a4ef50ae6',
                   'a06653c66948cb1a63827dd567655d893958b76d64d7736f5f8b9978f0323e1e']}


def _sha(img):
    return hashlib.sha256(np.ascontiguousarray(img).tobytes()).hexdigest()


def test_image_k_depends_only_on_seed_and_k(tmp_path):
    sp.make_portraits_dataset(tmp_path / 'a', num_images=2, seed=3, style='toon')
    sp.make_portraits_dataset(tmp_path / 'b', num_images=4, seed=3, style='toon')
    for k in range(2):
        name = f'img{k:08d}.png'
        assert (tmp_path / 'a' / name).read_bytes() == (tmp_path / 'b' / name).read_bytes()
    assert not np.array_equal(sp.portrait_image(3, 0), sp.portrait_image(4, 0))
    assert not np.array_equal(sp.portrait_image(3, 0), sp.portrait_image(3, 1))


@pytest.mark.parametrize('style', sp.STYLES)
def test_images_match_the_recorded_bytes(style):
    digests = [_sha(sp.portrait_image(0, k, style)) for k in range(2)]
    assert digests == GOLDEN[style], 'the renderer changed: re-check the images and update GOLDEN'


def _foreground(img):
    """Pixels far from a flat background (the corner colour): the figure's silhouette. The threshold
    is above the photo's cast shadow and the toon's paper texture and bands."""
    corner = img[:3, :3].reshape(-1, 3).mean(0)
    return np.abs(img.astype(float) - corner).sum(-1) > 80


def _iou(a, b):
    return (a & b).sum() / (a | b).sum()


def test_photo_and_toon_draw_the_same_face():
    rng = np.random.RandomState([0, 0])
    ious, others = [], []
    for _ in range(6):
        attrs = dataclasses.replace(sp.sample_attributes(rng), background='flat',
                                    bg_colors=((40, 200, 60), (40, 200, 60)), shirt_color=(200, 40, 160))
        photo, toon = sp.render_portrait(attrs, 'photo'), sp.render_portrait(attrs, 'toon')
        assert np.abs(photo.astype(float) - toon).mean() > 8, 'the two styles should differ in colour'
        ious.append(_iou(_foreground(photo), _foreground(toon)))
        moved = dataclasses.replace(attrs, shift=(attrs.shift[0] + 0.1, attrs.shift[1]), tilt=-attrs.tilt)
        others.append(_iou(_foreground(photo), _foreground(sp.render_portrait(moved, 'toon'))))
    assert min(ious) > 0.88, ious         # Ink outlines widen the toon silhouette by about a pixel.
    assert max(others) < min(ious) - 0.1, (ious, others)    # The measure tells two poses apart.


def test_every_attribute_varies():
    attrs = [sp.sample_attributes(np.random.RandomState([0, k])) for k in range(200)]
    categorical = {'head_shape': sp.HEAD_SHAPES, 'hair_style': sp.HAIR_STYLES, 'brow_style': sp.BROW_STYLES,
                   'nose_style': sp.NOSE_STYLES, 'glasses': sp.GLASSES, 'facial_hair': sp.FACIAL_HAIR,
                   'neckline': sp.NECKLINES, 'background': sp.BACKGROUNDS, 'mouth_open': (False, True)}
    for name, options in categorical.items():
        assert {getattr(a, name) for a in attrs} == set(options), name
    for name in ('head_size', 'head_aspect', 'eye_size', 'smile', 'tilt', 'mouth_width'):
        values = np.array([getattr(a, name) for a in attrs])
        assert values.std() > 0.1 * (values.max() - values.min()) > 0, name
    assert len({a.skin for a in attrs}) > 150 and len({a.hair_color for a in attrs}) > 150


@pytest.mark.parametrize('style', sp.STYLES)
def test_images_are_varied_faces_not_constants(style):
    imgs = np.stack([sp.portrait_image(1, k, style, 64) for k in range(8)])
    assert imgs.shape == (8, 64, 64, 3) and imgs.dtype == np.uint8
    assert min(img.std() for img in imgs) > 15
    assert np.abs(imgs.astype(float) - imgs.mean(0)).mean() > 20     # Not one face with small changes.
    assert sp.portrait_image(1, 0, style, 128).shape == (128, 128, 3)


def test_bad_arguments_are_rejected(tmp_path):
    attrs = sp.sample_attributes(np.random.RandomState(0))
    with pytest.raises(ValueError, match="style must be one of photo, toon, got 'oil'"):
        sp.render_portrait(attrs, 'oil')
    with pytest.raises(ValueError, match='power of two >= 16, got 48'):
        sp.render_portrait(attrs, 'photo', 48)
    with pytest.raises(ValueError, match='at least 1, got 0'):
        sp.make_portraits_dataset(tmp_path / 'x', num_images=0)
    assert not (tmp_path / 'x').exists()


def test_cli_writes_a_dataset_the_loader_reads(tmp_path):
    args = ['dataset', '--synthetic', 'portraits', '--style', 'toon', '--max-images', '5', '--no-progress']
    res = CliRunner().invoke(main, args + ['--dest', str(tmp_path / 'p.zip')])
    assert res.exit_code == 0, res.output
    ds = ImageFolderDataset(str(tmp_path / 'p.zip'))
    assert len(ds) == 5 and ds.resolution == 64 and ds.num_channels == 3
    for k in (0, 4):      # Written unchanged: [C, H, W] as the loader gives it.
        assert np.array_equal(ds[k][0], sp.portrait_image(0, k, 'toon').transpose(2, 0, 1))
    res = CliRunner().invoke(main, args + ['--seed', '7', '--resolution', '32', '--dest', str(tmp_path / 's')])
    assert res.exit_code == 0, res.output
    img = np.asarray(PIL.Image.open(next((tmp_path / 's').rglob('*.png'))))
    assert img.shape == (32, 32, 3)


def test_cli_rejects_bad_style_usage(tmp_path):
    def run(*args):
        return CliRunner().invoke(main, ['dataset', '--dest', str(tmp_path / 'o.zip'), *args])
    res = run('--synthetic', 'shapes', '--style', 'toon')
    assert res.exit_code == 2 and '--style applies only to --synthetic portraits' in res.output
    res = run('--synthetic', 'portraits', '--style', 'oil')
    assert res.exit_code == 2 and "'oil' is not one of 'photo', 'toon'" in res.output
    res = run('--source', str(tmp_path), '--seed', '3')
    assert res.exit_code == 2 and '--seed applies only to --synthetic data' in res.output
    assert not (tmp_path / 'o.zip').exists()
