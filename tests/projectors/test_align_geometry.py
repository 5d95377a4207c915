"""FFHQ geometry without dlib: the oriented quad, shrink/crop/pad/warp and the coordinate records."""

import json

import numpy as np
import pytest
import scipy.ndimage
from PIL import Image

from pstyle.projectors import align as A

# Zero-mean scatter for the six points of an eye: the FFHQ eye centre is their mean.
_EYE_SCATTER = np.array([[-6, 0], [-3, -2], [3, -2], [6, 0], [3, 2], [-3, 2]], np.float64)


def _landmarks(eye_l, eye_r, mouth_l, mouth_r):
    lm = np.full((68, 2), -1000.0)  # points FFHQ ignores sit far away: using them would show
    lm[36:42] = np.asarray(eye_l, np.float64) + _EYE_SCATTER
    lm[42:48] = np.asarray(eye_r, np.float64) + _EYE_SCATTER
    lm[48], lm[54] = mouth_l, mouth_r
    return lm


def _rotate(points, deg, centre):
    t = np.deg2rad(deg)
    R = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    return (np.asarray(points) - centre) @ R.T + centre


def test_quad_eye_dominated_by_hand():
    # eye_to_eye = (40, 0), eye_to_mouth = (0, 50): x = (40, 0) + (50, 0) -> unit (1, 0), scaled by
    # max(2 * 40, 1.8 * 50) = 90; c = (120, 100) + 0.1 * (0, 50) = (120, 105).
    quad, qsize = A.ffhq_quad(_landmarks((100, 100), (140, 100), (105, 150), (135, 150)))
    assert np.allclose(quad, [[30, 15], [30, 195], [210, 195], [210, 15]])
    assert qsize == pytest.approx(180.0)


def test_quad_mouth_dominated_by_hand():
    # eye distance 20 (-> 40) loses to 1.8 * eye-to-mouth 50 (-> 90); centre (110, 105).
    quad, qsize = A.ffhq_quad(_landmarks((100, 100), (120, 100), (100, 150), (120, 150)))
    assert np.allclose(quad, [[20, 15], [20, 195], [200, 195], [200, 15]])
    assert qsize == pytest.approx(180.0)


def test_quad_roll_uses_both_eye_line_and_mouth_axis():
    # Eyes level but the mouth displaced sideways: the crop tilts by the mean of the two cues.
    quad, _ = A.ffhq_quad(_landmarks((100, 100), (140, 100), (125, 150), (155, 150)))
    top = quad[3] - quad[0]
    # x = (40, 0) - perp((20, 50)) = (40, 0) - (-50, 20) = (90, -20)
    assert np.allclose(top / np.hypot(*top), np.array([90, -20]) / np.hypot(90, -20))


@pytest.mark.parametrize('deg', [-35.0, 12.0, 90.0])
def test_quad_is_rotation_and_scale_equivariant(deg):
    base = _landmarks((100, 100), (140, 100), (105, 150), (135, 150))
    quad, qsize = A.ffhq_quad(base)
    centre = np.array([57.0, 81.0])
    rquad, rqsize = A.ffhq_quad(_rotate(base, deg, centre) * 2.5 + 7.0)
    assert np.allclose(rquad, _rotate(quad, deg, centre) * 2.5 + 7.0)
    assert rqsize == pytest.approx(qsize * 2.5)


def test_quad_rejects_wrong_landmark_count():
    with pytest.raises(AssertionError):
        A.ffhq_quad(np.zeros((5, 2)))


# ---- warp: coloured blobs must land where the recorded transform says -----------------------------

_GREY = 40

def _blob_image(size_wh, centres, radius):
    """Grey (40) RGB image; blob k is a (2r+1)^2 square of channel k = 255 at integer centre k."""
    arr = np.full((size_wh[1], size_wh[0], 3), _GREY, np.uint8)
    for k, (cx, cy) in enumerate(centres):
        arr[cy - radius:cy + radius + 1, cx - radius:cx + radius + 1, k] = 255
    return Image.fromarray(arr)


def _centroids(img):
    arr = np.clip(np.asarray(img, np.float64) - _GREY, 0, None)
    ys, xs = np.mgrid[0:arr.shape[0], 0:arr.shape[1]] + 0.5  # continuous coordinates of pixel centres
    return np.array([[(xs * arr[..., k]).sum() / arr[..., k].sum(), (ys * arr[..., k]).sum() / arr[..., k].sum()]
                     for k in range(3)])


