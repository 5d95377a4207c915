"""Identity between a photo and its stylized version, in the units each embedder's users read.

Two embedders, and each number says which one produced it:
- `dlib`: dlib's ResNet face descriptor (128-d) after its HOG face detector and 5-point alignment; the
  model files ship in the `face-recognition-models` package, so this works offline. Reported as the
  Euclidean distance (`identity_dlib_distance`) with dlib's same-person threshold 0.6 (`same_person` =
  distance < 0.6; dlib's documented rule, 99.38% on LFW). Not as a cosine: dlib descriptors of anything
  lie in one narrow cone (a non-face crop sits at cosine 0.82 to a face).
- `arcface`: ArcFace IR-SE50 (512-d) on FFHQ-aligned crops, from a user-supplied `model_ir_se50.pth`
  (see `metrics.arcface`); reported as the cosine similarity (`identity_arcface_cosine`), as pSp/e4e do.

Before scoring, `metrics.face_check` decides whether each image shows a face (dlib detector score and
landmark plausibility; for ArcFace too when dlib is installed). Images without a detection and detections
rejected as non-faces are counted and named separately in the result, never silently dropped; pairs with
either side not a face do not enter the mean.
"""

import importlib.util
import os

import numpy as np
import torch

from . import weights as W
from .arcface import arcface_input, load_arcface
from .face_check import DlibFaceCheck, FaceCheck

DLIB_SAME_PERSON_THRESHOLD = 0.6   # dlib's dnn_face_recognition example and face_recognition's default tolerance.
DLIB_FILES = ('dlib_face_recognition_resnet_model_v1.dat', 'shape_predictor_5_face_landmarks.dat')


def dlib_model_files() -> dict:
    """Paths of dlib's model files inside `face_recognition_models`, found without importing the package
    (its __init__ imports pkg_resources, which recent setuptools removed)."""
    spec = importlib.util.find_spec('face_recognition_models')
    if spec is None or not spec.submodule_search_locations:
        raise ImportError('the dlib identity metric needs the face-recognition-models package '
                          '(pip install face-recognition-models dlib-bin)')
    for root in spec.submodule_search_locations:
        paths = {name: os.path.join(root, 'models', name) for name in DLIB_FILES}
        if all(os.path.isfile(p) for p in paths.values()):
            return paths
    raise FileNotFoundError(f'face_recognition_models is installed but lacks models/{DLIB_FILES[0]}')


def _dlib():
    try:
        import dlib
    except ImportError as e:
        raise ImportError('the dlib identity metric needs dlib (pip install dlib-bin)') from e
    return dlib


class DlibEmbedder:
    name = 'dlib_resnet_v1'

    def __init__(self, upsample: int = 1, min_score: float = None):
        dlib, files = _dlib(), dlib_model_files()
        # dlib parses these files in C++: only the published ones are handed to it.
        landmarks = W.trusted_path(files['shape_predictor_5_face_landmarks.dat'], W.DLIB_LANDMARKS_5)
        descriptor = W.trusted_path(files['dlib_face_recognition_resnet_model_v1.dat'], W.DLIB_FACE_RESNET)
        kwargs = {} if min_score is None else dict(min_score=min_score)
        self.face_check = DlibFaceCheck(landmarks, upsample, **kwargs)
        self.model = dlib.face_recognition_model_v1(str(descriptor))
        self.info = dict(identity_model=self.name,
                         identity_model_sha256=W.file_sha256(files['dlib_face_recognition_resnet_model_v1.dat']),
                         identity_face_check=self.face_check.rule)

    def embed_checked(self, images: torch.Tensor):
        """uint8 [N,3,H,W] -> (embeddings [N,128] (NaN rows where not a face), [FaceCheck] * N)."""
        out, checks = np.full((len(images), 128), np.nan), []
        for i, img in enumerate(images.permute(0, 2, 3, 1).cpu().numpy()):
            img = np.ascontiguousarray(img)
            check, _, shape = self.face_check.check(img)
            if check.is_face:
                out[i] = np.asarray(self.model.compute_face_descriptor(img, shape))
            checks.append(check)
        return out, checks

    def embed(self, images: torch.Tensor):
        """uint8 [N,3,H,W] -> (embeddings [N,128], is-a-face [N] bool)."""
        emb, checks = self.embed_checked(images)
        return emb, np.array([c.is_face for c in checks])


