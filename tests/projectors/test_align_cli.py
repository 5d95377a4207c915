"""Smoke tests of `pstyle align` and `pstyle paste-back` through click."""

import json

import numpy as np
import pytest
import skimage.data
from click.testing import CliRunner
from PIL import Image

from pstyle.cli import main


@pytest.fixture(scope='module')
def astronaut():
    return Image.fromarray(skimage.data.astronaut())


def _run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.mark.parametrize('command, text', [('align', 'FFHQ-align'), ('paste-back', 'back into the original photo')])
def test_commands_are_registered(command, text):
    result = _run(command, '--help')
    assert result.exit_code == 0 and text in result.output


def test_align_one_file(tmp_path, astronaut):
    astronaut.save(tmp_path / 'me.jpg', quality=95)
    result = _run('align', tmp_path / 'me.jpg', '--outdir', tmp_path / 'out', '--size', 64)
    assert result.exit_code == 0, result.output
    assert 'aligned 1 of 1 image(s), 1 face(s)' in result.output
    with Image.open(tmp_path / 'out' / 'me.png') as img:
        assert img.size == (64, 64)
    assert json.loads((tmp_path / 'out' / 'me.json').read_text())['output_size'] == 64


def test_align_all_faces_and_no_padding(tmp_path, astronaut):
    astronaut.save(tmp_path / 'me.png')
    result = _run('align', tmp_path / 'me.png', '--outdir', tmp_path / 'out', '--size', 32, '--all-faces', '--no-padding')
    assert result.exit_code == 0, result.output
    assert (tmp_path / 'out' / 'me_00.png').is_file() and (tmp_path / 'out' / 'me_01.png').is_file()
    assert json.loads((tmp_path / 'out' / 'me_00.json').read_text())['enable_padding'] is False


def _mixed_folder(tmp_path, astronaut):
    src = tmp_path / 'in'
    src.mkdir()
    astronaut.save(src / 'good.png')
    Image.new('RGB', (100, 100), (0, 0, 0)).save(src / 'nobody.png')
    (src / 'broken.png').write_bytes(b'garbage')
    return src


def test_align_folder_partial_failure_exits_0_with_summary(tmp_path, astronaut):
    src = _mixed_folder(tmp_path, astronaut)
    result = _run('align', src, '--outdir', tmp_path / 'out', '--size', 32, '--summary', tmp_path / 's.json')
    assert result.exit_code == 0, result.output
    assert 'aligned 1 of 3 image(s)' in result.output and '2 failed' in result.stderr
    assert 'broken.png: cannot read image' in result.stderr and 'nobody.png: no face found' in result.stderr
    summary = json.loads((tmp_path / 's.json').read_text())
    assert summary['num_ok'] == 1 and summary['num_failed'] == 2 and summary['command'] == 'align'


def test_align_folder_strict_exits_1(tmp_path, astronaut):
    src = _mixed_folder(tmp_path, astronaut)
    result = _run('align', src, '--outdir', tmp_path / 'out', '--size', 32, '--strict')
    assert result.exit_code == 1 and 'aligned 1 of 3' in result.output


def test_align_all_failed_exits_1(tmp_path):
    src = tmp_path / 'in'
    src.mkdir()
    Image.new('RGB', (100, 100), (255, 255, 255)).save(src / 'white.png')
    result = _run('align', src, '--outdir', tmp_path / 'out', '--size', 32)
    assert result.exit_code == 1 and 'white.png: no face found' in result.output


def test_align_single_file_without_face(tmp_path):
    Image.new('RGB', (100, 100), (255, 255, 255)).save(tmp_path / 'white.png')
    result = _run('align', tmp_path / 'white.png', '--outdir', tmp_path / 'out')
    assert result.exit_code == 1 and 'white.png: no face found' in result.output


def test_align_bad_options(tmp_path, astronaut):
    astronaut.save(tmp_path / 'me.png')
    result = _run('align', tmp_path / 'me.png', '--outdir', tmp_path / 'out', '--landmarks', tmp_path / 'x.dat')
    assert result.exit_code == 1 and 'x.dat not found (expected shape_predictor_68_face_landmarks.dat)' in result.output
    result = _run('align', tmp_path / 'me.png', '--outdir', tmp_path / 'out', '--size', 4)
    assert result.exit_code == 2 and "Invalid value for '--size'" in result.output
    result = _run('align', tmp_path / 'missing.png', '--outdir', tmp_path / 'out')
    assert result.exit_code == 2 and 'does not exist' in result.output


@pytest.fixture
def aligned(tmp_path, astronaut):
    astronaut.save(tmp_path / 'me.png')
    assert _run('align', tmp_path / 'me.png', '--outdir', tmp_path / 'out', '--size', 256).exit_code == 0
    return tmp_path


def test_paste_back_round_trip(aligned, astronaut):
    out = aligned / 'res' / 'back.png'
    result = _run('paste-back', '--aligned-json', aligned / 'out' / 'me.json', '--face', aligned / 'out' / 'me.png',
                  '--photo', aligned / 'me.png', '--out', out, '--mask', 'circle', '--feather', 0.2)
    assert result.exit_code == 0, result.output
    with Image.open(out) as img:
        diff = np.asarray(img, np.float64)[100:160, 190:250] - np.asarray(astronaut, np.float64)[100:160, 190:250]
    assert 10 * np.log10(255.0 ** 2 / np.mean(diff ** 2)) > 30


def test_paste_back_uses_recorded_source(aligned):
    red = aligned / 'red.png'
    Image.new('RGB', (64, 64), (255, 0, 0)).save(red)
    result = _run('paste-back', '--aligned-json', aligned / 'out' / 'me.json', '--face', red, '--out', aligned / 'r.png')
    assert result.exit_code == 0, result.output
    with Image.open(aligned / 'r.png') as img:
        assert tuple(img.getpixel((220, 130))) == (255, 0, 0)  # the face centre is now red


def test_paste_back_errors(aligned):
    js, face = aligned / 'out' / 'me.json', aligned / 'out' / 'me.png'
    (aligned / 'bad.json').write_text('[1, 2')
    result = _run('paste-back', '--aligned-json', aligned / 'bad.json', '--face', face, '--out', aligned / 'o.png')
    assert result.exit_code == 1 and 'bad.json: not a valid alignment JSON' in result.output
    Image.new('RGB', (64, 32)).save(aligned / 'wide.png')
    result = _run('paste-back', '--aligned-json', js, '--face', aligned / 'wide.png', '--out', aligned / 'o.png')
    assert result.exit_code == 1 and 'face image must be square, got 64x32' in result.output
    result = _run('paste-back', '--aligned-json', js, '--face', aligned / 'none.png', '--out', aligned / 'o.png')
    assert result.exit_code == 1 and 'none.png: no such image file' in result.output
    result = _run('paste-back', '--aligned-json', js, '--face', face, '--out', aligned / 'o.unknownext')
    assert result.exit_code == 1 and 'unknown file extension' in result.output
    record = json.loads(js.read_text())
    record['source'] = None
    (aligned / 'nosrc.json').write_text(json.dumps(record))
    result = _run('paste-back', '--aligned-json', aligned / 'nosrc.json', '--face', face, '--out', aligned / 'o.png')
    assert result.exit_code == 1 and 'no source photo recorded; pass --photo' in result.output
    result = _run('paste-back', '--aligned-json', js, '--face', face, '--out', aligned / 'o.png', '--feather', 0.9)
    assert result.exit_code == 2 and "Invalid value for '--feather'" in result.output
