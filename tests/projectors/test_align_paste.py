"""paste_back: the aligned square goes back where it came from, softly, and nowhere else."""

import numpy as np
import pytest
import skimage.data
from PIL import Image

from pstyle.projectors import align as A

PSNR_MIN = 33.0  # dB inside the face; measured ~38 here, and a 1-pixel misplacement gives ~26


@pytest.fixture(scope='module')
def photo():
    return Image.fromarray(skimage.data.astronaut())


@pytest.fixture(scope='module')
def face(photo):
    return A.align_face(photo, size=512)[0]


def _inner_face_box(landmarks, scale=1.0):
    """Brows, eyes, nose and mouth (landmarks 17-67): (l, t, r, b) in pixels."""
    lo = np.floor(landmarks[17:].min(axis=0) * scale).astype(int)
    hi = np.ceil(landmarks[17:].max(axis=0) * scale).astype(int) + 1
    return (*lo, *hi)


def _psnr(a, b, box):
    l, t, r, b_ = box
    diff = np.asarray(a, np.float64)[t:b_, l:r] - np.asarray(b, np.float64)[t:b_, l:r]
    return 10 * np.log10(255.0 ** 2 / np.mean(diff ** 2))


def _shifted(transform, dx):
    return dict(transform, quad=(np.asarray(transform['quad']) + [dx, 0]).tolist())


def test_unmodified_face_reproduces_the_photo(photo, face):
    box = _inner_face_box(face.landmarks)
    out = A.paste_back(photo, face.image, face.transform)
    assert out.size == photo.size and out.mode == 'RGB'
    assert _psnr(out, photo, box) > PSNR_MIN
    # The same check rejects a paste one pixel off.
    assert _psnr(A.paste_back(photo, face.image, _shifted(face.transform, 1.0)), photo, box) < PSNR_MIN - 3


def test_pixels_away_from_the_face_are_untouched(photo, face):
    red = Image.new('RGB', face.image.size, (255, 0, 0))
    for mask in A.PASTE_MASKS:
        out = np.asarray(A.paste_back(photo, red, face.transform, mask=mask))
        changed = np.any(out != np.asarray(photo), axis=2)
        assert changed.sum() > 1000  # the face region did change
        # Photo pixel centres in aligned coordinates, normalised to [0, 1].
        ys, xs = np.mgrid[0:photo.height, 0:photo.width] + 0.5
        uv = A.photo_to_aligned(np.stack([xs.ravel(), ys.ravel()], 1), face.transform).reshape(*xs.shape, 2) / 512
        margin = 2.0 / face.transform['qsize']  # two photo pixels, as a fraction of the square
        if mask == 'square':
            outside = np.any((uv < -margin) | (uv > 1 + margin), axis=2)
        else:
            outside = np.hypot(uv[..., 0] - 0.5, uv[..., 1] - 0.5) > 0.5 + margin
        assert not changed[outside].any()


def _alpha(photo_size, face, transform, feather, mask='square'):
    """Effective blend weight: a white face pasted onto a black photo."""
    black = Image.new('RGB', photo_size, (0, 0, 0))
    white = Image.new('RGB', face.image.size, (255, 255, 255))
    return np.asarray(A.paste_back(black, white, transform, feather=feather, mask=mask))[..., 0] / 255.0


@pytest.mark.parametrize('mask', A.PASTE_MASKS)
def test_feathered_edges_have_no_seam(photo, face, mask):
    soft = _alpha(photo.size, face, face.transform, 0.1, mask)
    hard = _alpha(photo.size, face, face.transform, 0.0, mask)
    centre = np.round(face.quad.mean(axis=0)).astype(int)
    assert soft[centre[1], centre[0]] == 1.0 and hard[centre[1], centre[0]] == 1.0
    steepest = lambda a: max(np.abs(np.diff(a, axis=0)).max(), np.abs(np.diff(a, axis=1)).max())  # noqa: E731
    # A ramp over 0.1 * 174 photo pixels: smoothstep's steepest slope is 1.5 / 17.4 per pixel.
    assert steepest(soft) < 0.12
    assert steepest(hard) > 0.4
    # The ramp lies inside the square: the soft mask is never above the hard one.
    assert (soft <= hard + 1 / 255).all()


def test_face_at_another_resolution(photo, face):
    small = face.image.resize((256, 256), Image.Resampling.LANCZOS)  # e.g. a 256 x 256 stylized face
    out = A.paste_back(photo, small, face.transform)
    assert _psnr(out, photo, _inner_face_box(face.landmarks)) > PSNR_MIN


def test_resized_photo_rescales_the_quad(photo, face):
    big = photo.resize((1024, 1024), Image.Resampling.LANCZOS)
    out = A.paste_back(big, face.image, face.transform)
    assert _psnr(out, big, _inner_face_box(face.landmarks, 2.0)) > PSNR_MIN - 2
    with pytest.raises(ValueError, match=r'photo is 512x300 but the alignment was made on a 512x512 photo'):
        A.paste_back(photo.crop((0, 0, 512, 300)), face.image, face.transform)


def test_square_outside_the_photo_changes_nothing(photo, face):
    out = A.paste_back(photo, face.image, _shifted(face.transform, 5000.0))
    assert np.array_equal(np.asarray(out), np.asarray(photo))


def test_bad_arguments(photo, face):
    with pytest.raises(ValueError, match='face image must be square, got 512x500'):
        A.paste_back(photo, face.image.crop((0, 0, 512, 500)), face.transform)
    with pytest.raises(ValueError, match=r'feather must be in \[0, 0.5\]'):
        A.paste_back(photo, face.image, face.transform, feather=0.7)
    with pytest.raises(ValueError, match="mask must be one of square, circle, got 'oval'"):
        A.paste_back(photo, face.image, face.transform, mask='oval')
    with pytest.raises(ValueError, match='not an alignment record'):
        A.paste_back(photo, face.image, {'quad': face.transform['quad']})


def test_paths_are_accepted(photo, face, tmp_path):
    photo.save(tmp_path / 'p.png')
    face.image.save(tmp_path / 'f.png')
    out = A.paste_back(tmp_path / 'p.png', tmp_path / 'f.png', face.transform)
    assert np.array_equal(np.asarray(out), np.asarray(A.paste_back(photo, face.image, face.transform)))


def test_uint8_arrays_are_accepted(photo, face):
    """The stylize pipeline hands generator output over as uint8 [H, W, C] numpy arrays."""
    from_arrays = A.paste_back(np.asarray(photo), np.asarray(face.image), face.transform)
    assert np.array_equal(np.asarray(from_arrays), np.asarray(A.paste_back(photo, face.image, face.transform)))
    grey = np.asarray(face.image.convert('L'))[..., None]  # a one-channel generator: [H, W, 1]
    out = np.asarray(A.paste_back(photo, grey, face.transform))
    centre = np.round(face.quad.mean(axis=0)).astype(int)
    assert out[centre[1], centre[0], 0] == out[centre[1], centre[0], 1] == out[centre[1], centre[0], 2]
    with pytest.raises(ValueError, match=r'expected a uint8 \[H, W\] or \[H, W, C\] array'):
        A.paste_back(photo, np.zeros((8, 8, 2), np.uint8), face.transform)
