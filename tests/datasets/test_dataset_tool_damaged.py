"""`pstyle dataset` (and the readers of its output) on damaged and hostile zips, tiny images, and a kill -9."""

import io
import json
import os
import signal
import subprocess
import sys
import textwrap
import zipfile

import numpy as np
import PIL.Image
import pytest
import torch
from click.testing import CliRunner

from pstyle.metrics.inputs import open_images
from pstyle.cli import main
from pstyle.torch_utils.zip_open import UnreadableArchiveError
from pstyle.datasets.dataset import ImageFolderDataset
from pstyle.datasets import dataset_tool
from pstyle.datasets.dataset_tool import convert_dataset

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _png(size, seed=0):
    arr = np.random.RandomState(seed).randint(0, 256, (size, size, 3), dtype=np.uint8)
    buf = io.BytesIO()
    PIL.Image.fromarray(arr).save(buf, format='png')
    return buf.getvalue()


def _quiet(*_args):
    pass


def _zip(path, members):
    with zipfile.ZipFile(path, 'w', compression=zipfile.ZIP_STORED) as z:
        for name, data in members:
            z.writestr(name, data)
    return path


def _flip_member_byte(path, name):
    """Flip the member's last data byte: its CRC-32 no longer matches (caught when read to the end)."""
    with zipfile.ZipFile(path) as z:
        info = z.getinfo(name)
    raw = bytearray(path.read_bytes())
    header = info.header_offset
    name_len, extra_len = int.from_bytes(raw[header + 26:header + 28], 'little'), int.from_bytes(raw[header + 28:header + 30], 'little')
    end = header + 30 + name_len + extra_len + info.compress_size - 1
    raw[end] ^= 0xFF
    path.write_bytes(bytes(raw))


def _break_central_directory(path):
    raw = bytearray(path.read_bytes())
    at = raw.rfind(b'PK\x01\x02')              # The last central directory entry's signature.
    raw[at:at + 4] = b'XXXX'
    path.write_bytes(bytes(raw))


@pytest.fixture
def broken_zip(tmp_path):
    path = _zip(tmp_path / 'broken.zip', [(f'img{i}.png', _png(8, i)) for i in range(3)])
    _break_central_directory(path)
    assert zipfile.is_zipfile(path)   # The end record is intact: only opening the archive fails.
    return path


def test_a_member_with_a_bad_crc_is_skipped_and_reported(tmp_path):
    src = _zip(tmp_path / 'src.zip', [(f'img{i}.png', _png(8, i)) for i in range(3)])
    _flip_member_byte(src, 'img1.png')
    report = convert_dataset(src, tmp_path / 'out.zip', log=_quiet)
    assert report.num_written == 2
    assert report.skipped == [('img1.png', "BadZipFile: Bad CRC-32 for file 'img1.png'")]
    meta = json.loads(zipfile.ZipFile(tmp_path / 'out.zip').read('dataset.json'))['pstyle']
    assert meta['skipped'] == [{'file': 'img1.png', 'reason': "BadZipFile: Bad CRC-32 for file 'img1.png'"}]


def test_a_damaged_central_directory_is_one_clear_error_in_dataset_metrics_and_train(broken_zip, tmp_path):
    expected = rf'{broken_zip}: unreadable zip archive \(BadZipFile: .*central directory'
    with pytest.raises(UnreadableArchiveError, match=expected):
        convert_dataset(broken_zip, tmp_path / 'out.zip', log=_quiet)
    assert not (tmp_path / 'out.zip').exists()
    with pytest.raises(UnreadableArchiveError, match=expected):
        open_images(str(broken_zip))
    with pytest.raises(UnreadableArchiveError, match=expected):
        ImageFolderDataset(broken_zip)
    for args in (['dataset', '--source', str(broken_zip), '--dest', str(tmp_path / 'o.zip'), '--no-progress'],
                 ['metrics', '--metrics', 'fid', '--real', str(broken_zip), '--fake', str(broken_zip)],
                 ['train', '--data', str(broken_zip), '--outdir', str(tmp_path / 'runs'), '--dry-run']):
        r = CliRunner().invoke(main, args)
        assert r.exit_code == 1 and 'unreadable zip archive' in r.output and str(broken_zip) in r.output, args
        assert not isinstance(r.exception, zipfile.BadZipFile), args


def test_a_truncated_zip_is_named_in_training(tmp_path):
    path = _zip(tmp_path / 'cut.zip', [('img0.png', _png(8))])
    path.write_bytes(path.read_bytes()[:-30])
    with pytest.raises(UnreadableArchiveError, match=rf'{path}: unreadable zip archive'):
        ImageFolderDataset(path)
    with pytest.raises(ValueError, match=rf'{path}: unreadable zip archive'):
        convert_dataset(path, tmp_path / 'out.zip', log=_quiet)


def test_a_bad_member_during_training_names_the_member(tmp_path):
    path = _zip(tmp_path / 'ds.zip', [(f'img{i}.png', _png(8, i)) for i in range(3)])
    _flip_member_byte(path, 'img2.png')
    ds = ImageFolderDataset(path)
    with pytest.raises(OSError, match=rf'img2\.png in {path}: cannot read \(BadZipFile: Bad CRC-32'):
        ds[2]


