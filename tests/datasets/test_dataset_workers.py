"""ImageFolderDataset on a zip under DataLoader workers: each process reads through its own zip handle.

A handle opened in the parent and inherited by forked workers shares one file offset between them;
concurrent reads then interleave and fail with BadZipFile / bad CRC at random.
"""

import multiprocessing

import numpy as np
import pytest
import torch

from pstyle.datasets.dataset import ImageFolderDataset
from pstyle.datasets.dataset_tool import convert_dataset
from pstyle.datasets.synthetic import make_shapes_dataset


@pytest.fixture(scope='module')
def shapes_zip(tmp_path_factory):
    root = tmp_path_factory.mktemp('shapes')
    make_shapes_dataset(root / 'images', num_images=96, resolution=16, seed=0)
    convert_dataset(root / 'images', root / 'shapes16.zip', log=lambda *a: None)
    return root / 'shapes16.zip'


def _reference(ds):
    return np.stack([ds[i][0] for i in range(len(ds))])


@pytest.mark.parametrize('workers', [2])
def test_many_batches_from_a_zip_with_forked_workers_match_a_serial_read(shapes_zip, workers):
    ds = ImageFolderDataset(shapes_zip, xflip=True)
    expected = _reference(ds)                      # The parent has used its handle before the fork.
    ctx = multiprocessing.get_context('fork')
    for _epoch in range(6):
        loader = torch.utils.data.DataLoader(ds, batch_size=4, num_workers=workers, multiprocessing_context=ctx)
        got = np.concatenate([img.numpy() for img, _label in loader])
        assert np.array_equal(got, expected)


def _child_uses_its_own_handle(ds, parent_handle, queue):
    queue.put(ds._get_zipfile() is not parent_handle and ds[0][0].shape == (3, 16, 16))


def test_a_forked_process_opens_its_own_zip_handle(shapes_zip):
    ds = ImageFolderDataset(shapes_zip)
    parent_handle = ds._get_zipfile()
    ctx = multiprocessing.get_context('fork')
    queue = ctx.Queue()
    proc = ctx.Process(target=_child_uses_its_own_handle, args=(ds, parent_handle, queue))
    proc.start()
    ok = queue.get(timeout=60)
    proc.join(60)
    assert ok and proc.exitcode == 0
    assert ds._get_zipfile() is parent_handle      # The parent keeps its handle.
