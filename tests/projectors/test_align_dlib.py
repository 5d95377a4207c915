"""Alignment with dlib on a real photo (skimage's astronaut), face choice, EXIF, failures, dependencies.

Needs dlib-bin and face-recognition-models (the `dev` extra installs both).
"""

import hashlib
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import skimage.data
from PIL import Image

from pstyle.projectors import align as A

# FFHQ's crop puts the eyes a quarter of the side apart, symmetric about the centre, slightly above
# the middle (the centre is eye_avg + 0.1 * eye_to_mouth): about (0.375, 0.475) and (0.625, 0.475).
CANONICAL_EYES = np.array([[0.375, 0.475], [0.625, 0.475]])


def _eyes(landmarks):
    return np.stack([landmarks[36:42].mean(axis=0), landmarks[42:48].mean(axis=0)])


@pytest.fixture(scope='module')
def astronaut():
    return Image.fromarray(skimage.data.astronaut())


@pytest.fixture(scope='module')
def aligned_1024(astronaut):
    A.align_face(astronaut, size=64)  # load the models outside the timing
    start = time.perf_counter()
    faces = A.align_face(astronaut)
    print(f'\nalign_face(astronaut 512x512, size=1024): {time.perf_counter() - start:.2f} s')
    return faces


def test_output_is_square_rgb_at_default_size(aligned_1024):
    assert len(aligned_1024) == 1
    face = aligned_1024[0]
    assert face.image.size == (1024, 1024) and face.image.mode == 'RGB'
    assert face.quad.shape == (4, 2) and face.landmarks.shape == (68, 2)
    assert face.transform['output_size'] == 1024 and face.transform['transform_size'] == 4096
    assert face.transform['photo_size'] == [512, 512]


def test_eyes_land_on_canonical_ffhq_positions(aligned_1024):
    face = aligned_1024[0]
    found = A.detect_landmarks(face.image)
    assert len(found) == 1
    eyes = _eyes(found[0][1])
    assert np.abs(eyes / 1024 - CANONICAL_EYES).max() < 0.02
    # And where the recorded transform says the photo's eyes go (continuous coords: +0.5).
    predicted = A.photo_to_aligned(_eyes(face.landmarks) + 0.5, face.transform) - 0.5
    assert np.abs(eyes - predicted).max() < 0.006 * 1024


def test_largest_face_chosen_by_default(astronaut):
    # At upsample 1 dlib also fires on the mission patch on the suit (lower half); the two boxes are
    # nearly the same area, but the FFHQ crop (qsize) of the real face is far larger.
    everything = A.detect_landmarks(astronaut, upsample=1)
    assert len(everything) == 2
    faces = A.align_face(astronaut, size=64)
    assert len(faces) == 1 and faces[0].transform['num_faces'] == 2
    assert faces[0].landmarks[:, 1].max() < 256  # the astronaut's face, in the upper half


def test_all_faces_on_astronaut_returns_each_largest_first(astronaut):
    faces = A.align_face(astronaut, size=64, all_faces=True)
    assert len(faces) == 2
    assert [f.transform['face_index'] for f in faces] == [0, 1]
    assert faces[0].transform['qsize'] > faces[1].transform['qsize']
    assert faces[1].landmarks[:, 1].min() > 256  # the patch


def test_two_real_faces(astronaut):
    head = astronaut.crop((100, 0, 350, 250))
    canvas = Image.new('RGB', (520, 300), (230, 230, 230))
    canvas.paste(head, (0, 20))
    canvas.paste(head.resize((150, 150), Image.Resampling.LANCZOS), (330, 60))  # 0.6x copy on the right
    faces = A.align_face(canvas, size=64, all_faces=True)
    assert len(faces) == 2
    assert _eyes(faces[0].landmarks)[:, 0].max() < 250 and _eyes(faces[1].landmarks)[:, 0].min() > 330
    assert faces[1].transform['qsize'] / faces[0].transform['qsize'] == pytest.approx(0.6, abs=0.05)
    default = A.align_face(canvas, size=64)
    assert len(default) == 1 and np.allclose(default[0].quad, faces[0].quad)


def _exif_rotated(astronaut, path, **save_kwargs):
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    astronaut.transpose(Image.Transpose.ROTATE_90).save(path, exif=exif, **save_kwargs)
    return path


def test_exif_rotated_png_aligns_identically(astronaut, tmp_path):
    ref = A.align_face(astronaut, size=128)[0]
    got = A.align_face(_exif_rotated(astronaut, tmp_path / 'rot.png'), size=128)[0]
    assert np.allclose(got.quad, ref.quad) and np.array_equal(np.asarray(got.image), np.asarray(ref.image))
    assert got.transform['photo_size'] == [512, 512]


