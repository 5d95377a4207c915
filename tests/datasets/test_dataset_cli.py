"""Smoke tests of `pstyle dataset` through the click group."""

import json
import zipfile

import numpy as np
import PIL.Image
from click.testing import CliRunner

from pstyle.cli import main


def _src(tmp_path):
    src = tmp_path / 'src'
    src.mkdir()
    for i in range(3):
        arr = np.random.RandomState(i).randint(0, 256, size=[12, 20, 3], dtype=np.uint8)
        PIL.Image.fromarray(arr).save(src / f'{i}.jpg')
    (src / 'broken.jpg').write_bytes(b'not a jpeg')
    return src


def test_cli_dataset_zip(tmp_path):
    res = CliRunner().invoke(main, ['dataset', '--source', str(_src(tmp_path)), '--dest', str(tmp_path / 'o.zip'),
                                    '--transform', 'center-crop', '--resolution', '8', '--resize-filter', 'box',
                                    '--no-progress'])
    assert res.exit_code == 0, res.output
    assert 'wrote 3 images (8x8, 3 channels)' in res.output and 'broken.jpg' in res.output
    with zipfile.ZipFile(tmp_path / 'o.zip') as z:
        meta = json.loads(z.read('dataset.json'))
        assert sorted(z.namelist())[0] == '00000/img00000000.png'
    assert meta['pstyle']['resize_filter'] == 'box' and meta['labels'] is None


def test_cli_dataset_errors(tmp_path):
    src = _src(tmp_path)
    res = CliRunner().invoke(main, ['dataset', '--source', str(src), '--dest', str(tmp_path / 'o.zip'),
                                    '--transform', 'center-crop', '--resolution', '100'])
    assert res.exit_code == 1 and 'power of two >= 4' in res.output
    res = CliRunner().invoke(main, ['dataset', '--source', str(src), '--dest', str(tmp_path / 'o.zip')])
    assert res.exit_code == 1 and 'not square' in res.output
    res = CliRunner().invoke(main, ['dataset', '--source', str(src), '--dest', str(tmp_path / 'o'),
                                    '--transform', 'rotate'])
    assert res.exit_code == 2 and "'rotate' is not one of" in res.output


def test_cli_dataset_synthetic_shapes_loads_for_training(tmp_path):
    from pstyle.datasets.dataset import ImageFolderDataset
    res = CliRunner().invoke(main, ['dataset', '--synthetic', 'shapes', '--dest', str(tmp_path / 's.zip'),
                                    '--max-images', '12', '--resolution', '16', '--no-progress'])
    assert res.exit_code == 0, res.output
    ds = ImageFolderDataset(str(tmp_path / 's.zip'))
    assert len(ds) == 12 and ds.resolution == 16 and ds.num_channels == 3
    assert ds[0][0].std() > 0 and not np.array_equal(ds[0][0], ds[1][0])
    res = CliRunner().invoke(main, ['dataset', '--dest', str(tmp_path / 'x.zip')])
    assert res.exit_code == 2 and 'exactly one of --source and --synthetic' in res.output