class ArcFaceEmbedder:
    name = 'arcface_ir_se50'

    def __init__(self, weights=None, device='cpu', detect: bool = True):
        path = W.resolve_weights(W.ARCFACE_IRSE50, path=weights, download=False)
        self.net, self.device = load_arcface(path, device), device
        self.face_check = None
        if detect and importlib.util.find_spec('dlib'):
            try:
                self.face_check = DlibFaceCheck(dlib_model_files()['shape_predictor_5_face_landmarks.dat'])
            except (ImportError, FileNotFoundError):
                self.face_check = None
        self.info = dict(identity_model=self.name, identity_model_sha256=W.file_sha256(path),
                         identity_face_check=self.face_check.rule if self.face_check is not None else 'none')

    @torch.no_grad()
    def embed_checked(self, images: torch.Tensor):
        emb = self.net(arcface_input(images).to(self.device)).cpu().double().numpy()
        checks = [FaceCheck('face') for _ in range(len(images))]
        if self.face_check is not None:
            checks = [self.face_check.check(img)[0] for img in images.permute(0, 2, 3, 1).cpu().numpy()]
        emb[[not c.is_face for c in checks]] = np.nan
        return emb, checks

    def embed(self, images: torch.Tensor):
        emb, checks = self.embed_checked(images)
        return emb, np.array([c.is_face for c in checks])


def build_embedder(kind: str = 'dlib', arcface_weights=None, device='cpu'):
    if kind == 'dlib':
        return DlibEmbedder()
    if kind == 'arcface':
        return ArcFaceEmbedder(arcface_weights, device)
    raise ValueError(f'unknown identity model {kind!r}; choose dlib or arcface')


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=-1, keepdims=True)
    b = b / np.linalg.norm(b, axis=-1, keepdims=True)
    return (a * b).sum(-1)


def pair_identity(embedder_name: str, a: np.ndarray, b: np.ndarray) -> dict:
    """The identity numbers of one pair of embeddings, keyed by the embedder that made them."""
    if embedder_name == DlibEmbedder.name:
        distance = float(np.linalg.norm(a - b))
        return dict(identity_dlib_distance=distance, same_person=distance < DLIB_SAME_PERSON_THRESHOLD)
    if embedder_name == ArcFaceEmbedder.name:
        return dict(identity_arcface_cosine=float(cosine(a, b)))
    raise ValueError(f'unknown identity embedder {embedder_name!r}')


def _as_check(found) -> FaceCheck:
    return found if isinstance(found, FaceCheck) else FaceCheck('face' if found else 'no_face')


class IdentityAccumulator:
    """Collects per-pair identity numbers, and names the images without a face (none detected, or rejected)."""

    def __init__(self, embedder_name: str = DlibEmbedder.name, face_check: str = 'none'):
        self.embedder_name, self.face_check = embedder_name, face_check
        self.pairs = []
        self.missing = {(side, status): [] for side in ('photo', 'stylized') for status in ('no_face', 'not_face')}

    def add(self, names, emb_a, checks_a, emb_b, checks_b):
        """checks_*: FaceCheck per image (or the bools of `embed`: True = face)."""
        for k, name in enumerate(names):
            ca, cb = _as_check(checks_a[k]), _as_check(checks_b[k])
            for side, check in (('photo', ca), ('stylized', cb)):
                if not check.is_face:
                    self.missing[(side, check.status)].append(name if check.status == 'no_face' else f'{name}: {check.reason}')
            if ca.is_face and cb.is_face:
                self.pairs.append(pair_identity(self.embedder_name, emb_a[k], emb_b[k]))

    def result(self, max_names: int = 50):
        n = len(self.pairs)
        out = dict(identity_embedder=self.embedder_name, identity_face_check=self.face_check, identity_num_scored=n)
        if self.embedder_name == DlibEmbedder.name:
            d = [p['identity_dlib_distance'] for p in self.pairs]
            same = sum(p['same_person'] for p in self.pairs)
            out.update(identity_dlib_distance_mean=float(np.mean(d)) if n else None,
                       identity_dlib_distance_std=float(np.std(d)) if n else None,
                       identity_dlib_same_person_threshold=DLIB_SAME_PERSON_THRESHOLD,
                       identity_dlib_same_person_num=int(same),
                       identity_dlib_same_person_rate=same / n if n else None)
        else:
            c = [p['identity_arcface_cosine'] for p in self.pairs]
            out.update(identity_arcface_cosine_mean=float(np.mean(c)) if n else None,
                       identity_arcface_cosine_std=float(np.std(c)) if n else None)
        for (side, status), names in self.missing.items():
            out[f'identity_{status}_{side}'] = len(names)
            out[f'identity_{status}_{side}_files'] = names[:max_names]
        return out
