"""Identity numbers in their users' units (dlib distance + 0.6 threshold, ArcFace cosine), named by embedder,
and dlib detections that are not faces counted and named instead of scored."""

import numpy as np
import pytest
import torch
from PIL import Image

from pstyle.metrics.api import compute_metrics
from pstyle.metrics.arcface import IRSE50
from pstyle.metrics.face_check import DLIB_MIN_SCORE, landmark_problem
from pstyle.metrics.identity import (DLIB_SAME_PERSON_THRESHOLD, ArcFaceEmbedder, DlibEmbedder, IdentityAccumulator, cosine,
                              pair_identity)
from pstyle.metrics.inputs import open_images
from pstyle.metrics.pairwise import pairwise_metrics
from pstyle.stylize.photo_metrics import PhotoMetrics

SIZE = 384
# The astronaut's face landmarks from dlib's 5-point model, in box widths (box at 0, 0, width 1).
FACE_POINTS = [[0.88, 0.31], [0.69, 0.32], [0.22, 0.27], [0.41, 0.30], [0.54, 0.65]]


def _hwc(img):
    return np.array(img.resize((SIZE, SIZE), Image.BICUBIC))  # Writable, as decoded files are.


@pytest.fixture(scope='module')
def images():
    """uint8 [H, W, 3]: the astronaut, mirrored, the mission patch on her suit (a dlib false positive at this
    size: a crop around the detection dlib reports in the full image, score 0.12), and noise."""
    import skimage.data
    astronaut = skimage.data.astronaut()
    face = Image.fromarray(astronaut)
    return dict(face=_hwc(face), mirror=_hwc(face.transpose(Image.FLIP_LEFT_RIGHT)),
                patch=_hwc(Image.fromarray(astronaut[295:465, 86:255])),
                noise=np.random.RandomState(0).randint(0, 256, (SIZE, SIZE, 3)).astype(np.uint8))


@pytest.fixture(scope='module')
def dlib_embedder():
    return DlibEmbedder()


def _nchw(*arrays):
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


def test_the_patch_fires_dlibs_detector_but_is_not_counted_as_a_face(images, dlib_embedder):
    import dlib
    dets, scores, _ = dlib.get_frontal_face_detector().run(images['patch'], 1, 0)
    assert len(dets) == 1 and 0 < scores[0] < DLIB_MIN_SCORE  # The premise: a real dlib false positive.
    emb, checks = dlib_embedder.embed_checked(_nchw(images['face'], images['patch'], images['noise']))
    assert [c.status for c in checks] == ['face', 'not_face', 'no_face']
    assert checks[0].score > 1 and checks[1].reason == f'detector score {scores[0]:.3f} < 0.3'
    assert np.isfinite(emb[0]).all() and np.isnan(emb[1:]).all()
    assert dlib_embedder.info['identity_face_check'] == \
        'dlib_hog score >= 0.3 at upsample 1, plausible 5-point landmarks'


def test_dlib_cosine_flatters_a_non_face_but_the_distance_does_not(images):
    """Why dlib is reported as a distance: its descriptor of the patch is at cosine > 0.75 to the face."""
    accept_all = DlibEmbedder(min_score=0.0)
    emb, checks = accept_all.embed_checked(_nchw(images['face'], images['patch']))
    assert all(c.is_face for c in checks)
    assert cosine(emb[0], emb[1]) > 0.75
    scored = pair_identity('dlib_resnet_v1', emb[0], emb[1])
    assert scored['identity_dlib_distance'] > DLIB_SAME_PERSON_THRESHOLD and scored['same_person'] is False


def test_same_person_is_dlibs_distance_threshold_0_6():
    assert DLIB_SAME_PERSON_THRESHOLD == 0.6
    a = np.zeros(128)
    near, far = a.copy(), a.copy()
    near[0], far[0] = 0.59, 0.61
    assert pair_identity('dlib_resnet_v1', a, near) == dict(identity_dlib_distance=pytest.approx(0.59), same_person=True)
    assert pair_identity('dlib_resnet_v1', a, far)['same_person'] is False
    u, v = np.array([1.0, 0.0]), np.array([1.0, 1.0])
    assert pair_identity('arcface_ir_se50', u, v) == dict(identity_arcface_cosine=pytest.approx(2 ** -0.5))
    with pytest.raises(ValueError, match="unknown identity embedder 'facenet'"):
        pair_identity('facenet', u, v)


