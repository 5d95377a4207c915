"""Tests for training/dataset_tool.py: conversion, NVIDIA layout, transforms, labels, errors."""

import json
import re
import sys
import types
import zipfile

import numpy as np
import PIL.Image
import pytest

from pstyle.datasets import dataset_tool
from pstyle.datasets.dataset_tool import check_resolution, convert_dataset, nvidia_image_name

NAME_RE = re.compile(r'^\d{5}/img\d{8}\.png$')


def _save(path, arr, mode=None, **kw):
    path.parent.mkdir(parents=True, exist_ok=True)
    PIL.Image.fromarray(np.asarray(arr, dtype=np.uint8), mode).save(path, **kw)


def _rand(shape, seed):
    return np.random.RandomState(seed).randint(0, 256, size=shape, dtype=np.uint8)


@pytest.fixture
def mixed_src(tmp_path):
    """RGB png/jpg (non-square), grayscale, RGBA, a corrupt file, a nested folder and a text file."""
    src = tmp_path / 'src'
    _save(src / 'a.png', _rand([20, 30, 3], 0))
    _save(src / 'b.jpg', _rand([40, 24, 3], 1))
    _save(src / 'sub' / 'gray.png', _rand([16, 16], 2))
    rgba = _rand([16, 16, 4], 3)
    rgba[..., 3] = 0  # fully transparent: must come out white
    _save(src / 'sub' / 'rgba.png', rgba)
    (src / 'corrupt.png').write_bytes(b'this is not a png')
    (src / 'notes.txt').write_text('ignored')
    return src


def _quiet(*_args):
    pass


def _read_zip(path):
    with zipfile.ZipFile(path) as z:
        names = z.namelist()
        meta = json.loads(z.read('dataset.json'))
        images = {n: np.array(PIL.Image.open(z.open(n))) for n in names if n.endswith('.png')}
        stored = all(info.compress_type == zipfile.ZIP_STORED for info in z.infolist())
    return names, meta, images, stored


def test_folder_to_zip_nvidia_layout(mixed_src, tmp_path):
    logs = []
    rep = convert_dataset(mixed_src, tmp_path / 'out.zip', transform='center-crop', resolution=16, log=logs.append)
    names, meta, images, stored = _read_zip(tmp_path / 'out.zip')
    assert stored
    assert sorted(images) == [nvidia_image_name(i) for i in range(4)]
    assert all(NAME_RE.match(n) for n in images) and nvidia_image_name(1234) == '00001/img00001234.png'
    assert all(im.shape == (16, 16, 3) and im.dtype == np.uint8 for im in images.values())
    assert meta['labels'] is None
    assert rep.num_written == 4 and rep.channels == 3 and rep.num_gray_promoted == 1 and rep.num_ignored == 1
    # The corrupt file is reported by name, in the printed summary and in dataset.json.
    assert [n for n, _ in rep.skipped] == ['corrupt.png']
    assert 'corrupt.png' in logs[-1] and 'skipped 1' in logs[-1]
    assert meta['pstyle']['skipped'][0]['file'] == 'corrupt.png'
    assert meta['pstyle']['transform'] == 'center-crop' and meta['pstyle']['resize_filter'] == 'lanczos'
    assert meta['pstyle']['resolution'] == 16 and meta['pstyle']['source'] == str(mixed_src.resolve())
    # Sorted source order: a.png, b.jpg, sub/gray.png, sub/rgba.png (corrupt.png skipped).
    gray = images[nvidia_image_name(2)]
    assert np.array_equal(gray[..., 0], gray[..., 1]) and np.array_equal(gray[..., 0], gray[..., 2])
    assert (images[nvidia_image_name(3)] == 255).all()


def test_folder_dest_and_zip_source(mixed_src, tmp_path):
    convert_dataset(mixed_src, tmp_path / 'first.zip', transform='center-crop', resolution=8, log=_quiet)
    convert_dataset(tmp_path / 'first.zip', tmp_path / 'folder', resolution=8, log=_quiet)
    files = sorted(p.relative_to(tmp_path / 'folder').as_posix() for p in (tmp_path / 'folder').rglob('*') if p.is_file())
    assert files == ['00000/img00000000.png', '00000/img00000001.png', '00000/img00000002.png',
                     '00000/img00000003.png', 'dataset.json']
    _, _, first, _ = _read_zip(tmp_path / 'first.zip')
    for name, im in first.items():  # same size, no transform: the pixels pass through unchanged
        assert np.array_equal(np.array(PIL.Image.open(tmp_path / 'folder' / name)), im)