def test_exif_rotated_jpeg_aligns_within_tolerance(astronaut, tmp_path):
    path = _exif_rotated(astronaut, tmp_path / 'rot.jpg', quality=95)
    with Image.open(path) as raw:  # without the EXIF turn the face is sideways and not found
        assert A.detect_landmarks(raw.convert('RGB')) == []
    ref = A.align_face(astronaut, size=128)[0]
    got = A.align_face(path, size=128)[0]
    assert np.abs(got.quad - ref.quad).max() < 0.015 * ref.transform['qsize']
    assert np.abs(np.asarray(got.image, np.float64) - np.asarray(ref.image, np.float64)).mean() < 6


@pytest.mark.parametrize('kind', ['flat', 'noise'])
def test_no_face_error_names_the_file(tmp_path, kind):
    arr = np.full((200, 200, 3), 128, np.uint8) if kind == 'flat' else \
        np.random.RandomState(0).randint(0, 256, (200, 200, 3), dtype=np.uint8)
    path = tmp_path / f'{kind}_nobody.png'
    Image.fromarray(arr).save(path)
    with pytest.raises(A.NoFaceError, match=rf'{kind}_nobody\.png: no face found') as info:
        A.align_face(path, size=64)
    assert info.value.name == str(path)


def test_no_face_in_memory_image_says_image():
    with pytest.raises(A.NoFaceError, match='<image>: no face found'):
        A.align_face(np.zeros((64, 64, 3), np.uint8), size=64)


def test_detect_max_side_finds_the_same_face(astronaut):
    big = astronaut.resize((1536, 1536), Image.Resampling.LANCZOS)
    full = A.align_face(big, size=64)[0]
    fast = A.align_face(big, size=64, detect_max_side=512)[0]
    assert np.abs(fast.quad - full.quad).max() < 0.01 * full.transform['qsize']


def test_predictor_as_path_and_env(monkeypatch, astronaut):
    model = A.find_landmarks_model()
    assert model.name == A.LANDMARKS_FILE
    monkeypatch.setenv(A.LANDMARKS_ENV, str(model))
    assert A.find_landmarks_model() == model
    faces = A.align_face(astronaut, size=64, predictor=str(model))
    assert faces[0].landmarks.shape == (68, 2)


# ---- dependency errors ------------------------------------------------------------------------

def test_missing_dlib_names_the_packages(monkeypatch):
    monkeypatch.setitem(sys.modules, 'dlib', None)  # makes `import dlib` raise ImportError
    with pytest.raises(A.AlignDependencyError, match=r"dlib.*pip install 'portrait-stylegan\[align\]'.*dlib-bin"):
        A._import_dlib()


def test_missing_model_names_the_packages(monkeypatch):
    monkeypatch.delenv(A.LANDMARKS_ENV, raising=False)
    monkeypatch.setattr(A.importlib.util, 'find_spec', lambda name: None)
    with pytest.raises(A.AlignDependencyError,
                       match=r'shape_predictor_68_face_landmarks\.dat not found.*face-recognition-models.*--landmarks'):
        A.find_landmarks_model()


def test_explicit_and_env_model_paths_must_exist(monkeypatch, tmp_path):
    with pytest.raises(A.AlignDependencyError, match=r'landmark model .*nope\.dat not found'):
        A.find_landmarks_model(tmp_path / 'nope.dat')
    monkeypatch.setenv(A.LANDMARKS_ENV, str(tmp_path / 'gone.dat'))
    with pytest.raises(A.AlignDependencyError, match=r'\$PSTYLE_DLIB_LANDMARKS .*gone\.dat not found'):
        A.find_landmarks_model()


def test_unknown_model_file_is_refused_before_dlib_reads_it(tmp_path, monkeypatch):
    path = tmp_path / 'garbage.dat'
    path.write_bytes(b'\x00' * 100)
    with pytest.raises(A.AlignDependencyError, match=r'refusing to load .*garbage\.dat: its sha256 [0-9a-f]{64} is not '
                       r'the published sha256 of shape_predictor_68_face_landmarks\.dat.*expected fbdc2cb80eb9'):
        A._load_predictor(str(path))
    monkeypatch.setenv('PSTYLE_TRUSTED_SHA256', hashlib.sha256(b'\x00' * 100).hexdigest())   # the user vouches
    with pytest.raises(A.AlignDependencyError, match=r'garbage\.dat: not a dlib shape predictor model'):
        A._load_predictor(str(path))


def test_five_point_model_is_refused(astronaut):
    five = A.find_landmarks_model().parent / 'shape_predictor_5_face_landmarks.dat'
    assert Path(five).is_file()
    with pytest.raises(A.AlignDependencyError, match=r'gave 5 points.*shape_predictor_68'):
        A.align_face(astronaut, size=64, predictor=str(five))
