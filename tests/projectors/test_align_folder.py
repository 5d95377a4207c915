"""align_folder / align_file: outputs on disk, per-file failures, naming."""

import json

import numpy as np
import pytest
import skimage.data
from PIL import Image

from pstyle.projectors import align as A


@pytest.fixture(scope='module')
def astronaut():
    return Image.fromarray(skimage.data.astronaut())


@pytest.fixture
def mixed_folder(tmp_path, astronaut):
    src = tmp_path / 'photos'
    src.mkdir()
    astronaut.save(src / 'good.png')
    Image.new('RGB', (160, 120), (90, 140, 200)).save(src / 'nobody.png')
    (src / 'broken.jpg').write_bytes(b'\xff\xd8\xff\xe0 definitely not a complete jpeg')
    (src / 'notes.txt').write_text('ignored: not an image name')
    return src


def test_good_file_aligned_and_failures_listed(mixed_folder, tmp_path):
    logs = []
    summary = A.align_folder(mixed_folder, tmp_path / 'out', size=64, log=logs.append)
    assert summary['num_items'] == 3 and [line.split(' ')[0].rsplit('/', 1)[-1].rstrip(':') for line in logs] == [
        'broken.jpg', 'good.png', 'nobody.png']
    ok = [e for e in summary['items'] if e['status'] == 'ok']
    assert [e['input'] for e in ok] == [str(mixed_folder / 'good.png')]
    assert ok[0]['outputs'] == ['good.png', 'good.json'] and ok[0]['faces'] == 1
    failed = {e['input']: e['error'] for e in summary['failures']}
    assert set(failed) == {str(mixed_folder / 'broken.jpg'), str(mixed_folder / 'nobody.png')}
    assert 'broken.jpg: cannot read image' in failed[str(mixed_folder / 'broken.jpg')]
    assert 'nobody.png: no face found' in failed[str(mixed_folder / 'nobody.png')]
    assert sorted(p.name for p in (tmp_path / 'out').iterdir()) == ['good.json', 'good.png', 'manifest.json']


def test_written_json_maps_back(mixed_folder, tmp_path, astronaut):
    A.align_folder(mixed_folder, tmp_path / 'out', size=64)
    record = A.load_transform(tmp_path / 'out' / 'good.json')
    assert record['source'] == str((mixed_folder / 'good.png').resolve())
    assert np.asarray(record['landmarks']).shape == (68, 2) and record['output_size'] == 64
    with Image.open(tmp_path / 'out' / 'good.png') as img:
        assert img.size == (64, 64) and img.mode == 'RGB'
    # The JSON alone is enough to put the face back: compare with the in-memory result.
    direct = A.align_face(astronaut, size=64)[0]
    assert np.allclose(record['quad'], direct.quad)


def test_all_faces_naming(mixed_folder, tmp_path):
    summary = A.align_folder(mixed_folder, tmp_path / 'out', size=64, all_faces=True)
    outputs = [e['outputs'] for e in summary['items'] if e['status'] == 'ok'][0]
    assert outputs == ['good_00.png', 'good_00.json', 'good_01.png', 'good_01.json']  # astronaut: face, then the suit patch dlib also finds
    assert (tmp_path / 'out' / 'good_01.json').is_file()


def test_same_stem_does_not_overwrite(tmp_path, astronaut):
    src = tmp_path / 'in'
    src.mkdir()
    astronaut.save(src / 'a.png')
    astronaut.save(src / 'a.jpg', quality=95)
    summary = A.align_folder(src, tmp_path / 'out', size=64)
    names = sorted(p for e in summary['items'] for p in e['outputs'] if p.endswith('.png'))
    assert names == ['a.png', 'a_png.png']


def test_folder_errors(tmp_path, astronaut):
    with pytest.raises(FileNotFoundError, match='missing: no such file or folder'):
        A.align_folder(tmp_path / 'missing', tmp_path / 'out')
    with pytest.raises(ValueError, match='no image files in this folder'):
        A.align_folder(tmp_path, tmp_path / 'out')
    astronaut.save(tmp_path / 'x.png')
    with pytest.raises(ValueError, match='output folder must differ from the input folder'):
        A.align_folder(tmp_path, tmp_path)


def test_missing_model_stops_the_run(mixed_folder, tmp_path):
    with pytest.raises(A.AlignDependencyError, match=r'nope\.dat not found'):
        A.align_folder(mixed_folder, tmp_path / 'out', size=64, predictor=str(tmp_path / 'nope.dat'))


def test_align_file_refuses_to_overwrite_its_input(tmp_path, astronaut):
    astronaut.save(tmp_path / 'me.png')
    with pytest.raises(ValueError, match=r'me\.png: the aligned image would overwrite the input'):
        A.align_file(tmp_path / 'me.png', tmp_path, size=32)
    with Image.open(tmp_path / 'me.png') as img:
        assert img.size == (512, 512)


def test_hostile_names_never_overwrite(tmp_path, astronaut):
    one, two = tmp_path / 'one', tmp_path / 'two'
    one.mkdir()
    two.mkdir()
    for name in ('张三.png', '李四.png', 'photo 1.png', 'photo_1.png', 'y.PNG', 'y.png', 'manifest.png'):
        astronaut.save(one / name)
    for name in ('y.png', 'y_png.png'):
        astronaut.save(two / name)
    summary = A.align_folder([one, two], tmp_path / 'out', size=32, log=lambda _: None)
    names = ['manifest_png', 'photo 1', 'photo_1', 'y', 'y_png_2', '张三', '李四', 'y_png_3', 'y_png']
    assert [e['name'] for e in summary['items']] == names and summary['num_ok'] == 9
    on_disk = sorted(p.name for p in (tmp_path / 'out').glob('*.png'))
    assert on_disk == sorted(f'{n}.png' for n in names)          # nine photos, nine faces: none overwritten
    manifest = json.loads((tmp_path / 'out' / 'manifest.json').read_text(encoding='utf-8'))
    assert manifest['command'] == 'align' and manifest['items'][5]['outputs'] == ['张三.png', '张三.json']
    logs = []
    again = A.align_folder([one, two], tmp_path / 'out', size=32, log=logs.append, resume=True)
    assert again['num_ok'] == 9 and logs == []                    # resumed: nothing aligned again


def test_all_faces_names_never_meet_another_photo(tmp_path, astronaut):
    src = tmp_path / 'in'
    src.mkdir()
    astronaut.save(src / 'good.png')
    astronaut.save(src / 'good_00.png')  # would be overwritten by good.png's first face
    summary = A.align_folder(src, tmp_path / 'out', size=32, all_faces=True, log=lambda _: None)
    assert [e['name'] for e in summary['items']] == ['good', 'good_00_png']
    assert sorted(p.name for p in (tmp_path / 'out').glob('*.png')) == [
        'good_00.png', 'good_00_png_00.png', 'good_00_png_01.png', 'good_01.png']