def _check_blobs(photo_wh, landmarks, centres, radius, size, enable_padding=True):
    img = _blob_image(photo_wh, centres, radius)
    quad, qsize = A.ffhq_quad(landmarks)
    aligned, steps = A.warp_ffhq(img, quad, qsize, size, enable_padding)
    assert aligned.size == (size, size) and aligned.mode == 'RGB'
    record = dict(steps, output_size=size)
    expected = A.photo_to_aligned(np.asarray(centres, np.float64) + 0.5, record)
    found = _centroids(aligned)
    assert np.abs(found - expected).max() < 0.12, (found, expected)  # output pixels; a 0.5-pixel slip fails
    return aligned, steps


def test_warp_crop_path_places_points():
    lm = _landmarks((100, 100), (140, 100), (105, 150), (135, 150))
    _, steps = _check_blobs((300, 260), lm, [(60, 50), (150, 120), (190, 170)], 3, 128)
    assert steps['shrink'] == 1 and steps['crop'] == [12, 0, 228, 213] and steps['pad'] == [0, 0, 0, 0]


def test_warp_rotated_face_places_points():
    lm = _rotate(_landmarks((100, 100), (140, 100), (105, 150), (135, 150)), 25.0, np.array([120.0, 120.0]))
    lm += 40.0
    _check_blobs((320, 320), lm, [(130, 110), (170, 160), (200, 190)], 3, 128)


def test_warp_shrink_path_places_points():
    # qsize 720 for a 64 output: FFHQ first shrinks by floor(720 / 64 / 2) = 5; 1203 / 5 rounds.
    lm = _landmarks((400, 400), (560, 400), (420, 600), (540, 600)) + 3.0
    _, steps = _check_blobs((1203, 1041), lm, [(250, 200), (600, 500), (760, 760)], 12, 64)
    assert steps['shrink'] == 5 and steps['resized_size'] == [241, 208]


def test_warp_pad_path_places_points_and_fills_outside():
    # The quad spans x -20..160, y -60..120: outside the photo on two sides, so FFHQ pads. The blobs
    # sit where their mirror images (reflect padding) fall outside the quad.
    lm = _landmarks((50, 25), (90, 25), (55, 75), (85, 75))
    blobs = [(100, 70), (40, 100), (140, 110)]
    aligned, steps = _check_blobs((200, 200), lm, blobs, 3, 96)
    assert steps['pad'][0] > 0 and steps['pad'][1] > 0
    corner = np.asarray(aligned)[:4, :4].astype(int)
    assert np.abs(corner - _GREY).max() <= 2  # filled (reflection -> median colour), not left black
    bare, steps = A.warp_ffhq(_blob_image((200, 200), blobs, 3),
                              *A.ffhq_quad(lm), 96, enable_padding=False)
    assert steps['pad'] == [0, 0, 0, 0] and np.asarray(bare)[:4, :4].max() == 0


def _pad_blend_reference(arr, pad, qsize):
    """Float64 per-pixel restatement of FFHQ's padding blend (mask from the distance to each edge)."""
    left, top, right, bottom = pad
    padded = np.pad(arr.astype(np.float64), ((top, bottom), (left, right), (0, 0)), mode='reflect')
    h, w, _ = padded.shape
    blurred = scipy.ndimage.gaussian_filter(padded, [qsize * 0.02, qsize * 0.02, 0])
    out = padded.copy()
    for i in range(h):
        for j in range(w):
            m = max(1 - min(j / left, (w - 1 - j) / right), 1 - min(i / top, (h - 1 - i) / bottom))
            out[i, j] += (blurred[i, j] - out[i, j]) * min(max(3 * m + 1, 0), 1)
    median = np.median(out, axis=(0, 1))
    for i in range(h):
        for j in range(w):
            m = max(1 - min(j / left, (w - 1 - j) / right), 1 - min(i / top, (h - 1 - i) / bottom))
            out[i, j] += (median - out[i, j]) * min(max(m, 0), 1)
    return np.clip(np.rint(out), 0, 255)