def test_center_crop_pixels(tmp_path):
    arr = np.zeros([8, 24, 3], np.uint8)
    arr[:, 8:16] = _rand([8, 8, 3], 5)
    _save(tmp_path / 'src' / 'x.png', arr)
    convert_dataset(tmp_path / 'src', tmp_path / 'o.zip', transform='center-crop', resolution=8, log=_quiet)
    _, _, images, _ = _read_zip(tmp_path / 'o.zip')
    assert np.array_equal(images[nvidia_image_name(0)], arr[:, 8:16])


def test_center_crop_wide(tmp_path):
    arr = _rand([16, 32, 3], 6)  # already 2:1: resized to 8x4, pasted in the middle rows
    _save(tmp_path / 'src' / 'car.png', arr)
    convert_dataset(tmp_path / 'src', tmp_path / 'o.zip', transform='center-crop-wide', resolution=8,
                    resize_filter='box', log=_quiet)
    _, meta, images, _ = _read_zip(tmp_path / 'o.zip')
    out = images[nvidia_image_name(0)]
    assert out.shape == (8, 8, 3) and (out[:2] == 0).all() and (out[6:] == 0).all()
    expected = arr.reshape(4, 4, 8, 4, 3).astype(np.float64).mean(axis=(1, 3))  # 4x4 box filter
    assert np.abs(out[2:6].astype(np.float64) - expected).max() <= 1
    assert meta['pstyle']['resize_filter'] == 'box'


def test_resize_filters_differ(tmp_path):
    _save(tmp_path / 'src' / 'x.png', _rand([32, 32, 3], 7))
    for f in ('box', 'lanczos'):
        convert_dataset(tmp_path / 'src', tmp_path / f'{f}.zip', resolution=8, resize_filter=f, log=_quiet)
    box, lanczos = (_read_zip(tmp_path / f'{f}.zip')[2][nvidia_image_name(0)] for f in ('box', 'lanczos'))
    assert not np.array_equal(box, lanczos)


def test_all_grayscale_keeps_one_channel(tmp_path):
    for i in range(2):
        _save(tmp_path / 'src' / f'{i}.png', _rand([8, 8], i))
    rep = convert_dataset(tmp_path / 'src', tmp_path / 'g.zip', log=_quiet)
    assert rep.channels == 1 and _read_zip(tmp_path / 'g.zip')[2][nvidia_image_name(0)].shape == (8, 8)
    rep = convert_dataset(tmp_path / 'src', tmp_path / 'rgb.zip', channels=3, log=_quiet)
    assert rep.channels == 3 and _read_zip(tmp_path / 'rgb.zip')[2][nvidia_image_name(0)].shape == (8, 8, 3)


