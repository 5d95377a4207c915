"""Tests for training/dataset.py (ImageFolderDataset) on datasets written by the converter and by hand."""

import io
import json
import pickle
import zipfile

import numpy as np
import PIL.Image
import pytest
import torch

from pstyle.datasets.dataset import ImageFolderDataset
from pstyle.datasets.dataset_tool import convert_dataset, nvidia_image_name


def _png(arr):
    buf = io.BytesIO()
    PIL.Image.fromarray(arr).save(buf, format='png')
    return buf.getvalue()


def _images(n, shape=(8, 8, 3)):
    return [np.random.RandomState(i).randint(0, 256, size=shape, dtype=np.uint8) for i in range(n)]


@pytest.fixture
def nv_zip(tmp_path):
    """A zip in NVIDIA's layout, written by hand (as NVIDIA's dataset_tool would), with class labels."""
    path = tmp_path / 'nv.zip'
    imgs = _images(5)
    with zipfile.ZipFile(path, 'w', compression=zipfile.ZIP_STORED) as z:
        for i, im in enumerate(imgs):
            z.writestr(nvidia_image_name(i), _png(im))
        z.writestr('dataset.json', json.dumps({'labels': [[nvidia_image_name(i), i % 3] for i in range(5)]}))
    return path, imgs


def test_loads_nvidia_layout_zip(nv_zip):
    path, imgs = nv_zip
    ds = ImageFolderDataset(path, use_labels=True)
    assert len(ds) == 5 and ds.name == 'nv' and ds.resolution == 8 and ds.num_channels == 3
    assert ds.image_shape == [3, 8, 8] and ds.label_shape == [3] and ds.label_dim == 3 and ds.has_labels
    assert ds.has_onehot_labels
    for i in range(5):
        img, label = ds[i]
        assert img.dtype == np.uint8 and img.shape == (3, 8, 8)
        assert np.array_equal(img, imgs[i].transpose(2, 0, 1))
        assert label.dtype == np.float32 and np.array_equal(label, np.eye(3, dtype=np.float32)[i % 3])
    assert ds.get_details(4)['raw_label'] == 1


def test_no_labels_when_not_requested(nv_zip):
    ds = ImageFolderDataset(nv_zip[0])
    assert ds.label_shape == [0] and not ds.has_labels and ds[0][1].shape == (0,)


def test_xflip_doubles(nv_zip):
    ds = ImageFolderDataset(nv_zip[0], xflip=True)
    assert len(ds) == 10
    for i in range(5):
        assert np.array_equal(ds[i + 5][0], ds[i][0][:, :, ::-1])
        assert ds.get_details(i + 5)['xflip'] and not ds.get_details(i)['xflip']


def test_max_size_fixed_seed_subset(tmp_path):
    path = tmp_path / 'd.zip'
    with zipfile.ZipFile(path, 'w') as z:
        for i, im in enumerate(_images(20, (4, 4, 3))):
            z.writestr(nvidia_image_name(i), _png(im))
    raw = [ImageFolderDataset(path, max_size=6, random_seed=s)._raw_idx for s in (0, 0, 1)]
    assert len(raw[0]) == 6 and np.array_equal(raw[0], raw[1]) and not np.array_equal(raw[0], raw[2])
    assert np.all(np.diff(raw[0]) > 0) and raw[0].max() < 20
    ds = ImageFolderDataset(path, max_size=6)
    full = ImageFolderDataset(path)
    assert all(np.array_equal(ds[k][0], full[int(raw[0][k])][0]) for k in range(6))
    assert len(ImageFolderDataset(path, max_size=50)) == 20


def test_pickle_and_dataloader_workers(nv_zip):
    ds = ImageFolderDataset(nv_zip[0], use_labels=True)
    _ = ds[0]  # opens the zip in this process
    ds2 = pickle.loads(pickle.dumps(ds))
    assert ds2._zipfile is None and np.array_equal(ds2[3][0], ds[3][0])
    loader = torch.utils.data.DataLoader(ds, batch_size=5, num_workers=2)
    imgs, labels = next(iter(loader))
    assert imgs.shape == (5, 3, 8, 8) and imgs.dtype == torch.uint8 and labels.shape == (5, 3)


def test_round_trip_through_converter(tmp_path):
    src = tmp_path / 'src'
    src.mkdir()
    imgs = _images(3, (16, 16))
    for i, im in enumerate(imgs):
        PIL.Image.fromarray(im).save(src / f'{i}.png')
    (src / 'dataset.json').write_text(json.dumps({'labels': [[f'{i}.png', [i, -i]] for i in range(3)]}))
    convert_dataset(src, tmp_path / 'folder', log=lambda *_: None)
    ds = ImageFolderDataset(tmp_path / 'folder', resolution=16, use_labels=True)
    assert ds.num_channels == 1 and ds.label_shape == [2] and not ds.has_onehot_labels
    assert np.array_equal(ds[2][0][0], imgs[2]) and np.array_equal(ds[2][1], [2, -2])


def test_errors(tmp_path, nv_zip):
    with pytest.raises(IOError, match='not the requested resolution 16x16'):
        ImageFolderDataset(nv_zip[0], resolution=16)
    (tmp_path / 'empty').mkdir()
    with pytest.raises(IOError, match='no image files found'):
        ImageFolderDataset(tmp_path / 'empty')
    with pytest.raises(IOError, match='must be a folder or a .zip'):
        ImageFolderDataset(tmp_path / 'missing.zip')


def test_inconsistent_image_and_labels(tmp_path):
    d = tmp_path / 'd'
    (d / '00000').mkdir(parents=True)
    PIL.Image.fromarray(_images(1)[0]).save(d / '00000' / 'img00000000.png')
    PIL.Image.fromarray(_images(1, (8, 8, 4))[0]).save(d / '00000' / 'img00000001.png')
    (d / 'dataset.json').write_text(json.dumps({'labels': [['00000/img00000000.png', 0]]}))
    ds = ImageFolderDataset(d, use_labels=True)
    with pytest.raises(ValueError, match=r'00000/img00000001\.png .* is uint8 \[4, 8, 8\], expected uint8 \[3, 8, 8\]'):
        ds[1]
    with pytest.raises(ValueError, match='no label for 1 images, e.g. 00000/img00000001.png'):
        ds.get_label(0)