def test_duplicate_member_names_are_all_converted_and_reported(tmp_path):
    with pytest.warns(UserWarning, match='Duplicate name'):
        src = _zip(tmp_path / 'dup.zip', [('a.png', _png(8, 1)), ('a.png', _png(8, 2)), ('b.png', _png(8, 3))])
    report = convert_dataset(src, tmp_path / 'out.zip', log=_quiet)
    assert report.num_written == 3 and report.duplicates == [('a.png', 2)]
    assert 'a.png: 2 members with this name in the zip' in report.summary()
    out = ImageFolderDataset(tmp_path / 'out.zip')
    written = {out[i][0].tobytes() for i in range(3)}
    sources = {np.asarray(PIL.Image.open(io.BytesIO(_png(8, s)))).transpose(2, 0, 1).tobytes() for s in (1, 2, 3)}
    assert written == sources
    meta = json.loads(zipfile.ZipFile(tmp_path / 'out.zip').read('dataset.json'))['pstyle']
    assert meta['duplicates'] == [{'file': 'a.png', 'count': 2}]


def test_images_below_the_minimum_size_are_skipped_and_reported(tmp_path):
    src = tmp_path / 'src'
    src.mkdir()
    for name, size in (('tiny.png', 1), ('small.png', 15), ('ok.png', 16), ('big.png', 80)):
        (src / name).write_bytes(_png(size))
    report = convert_dataset(src, tmp_path / 'out.zip', transform='center-crop', resolution=64, log=_quiet)
    assert report.num_written == 2                                  # default --min-size: 64 // 4 = 16
    assert report.skipped == [('small.png', 'too small: 15x15, shorter side under --min-size 16'),
                              ('tiny.png', 'too small: 1x1, shorter side under --min-size 16')]
    report = convert_dataset(src, tmp_path / 'all.zip', transform='center-crop', resolution=64, min_size=0, log=_quiet)
    assert report.num_written == 4
    with pytest.raises(ValueError, match='--min-size must be >= 0'):
        convert_dataset(src, tmp_path / 'x.zip', transform='center-crop', resolution=64, min_size=-1, log=_quiet)


def test_cli_min_size(tmp_path):
    src = tmp_path / 'src'
    src.mkdir()
    for name, size in (('tiny.png', 2), ('ok.png', 32)):
        (src / name).write_bytes(_png(size))
    r = CliRunner().invoke(main, ['dataset', '--source', str(src), '--dest', str(tmp_path / 'o.zip'),
                                  '--transform', 'center-crop', '--resolution', '32', '--min-size', '4', '--no-progress'])
    assert r.exit_code == 0, r.output
    assert 'tiny.png: too small: 2x2, shorter side under --min-size 4' in r.output


_KILLED_RUN = textwrap.dedent('''
    import os, signal, sys
    from pstyle.datasets import dataset_tool
    count = [0]
    encode = dataset_tool._encode_png
    def encode_then_die(img):
        count[0] += 1
        if count[0] == 3:
            os.kill(os.getpid(), signal.SIGKILL)
        return encode(img)
    dataset_tool._encode_png = encode_then_die
    dataset_tool.convert_dataset(sys.argv[1], sys.argv[2], log=lambda *a: None)
''')


@pytest.mark.parametrize('dest_name', ['out.zip', 'outdir'])
def test_a_killed_conversion_leaves_nothing_at_dest_and_the_rerun_succeeds(tmp_path, dest_name):
    src = tmp_path / 'src'
    src.mkdir()
    for i in range(5):
        (src / f'{i}.png').write_bytes(_png(8, i))
    dest = tmp_path / 'out' / dest_name
    env = dict(os.environ, PYTHONPATH=REPO)
    r = subprocess.run([sys.executable, '-c', _KILLED_RUN, str(src), str(dest)], env=env, capture_output=True,
                       timeout=120)
    assert r.returncode == -signal.SIGKILL, r.stderr.decode()
    assert not dest.exists()
    assert [p.name for p in dest.parent.iterdir()] != []            # The killed run's temporary is there...
    report = convert_dataset(src, dest, log=_quiet)
    assert report.num_written == 5 and len(ImageFolderDataset(dest)) == 5
    assert [p.name for p in dest.parent.iterdir()] == [dest_name]   # ... and the rerun removed it.


@pytest.mark.parametrize('dest_name', ['d.zip', 'd'])
def test_a_failed_conversion_leaves_nothing_behind(tmp_path, monkeypatch, dest_name):
    src = _zip(tmp_path / 'src.zip', [(f'{i}.png', _png(8, i)) for i in range(3)])

    def fail(img):
        raise RuntimeError('disk full')
    monkeypatch.setattr(dataset_tool, '_encode_png', fail)
    with pytest.raises(RuntimeError, match='disk full'):
        convert_dataset(src, tmp_path / 'out' / dest_name, log=_quiet)
    assert list((tmp_path / 'out').iterdir()) == []


def test_the_shapes_set_through_the_new_writer_still_trains(tmp_path):
    from pstyle.datasets.synthetic import make_shapes_dataset
    make_shapes_dataset(tmp_path / 'shapes', num_images=8, resolution=8)
    convert_dataset(tmp_path / 'shapes', tmp_path / 's.zip', log=_quiet)
    loader = torch.utils.data.DataLoader(ImageFolderDataset(tmp_path / 's.zip'), batch_size=4)
    assert [tuple(b[0].shape) for b in loader] == [(4, 3, 8, 8)] * 2