def test_truncated_image_skipped(tmp_path):
    _save(tmp_path / 'src' / 'ok.png', _rand([8, 8, 3], 0))
    _save(tmp_path / 'src' / 'trunc.png', _rand([64, 64, 3], 1))
    data = (tmp_path / 'src' / 'trunc.png').read_bytes()
    (tmp_path / 'src' / 'trunc.png').write_bytes(data[: len(data) // 2])  # header fine, pixel data cut
    rep = convert_dataset(tmp_path / 'src', tmp_path / 'o.zip', transform='center-crop', resolution=8, log=_quiet)
    assert rep.num_written == 1 and rep.skipped[0][0] == 'trunc.png'


def test_max_images(mixed_src, tmp_path):
    rep = convert_dataset(mixed_src, tmp_path / 'o.zip', transform='center-crop', resolution=8, max_images=2, log=_quiet)
    names, meta, _, _ = _read_zip(tmp_path / 'o.zip')
    assert rep.num_written == 2 and len([n for n in names if n.endswith('.png')]) == 2
    assert meta['pstyle']['num_images'] == 2


def test_exif_orientation_applied(tmp_path):
    arr = np.zeros([8, 16, 3], np.uint8)  # stored 16 wide x 8 high, left half white
    arr[:, :8] = 255
    img = PIL.Image.fromarray(arr)
    exif = img.getexif()
    exif[0x0112] = 6  # display rotated 90 degrees clockwise: left half -> top half
    (tmp_path / 'src').mkdir()
    img.save(tmp_path / 'src' / 'p.png', exif=exif.tobytes())
    convert_dataset(tmp_path / 'src', tmp_path / 'o.zip', transform='center-crop', resolution=8,
                    resize_filter='box', log=_quiet)
    out = _read_zip(tmp_path / 'o.zip')[2][nvidia_image_name(0)]
    assert (out[:4] == 255).all() and (out[4:] == 0).all()

#----------------------------------------------------------------------------
# Labels

def test_labels_from_source_dataset_json(tmp_path):
    for i in range(3):
        _save(tmp_path / 'src' / 'cls' / f'{i}.png', _rand([8, 8, 3], i))
    labels = {'labels': [['cls/0.png', 2], ['cls/1.png', 0], ['cls/2.png', 1]]}
    (tmp_path / 'src' / 'dataset.json').write_text(json.dumps(labels))
    convert_dataset(tmp_path / 'src', tmp_path / 'o.zip', log=_quiet)
    assert _read_zip(tmp_path / 'o.zip')[1]['labels'] == [[nvidia_image_name(0), 2], [nvidia_image_name(1), 0],
                                                          [nvidia_image_name(2), 1]]


def test_labels_option_vectors_and_skip(mixed_src, tmp_path):
    names = ['a.png', 'b.jpg', 'sub/gray.png', 'sub/rgba.png']  # no label needed for corrupt.png
    path = tmp_path / 'labels.json'
    path.write_text(json.dumps({'labels': [[n, [i, 0.5]] for i, n in enumerate(names)]}))
    convert_dataset(mixed_src, tmp_path / 'o.zip', transform='center-crop', resolution=8, labels=path, log=_quiet)
    assert _read_zip(tmp_path / 'o.zip')[1]['labels'][3] == [nvidia_image_name(3), [3, 0.5]]


def test_labels_errors(mixed_src, tmp_path):
    path = tmp_path / 'labels.json'
    path.write_text(json.dumps({'labels': [['a.png', 1]]}))
    with pytest.raises(ValueError, match=r'no label for 3 images, e\.g\. b\.jpg'):
        convert_dataset(mixed_src, tmp_path / 'o.zip', transform='center-crop', resolution=8, labels=path, log=_quiet)
    path.write_text(json.dumps({'labels': [['a.png', 1], ['b.jpg', [0.5]]]}))
    with pytest.raises(ValueError, match='all be non-negative ints'):
        convert_dataset(mixed_src, tmp_path / 'o.zip', transform='center-crop', resolution=8, labels=path, log=_quiet)
    path.write_text('{"something": 1}')
    with pytest.raises(ValueError, match='expected {"labels"'):
        convert_dataset(mixed_src, tmp_path / 'o.zip', transform='center-crop', resolution=8, labels=path, log=_quiet)
    assert not (tmp_path / 'o.zip').exists()

#----------------------------------------------------------------------------
# Errors a user can cause

@pytest.mark.parametrize('res', [3, 100, 300, 0, -8])
def test_bad_resolution(res):
    with pytest.raises(ValueError, match=f'power of two >= 4 .*got {res}'):
        check_resolution(res)


def test_resolution_error_before_writing(mixed_src, tmp_path):
    with pytest.raises(ValueError, match='power of two'):
        convert_dataset(mixed_src, tmp_path / 'o.zip', transform='center-crop', resolution=300, log=_quiet)
    assert not (tmp_path / 'o.zip').exists()


def test_inferred_resolution_must_be_power_of_two(tmp_path):
    _save(tmp_path / 'src' / 'x.png', _rand([12, 12, 3], 0))
    with pytest.raises(ValueError, match='power of two >= 4 .*got 12'):
        convert_dataset(tmp_path / 'src', tmp_path / 'o.zip', log=_quiet)


def test_empty_source(tmp_path):
    (tmp_path / 'src').mkdir()
    (tmp_path / 'src' / 'readme.txt').write_text('no images here')
    with pytest.raises(ValueError, match='no image files found in'):
        convert_dataset(tmp_path / 'src', tmp_path / 'o.zip', resolution=8, log=_quiet)


def test_missing_and_bad_source(tmp_path):
    with pytest.raises(FileNotFoundError, match='source not found'):
        convert_dataset(tmp_path / 'nope', tmp_path / 'o.zip', log=_quiet)
    (tmp_path / 'file.png').write_bytes(b'x')
    with pytest.raises(ValueError, match='must be a folder or a .zip'):
        convert_dataset(tmp_path / 'file.png', tmp_path / 'o.zip', log=_quiet)


def test_non_square_needs_transform(mixed_src, tmp_path):
    with pytest.raises(ValueError, match=r'not square, e\.g\. a\.png \(30x20\); use --transform center-crop'):
        convert_dataset(mixed_src, tmp_path / 'o.zip', resolution=16, log=_quiet)


def test_mixed_sizes_need_resolution(tmp_path):
    _save(tmp_path / 'src' / 'a.png', _rand([8, 8, 3], 0))
    _save(tmp_path / 'src' / 'b.png', _rand([16, 16, 3], 1))
    with pytest.raises(ValueError, match='different sizes.*pass --resolution'):
        convert_dataset(tmp_path / 'src', tmp_path / 'o.zip', log=_quiet)
    with pytest.raises(ValueError, match='--resolution is required with --transform center-crop'):
        convert_dataset(tmp_path / 'src', tmp_path / 'o.zip', transform='center-crop', log=_quiet)


def test_existing_dest(mixed_src, tmp_path):
    (tmp_path / 'o.zip').write_bytes(b'')
    with pytest.raises(FileExistsError, match='already exists'):
        convert_dataset(mixed_src, tmp_path / 'o.zip', transform='center-crop', resolution=8, log=_quiet)
    (tmp_path / 'full').mkdir()
    (tmp_path / 'full' / 'x').write_text('x')
    with pytest.raises(FileExistsError, match='must be empty or absent'):
        convert_dataset(mixed_src, tmp_path / 'full', transform='center-crop', resolution=8, log=_quiet)


def test_all_corrupt_leaves_nothing(tmp_path):
    (tmp_path / 'src').mkdir()
    (tmp_path / 'src' / 'bad.jpg').write_bytes(b'garbage')
    with pytest.raises(ValueError, match=r'none of the 1 image files .* could be read'):
        convert_dataset(tmp_path / 'src', tmp_path / 'o.zip', resolution=8, log=_quiet)
    assert not (tmp_path / 'o.zip').exists()


def test_bad_options(mixed_src, tmp_path):
    with pytest.raises(ValueError, match='unknown resize filter'):
        convert_dataset(mixed_src, tmp_path / 'o.zip', resolution=8, resize_filter='bicubic', log=_quiet)
    with pytest.raises(ValueError, match='unknown transform'):
        convert_dataset(mixed_src, tmp_path / 'o.zip', transform='crop', resolution=8, log=_quiet)
    with pytest.raises(ValueError, match='channels must be auto, 1 or 3'):
        convert_dataset(mixed_src, tmp_path / 'o.zip', resolution=8, channels=2, log=_quiet)

#----------------------------------------------------------------------------
# FFHQ alignment plumbing (the aligner itself is tested in tests/projectors)

def test_ffhq_align_without_dlib(mixed_src, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, 'dlib', None)  # makes `import dlib` raise ImportError
    with pytest.raises(ImportError, match=r'ffhq-align needs dlib: pip install "portrait-stylegan\[align\]"'):
        convert_dataset(mixed_src, tmp_path / 'o.zip', transform='ffhq-align', resolution=8, log=_quiet)


def test_ffhq_align_with_fake_aligner(mixed_src, tmp_path, monkeypatch):
    """The converter's side of the contract with projectors.align: align_face(img, size) -> [face, ...]
    with `.image`, NoFaceError when there is none; alignment at 1024, then the chosen resize filter."""
    calls = []

    class NoFaceError(RuntimeError):
        pass

    def align_face(img, size):
        calls.append((img.mode, size))
        if img.size[0] > img.size[1]:
            raise NoFaceError('a.png')  # a.png (30x20) plays "no face found"
        face = img.crop((0, 0, min(img.size), min(img.size))).resize((size, size))
        return [types.SimpleNamespace(image=face)]

    fake = types.SimpleNamespace(align_face=align_face, NoFaceError=NoFaceError, find_landmarks_model=lambda: 'x')
    monkeypatch.setattr(dataset_tool, 'align', fake)
    rep = convert_dataset(mixed_src, tmp_path / 'o.zip', transform='ffhq-align', resolution=8, log=_quiet)
    assert rep.num_written == 3 and ('a.png', 'no face detected') in rep.skipped
    assert all(c == ('RGB', 1024) for c in calls)
    assert all(im.shape == (8, 8, 3) for im in _read_zip(tmp_path / 'o.zip')[2].values())


def test_ffhq_align_without_landmark_model(mixed_src, tmp_path, monkeypatch):
    monkeypatch.setenv('PSTYLE_DLIB_LANDMARKS', str(tmp_path / 'missing.dat'))
    with pytest.raises(ImportError, match='ffhq-align: .*missing.dat not found'):
        convert_dataset(mixed_src, tmp_path / 'o.zip', transform='ffhq-align', resolution=8, log=_quiet)


def test_ffhq_align_real_aligner_reports_faceless_images(tmp_path):
    """With the real projectors.align (dlib): images without faces are reported, not written."""
    _save(tmp_path / 'src' / 'noise.png', _rand([64, 64, 3], 0))
    with pytest.raises(ValueError, match='no image of .* could be converted:[^$]*noise.png: no face detected'):
        convert_dataset(tmp_path / 'src', tmp_path / 'o.zip', transform='ffhq-align', resolution=8, log=_quiet)
    assert not (tmp_path / 'o.zip').exists()
