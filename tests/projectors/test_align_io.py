"""Robust loading (projectors/image_io.py): every Pillow mode a user's photo may arrive in."""

import io

import numpy as np
import pytest
from PIL import Image, ImageCms

from pstyle.projectors.image_io import IMAGE_EXTENSIONS, ImageLoadError, list_images, load_image, to_rgb


def _save(tmp_path, img, name, **kwargs):
    path = tmp_path / name
    img.save(path, **kwargs)
    return path


def _gradient_rgb(w=40, h=30):
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 255 // (w - 1), y * 255 // (h - 1), (x + y) % 256], -1).astype(np.uint8)


def test_rgb_png_round_trip(tmp_path):
    arr = _gradient_rgb()
    out = load_image(_save(tmp_path, Image.fromarray(arr), 'a.png'))
    assert out.mode == 'RGB' and np.array_equal(np.asarray(out), arr)


@pytest.mark.parametrize('orientation, stored', [
    (3, Image.Transpose.ROTATE_180),  # stored upside down
    (6, Image.Transpose.ROTATE_90),   # stored turned left; the viewer turns it right
    (8, Image.Transpose.ROTATE_270),
])
def test_exif_orientation_is_applied(tmp_path, orientation, stored):
    upright = _gradient_rgb(40, 30)
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = _save(tmp_path, Image.fromarray(upright).transpose(stored), 'o.png', exif=exif)
    out = load_image(path)
    assert out.size == (40, 30)
    assert np.array_equal(np.asarray(out), upright)


def test_grayscale_and_bilevel(tmp_path):
    grey = np.arange(256, dtype=np.uint8).reshape(16, 16)
    out = np.asarray(load_image(_save(tmp_path, Image.fromarray(grey, 'L'), 'g.png')))
    assert out.shape == (16, 16, 3) and np.array_equal(out[..., 0], grey) and np.array_equal(out[..., 2], grey)
    bits = Image.fromarray(grey >= 128).convert('1')
    out = np.asarray(load_image(_save(tmp_path, bits, 'b.png')))
    assert set(np.unique(out)) == {0, 255} and np.array_equal(out[..., 1] == 255, grey >= 128)


def test_rgba_is_composited_on_white(tmp_path):
    rgba = np.zeros((4, 3, 4), np.uint8)
    rgba[..., :3] = (200, 10, 10)                  # red everywhere, even under transparent pixels
    rgba[0, :, 3], rgba[1, :, 3], rgba[2:, :, 3] = 0, 128, 255
    out = np.asarray(load_image(_save(tmp_path, Image.fromarray(rgba, 'RGBA'), 't.png'))).astype(int)
    assert (out[0] == 255).all()                   # fully transparent -> the white backdrop
    assert (out[2:] == (200, 10, 10)).all()        # opaque -> the colour itself
    expected_half = np.rint(np.array([200, 10, 10]) * 128 / 255 + 255 * 127 / 255)
    assert np.abs(out[1] - expected_half).max() <= 1


def test_la_is_composited_on_white():
    la = Image.fromarray(np.dstack([np.full((2, 2), 30, np.uint8), np.array([[0, 255], [255, 0]], np.uint8)]), 'LA')
    out = np.asarray(to_rgb(la))
    assert (out[0, 0] == 255).all() and (out[0, 1] == 30).all()


def test_cmyk(tmp_path):
    cmyk = np.zeros((2, 2, 4), np.uint8)
    cmyk[0, 0] = (255, 0, 0, 0)   # cyan
    cmyk[0, 1] = (0, 0, 0, 255)   # black
    cmyk[1, 0] = (0, 0, 0, 0)     # paper white
    cmyk[1, 1] = (0, 255, 255, 0)  # red
    out = np.asarray(load_image(_save(tmp_path, Image.fromarray(cmyk, 'CMYK'), 'c.tif')))
    assert out.shape == (2, 2, 3)
    assert tuple(out[0, 0]) == (0, 255, 255) and tuple(out[0, 1]) == (0, 0, 0)
    assert tuple(out[1, 0]) == (255, 255, 255) and tuple(out[1, 1]) == (255, 0, 0)