def test_pad_blend_matches_per_pixel_reference():
    arr = np.random.RandomState(0).randint(0, 256, (9, 7, 3)).astype(np.float32)
    pad, qsize = (3, 2, 4, 5), 60.0
    got = A._reflect_pad_blend(arr, pad, qsize)
    assert got.shape == (9 + 2 + 5, 7 + 3 + 4, 3) and got.dtype == np.uint8
    assert np.abs(got.astype(np.float64) - _pad_blend_reference(arr, pad, qsize)).max() <= 1


# ---- mapping helpers, masks and transform records ----------------------------------------------------

def _record(quad, size=256, photo_size=(400, 300)):
    return dict(format=A.TRANSFORM_FORMAT, version=A.TRANSFORM_VERSION, quad=np.asarray(quad).tolist(),
                output_size=size, photo_size=list(photo_size))


def test_mapping_round_trip_and_corners():
    quad = _rotate(np.array([[30, 15], [30, 195], [210, 195], [210, 15]], np.float64), 20, np.array([120.0, 105.0]))
    rec = _record(quad)
    assert np.allclose(A.aligned_to_photo([[0, 0], [0, 256], [256, 256], [256, 0]], rec), quad)
    pts = np.random.RandomState(1).uniform(0, 300, (10, 2))
    assert np.allclose(A.aligned_to_photo(A.photo_to_aligned(pts, rec), rec), pts)
    # A similarity: the aligned centre maps to the quad centre, lengths scale by side / size.
    assert np.allclose(A.aligned_to_photo([[128, 128]], rec), quad.mean(axis=0))


def test_homography_recovers_a_perspective_map():
    H = np.array([[1.1, 0.2, 5.0], [-0.1, 0.9, 3.0], [0.001, 0.002, 1.0]])
    src = np.array([[0, 0], [0, 10], [10, 10], [10, 0]], np.float64)
    dst = A._apply_homography(H, src)
    assert np.allclose(A.homography(src, dst), H)


@pytest.mark.parametrize('shape', A.PASTE_MASKS)
def test_blend_mask_is_soft_and_inside(shape):
    m = np.asarray(A.blend_mask(100, 0.2, shape)).astype(int)
    assert m[50, 50] == 255 and m[0, 0] == 0 and m[0, 50] < 20
    row = m[50, :50]
    assert (np.diff(row) >= 0).all() and len(np.unique(row)) > 10  # a ramp, not a step
    hard = np.asarray(A.blend_mask(100, 0.0, shape))
    assert hard[50, 50] == 255 and hard[0, 0] == (255 if shape == 'square' else 0)
    assert set(np.unique(hard)) <= {0, 255}


def test_transform_json_round_trip_and_errors(tmp_path):
    rec = _record([[0, 0], [0, 10], [10, 10], [10, 0]])
    A.save_transform(tmp_path / 'a.json', rec)
    assert A.load_transform(tmp_path / 'a.json') == rec
    with pytest.raises(ValueError, match='alignment JSON not found'):
        A.load_transform(tmp_path / 'missing.json')
    (tmp_path / 'bad.json').write_text('{not json')
    with pytest.raises(ValueError, match=r'bad\.json: not a valid alignment JSON'):
        A.load_transform(tmp_path / 'bad.json')
    (tmp_path / 'other.json').write_text(json.dumps({'format': 'something-else'}))
    with pytest.raises(ValueError, match=r'other\.json: not an alignment record'):
        A.load_transform(tmp_path / 'other.json')
    with pytest.raises(ValueError, match='lacks quad'):
        A.check_transform({'format': A.TRANSFORM_FORMAT, 'photo_size': [1, 1], 'output_size': 8})
    with pytest.raises(ValueError, match='4 corners'):
        A.check_transform(dict(rec, quad=[[0, 0], [1, 1]]))


def test_align_face_rejects_bad_arguments():
    with pytest.raises(ValueError, match='size must be an integer >= 8'):
        A.align_face(np.zeros((8, 8, 3), np.uint8), size=4)
    with pytest.raises(ValueError, match='expected a uint8 .H, W. or .H, W, C. array'):
        A.align_face(np.zeros((8, 8, 3), np.float32))
    with pytest.raises(TypeError, match='expected a path, a PIL image or a uint8 array'):
        A.align_face(12345)
