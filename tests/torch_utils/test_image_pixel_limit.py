"""One pixel limit for every image reader, checked from the header before anything is decoded."""

import io
import struct
import zipfile
import zlib

import numpy as np
import PIL.Image
import PIL.ImageFile
import pytest

from pstyle.metrics.inputs import InputError, decode_image
from pstyle.projectors.image_io import ImageLoadError, load_image
from pstyle.torch_utils import image_open
from pstyle.datasets.dataset import ImageFolderDataset
from pstyle.datasets.dataset_tool import convert_dataset


def _chunk(kind, data):
    return struct.pack('>I', len(data)) + kind + data + struct.pack('>I', zlib.crc32(kind + data))


def bomb_png(width=12000, height=12000):
    """A few hundred bytes declaring a width x height 8-bit grey PNG (all zero rows, zlib-compressed)."""
    rows = zlib.compressobj(9)
    data = b''.join(rows.compress(b'\0' * (width + 1)) for _ in range(64)) + rows.flush()
    return (b'\x89PNG\r\n\x1a\n' + _chunk(b'IHDR', struct.pack('>IIBBBBB', width, height, 8, 0, 0, 0, 0))
            + _chunk(b'IDAT', data) + _chunk(b'IEND', b''))


@pytest.fixture
def no_decoding(monkeypatch):
    """Decoding pixels fails the test: the refusal must come from the header."""
    def load(self):
        raise AssertionError('pixels were decoded')
    PIL.Image.init()  # Plugin import builds small images; done before the patch.
    monkeypatch.setattr(PIL.Image.Image, 'load', load)
    monkeypatch.setattr(PIL.ImageFile.ImageFile, 'load', load)


def _png(size, value=0):
    buf = io.BytesIO()
    PIL.Image.fromarray(np.full((size, size, 3), value, np.uint8)).save(buf, format='png')
    return buf.getvalue()


def test_the_default_limit_is_8192_squared_and_the_env_var_changes_it(monkeypatch):
    monkeypatch.delenv('PSTYLE_MAX_PIXELS', raising=False)
    assert image_open.max_pixels() == 8192 * 8192
    monkeypatch.setenv('PSTYLE_MAX_PIXELS', '1_000_000')
    assert image_open.max_pixels() == 1_000_000
    for bad in ('lots', '-5', '0'):
        monkeypatch.setenv('PSTYLE_MAX_PIXELS', bad)
        with pytest.raises(ValueError, match=rf"\$PSTYLE_MAX_PIXELS must be a positive number of pixels, got '{bad}'"):
            image_open.max_pixels()


def test_photo_loader_refuses_a_decompression_bomb_before_decoding(tmp_path, no_decoding):
    path = tmp_path / 'bomb.png'
    path.write_bytes(bomb_png())
    assert path.stat().st_size < 2000
    with pytest.raises(ImageLoadError, match=r'bomb\.png: 12000x12000 pixels \(144\.0 megapixels\) is over the limit '
                                             r'of 67,108,864 pixels.*refused before decoding.*PSTYLE_MAX_PIXELS'):
        load_image(path)


def test_metric_inputs_refuse_it(tmp_path, no_decoding):
    with pytest.raises(InputError, match=r'real/bomb\.png: 12000x12000 pixels .* over the limit'):
        decode_image(io.BytesIO(bomb_png()), 'real/bomb.png')


def test_training_dataset_refuses_it(tmp_path, no_decoding):
    with zipfile.ZipFile(tmp_path / 'd.zip', 'w') as z:
        z.writestr('img00000000.png', bomb_png())
    with pytest.raises(image_open.ImageTooLargeError, match=r'img00000000\.png in .*d\.zip: 12000x12000 pixels'):
        ImageFolderDataset(tmp_path / 'd.zip')


def test_dataset_tool_skips_and_reports_it(tmp_path):
    src = tmp_path / 'src'
    src.mkdir()
    (src / 'a.png').write_bytes(_png(8))
    (src / 'bomb.png').write_bytes(bomb_png())
    report = convert_dataset(src, tmp_path / 'out.zip', log=lambda *a: None)
    assert report.num_written == 1
    assert [n for n, _ in report.skipped] == ['bomb.png'] and 'over the limit' in report.skipped[0][1]


def test_a_limit_above_pillows_own_is_honoured(tmp_path, monkeypatch, no_decoding):
    path = tmp_path / 'huge.png'
    path.write_bytes(bomb_png(20000, 10000))        # 200 MP: over 2x Pillow's default, which would refuse it
    monkeypatch.setattr(PIL.Image, 'MAX_IMAGE_PIXELS', 89478485)
    monkeypatch.setenv('PSTYLE_MAX_PIXELS', str(250_000_000))
    with image_open.open_image(path) as img:
        assert img.size == (20000, 10000)


def test_the_limit_applies_to_small_images_when_lowered(tmp_path, monkeypatch):
    path = tmp_path / 'small.png'
    path.write_bytes(_png(16))
    assert load_image(path).size == (16, 16)
    monkeypatch.setenv('PSTYLE_MAX_PIXELS', '255')
    with pytest.raises(ImageLoadError, match=r'16x16 pixels .* over the limit of 255 pixels'):
        load_image(path)
    monkeypatch.setenv('PSTYLE_MAX_PIXELS', '256')
    assert load_image(path).size == (16, 16)