def test_landmark_rule_rejects_implausible_geometry():
    face = np.array(FACE_POINTS)
    assert landmark_problem(face, 0, 0, 1) == ''
    assert landmark_problem(face * 100 + [30, 40], 30, 40, 100) == ''  # Pixels: box-relative.
    upside_down = face.copy()
    upside_down[4] = [0.54, 0.05]
    assert landmark_problem(upside_down, 0, 0, 1).startswith('nose -')
    stacked = face.copy()
    stacked[2:4] = [[0.80, 0.75], [0.78, 0.60]]
    assert 'roll' in landmark_problem(stacked, 0, 0, 1)
    close = face.copy()
    close[2:4] = [[0.62, 0.31], [0.66, 0.31]]
    assert 'box widths apart (expected 0.25-0.75)' in landmark_problem(close, 0, 0, 1)
    aside = face.copy()
    aside[4] = [1.2, 0.7]
    assert landmark_problem(aside, 0, 0, 1) == 'nose not between the eyes'


def _write(folder, **arrays):
    folder.mkdir()
    for name, arr in arrays.items():
        Image.fromarray(arr).save(folder / f'{name}.png')
    return open_images(str(folder))


def test_pairwise_reports_distance_threshold_and_names_non_faces(images, dlib_embedder, tmp_path):
    photos = _write(tmp_path / 'photos', a=images['face'], b=images['face'], c=images['face'])
    styl = _write(tmp_path / 'styl', a=images['mirror'], b=images['patch'], c=images['noise'])
    r = pairwise_metrics(photos, styl, ('id',), embedder=dlib_embedder)
    assert r['identity_embedder'] == 'dlib_resnet_v1' and r['identity_num_scored'] == 1
    assert r['identity_dlib_same_person_threshold'] == 0.6 and r['identity_dlib_same_person_num'] == 1
    assert r['identity_dlib_distance_mean'] < 0.6 and r['identity_dlib_same_person_rate'] == 1.0
    assert r['identity_not_face_stylized'] == 1 and r['identity_no_face_stylized'] == 1
    assert r['identity_not_face_stylized_files'][0].startswith('b.png: detector score 0.')
    assert r['identity_no_face_stylized_files'] == ['c.png']
    assert r['identity_not_face_photo'] == r['identity_no_face_photo'] == 0
    assert 'identity_arcface_cosine_mean' not in r and not any(k.startswith('id_') for k in r)
    out = compute_metrics(['id'], real=str(tmp_path / 'photos'), fake=str(tmp_path / 'styl'), embedder=dlib_embedder,
                          device='cpu')
    assert {k: out[k] for k in r if k.startswith('identity_')} == {k: v for k, v in r.items() if k.startswith('identity_')}
    record = out['records'][0]
    assert record['metric'] == 'id' and record['results']['identity_dlib_same_person_threshold'] == 0.6
    assert record['identity_model'] == 'dlib_resnet_v1' and record['identity_face_check'].startswith('dlib_hog')


def test_photo_metrics_give_distance_same_person_and_the_reason_for_no_number(images):
    pm = PhotoMetrics('cpu')
    scores = pm(images['face'], np.stack([images['mirror'], images['patch'], images['noise']]))
    assert [s['identity_embedder'] for s in scores] == ['dlib_resnet_v1'] * 3
    assert scores[0]['identity_dlib_distance'] < 0.6 and scores[0]['same_person'] is True
    assert scores[0]['identity_note'] is None
    assert scores[1]['identity_dlib_distance'] is None and scores[1]['same_person'] is None
    assert scores[1]['identity_note'].startswith('output: not a face: detector score 0.')
    assert scores[2]['identity_note'] == 'output: no face detected'
    assert pm(images['noise'], images['face'][None])[0]['identity_note'] == 'photo: no face detected'


def test_arcface_numbers_are_cosines_and_name_their_embedder(images, tmp_path):
    torch.manual_seed(0)
    torch.save(IRSE50().eval().state_dict(), tmp_path / 'model_ir_se50.pth')
    emb = ArcFaceEmbedder(tmp_path / 'model_ir_se50.pth')
    e, checks = emb.embed_checked(_nchw(images['face'], images['mirror'], images['patch']))
    assert [c.status for c in checks] == ['face', 'face', 'not_face']
    acc = IdentityAccumulator(emb.name, emb.info['identity_face_check'])
    acc.add(['a.png', 'b.png'], e[[0, 0]], [checks[0]] * 2, e[1:], checks[1:])
    r = acc.result()
    assert r['identity_embedder'] == 'arcface_ir_se50' and r['identity_num_scored'] == 1
    assert r['identity_arcface_cosine_mean'] == pytest.approx(float(cosine(e[0], e[1])))
    assert 'identity_dlib_distance_mean' not in r and r['identity_not_face_stylized'] == 1
    pm = PhotoMetrics('cpu', identity_kind='arcface', arcface_weights=tmp_path / 'model_ir_se50.pth')
    s = pm(images['face'], images['mirror'][None])[0]
    assert s['identity_embedder'] == 'arcface_ir_se50' and -1 <= s['identity_arcface_cosine'] <= 1
    assert 'identity_dlib_distance' not in s and 'same_person' not in s