def test_palette_with_and_without_transparency(tmp_path):
    pal = Image.new('P', (2, 1))
    pal.putpalette([0, 0, 255, 0, 255, 0] + [0] * 762)
    pal.putpixel((0, 0), 0)
    pal.putpixel((1, 0), 1)
    out = np.asarray(load_image(_save(tmp_path, pal, 'p.png')))
    assert tuple(out[0, 0]) == (0, 0, 255) and tuple(out[0, 1]) == (0, 255, 0)
    out = np.asarray(load_image(_save(tmp_path, pal, 'pt.png', transparency=0)))
    assert tuple(out[0, 0]) == (255, 255, 255) and tuple(out[0, 1]) == (0, 255, 0)


def test_16bit_grey_png_scales_to_8bit(tmp_path):
    values = np.array([[0, 257 * 128, 65535, 1000]], np.uint16)
    path = _save(tmp_path, Image.fromarray(values), 'd.png')
    with Image.open(path) as raw:
        assert raw.mode.startswith('I')  # Pillow keeps the 16 bits (mode I;16 or I)
    out = np.asarray(load_image(path))[..., 0]
    assert out.tolist() == [[0, 128, 255, 4]]  # 1000 / 257 = 3.9 -> 4, not clipped to 255


@pytest.mark.parametrize('mode', ['I;16', 'I;16B'])
def test_16bit_modes(mode):
    img = Image.fromarray(np.array([[0, 32896, 65535]], np.uint16))  # mode I;16 (little-endian)
    if mode != img.mode:
        img = img.convert('I').convert(mode)
    assert img.mode == mode
    assert np.asarray(to_rgb(img))[0, :, 1].tolist() == [0, 128, 255]


def test_int32_mode_uses_16bit_scale_only_above_255():
    wide = Image.fromarray(np.array([[0, 65535, 32896]], np.int32), 'I')
    assert np.asarray(to_rgb(wide))[0, :, 0].tolist() == [0, 255, 128]
    narrow = Image.fromarray(np.array([[0, 200, 255]], np.int32), 'I')
    assert np.asarray(to_rgb(narrow))[0, :, 0].tolist() == [0, 200, 255]


def test_float_mode():
    unit = Image.fromarray(np.array([[0.0, 0.5, 1.0]], np.float32), 'F')
    assert np.asarray(to_rgb(unit))[0, :, 0].tolist() == [0, 128, 255]
    wide = Image.fromarray(np.array([[-5.0, 100.0, 300.0]], np.float32), 'F')
    assert np.asarray(to_rgb(wide))[0, :, 0].tolist() == [0, 100, 255]


def test_embedded_srgb_profile_keeps_colours(tmp_path):
    arr = _gradient_rgb()
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile('sRGB')).tobytes()
    out = np.asarray(load_image(_save(tmp_path, Image.fromarray(arr), 'icc.png', icc_profile=icc))).astype(int)
    assert np.abs(out - arr).max() <= 2


def test_broken_icc_profile_is_ignored(tmp_path):
    arr = _gradient_rgb()
    out = load_image(_save(tmp_path, Image.fromarray(arr), 'badicc.png', icc_profile=b'not a profile'))
    assert np.array_equal(np.asarray(out), arr)


def test_missing_file_error_names_it(tmp_path):
    with pytest.raises(ImageLoadError, match=r'nope\.jpg: no such image file'):
        load_image(tmp_path / 'nope.jpg')


def test_not_an_image_error_names_it(tmp_path):
    path = tmp_path / 'fake.jpg'
    path.write_bytes(b'this is not a jpeg at all' * 10)
    with pytest.raises(ImageLoadError, match=r'fake\.jpg: cannot read image'):
        load_image(path)


def test_truncated_file_error_names_it(tmp_path):
    buf = io.BytesIO()
    Image.fromarray(_gradient_rgb(64, 64)).save(buf, 'PNG')
    path = tmp_path / 'cut.png'
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(ImageLoadError, match=r'cut\.png: cannot read image'):
        load_image(path)


def test_list_images_filters_by_extension(tmp_path):
    for name in ('b.JPG', 'a.png', 'notes.txt', 'a.json'):
        (tmp_path / name).write_bytes(b'x')
    (tmp_path / 'sub.png').mkdir()
    assert [p.name for p in list_images(tmp_path)] == ['a.png', 'b.JPG']
    assert '.jpg' in IMAGE_EXTENSIONS and '.png' in IMAGE_EXTENSIONS
