"""Identity similarity: cosine between face embeddings of a photo and its stylized version.

Two embedders:
- `dlib`: dlib's ResNet face descriptor (128-d) after its HOG face detector and 5-point alignment; the
  model files ship in the `face-recognition-models` package, so this works offline.
- `arcface`: ArcFace IR-SE50 (512-d) on FFHQ-aligned crops, from a user-supplied `model_ir_se50.pth`
  (see `metrics.arcface`). If dlib is importable its detector still checks that each image shows a face.

Images in which no face is found are counted and named in the result, never silently dropped; pairs
with a missing face do not enter the mean.
"""

import importlib.util
import os

import numpy as np
import torch

from . import weights as W

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

    def __init__(self, upsample: int = 1):
        dlib, files = _dlib(), dlib_model_files()
        self.detector = dlib.get_frontal_face_detector()
        # dlib parses these files in C++: only the published ones are handed to it.
        landmarks = W.trusted_path(files['shape_predictor_5_face_landmarks.dat'], W.DLIB_LANDMARKS_5)
        descriptor = W.trusted_path(files['dlib_face_recognition_resnet_model_v1.dat'], W.DLIB_FACE_RESNET)
        self.shape_predictor = dlib.shape_predictor(str(landmarks))
        self.model = dlib.face_recognition_model_v1(str(descriptor))
        self.upsample = upsample
        self.info = dict(identity_model=self.name,
                         identity_model_sha256=W.file_sha256(files['dlib_face_recognition_resnet_model_v1.dat']))

    def embed(self, images: torch.Tensor):
        """uint8 [N,3,H,W] -> (embeddings [N,128] (NaN rows without a face), found [N] bool)."""
        out, found = np.full((len(images), 128), np.nan), np.zeros(len(images), bool)
        for i, img in enumerate(images.permute(0, 2, 3, 1).cpu().numpy()):
            img = np.ascontiguousarray(img)
            dets = self.detector(img, self.upsample)
            if len(dets) == 0:
                continue
            det = max(dets, key=lambda r: r.width() * r.height())   # the largest face is the subject
            shape = self.shape_predictor(img, det)
            out[i], found[i] = np.asarray(self.model.compute_face_descriptor(img, shape)), True
        return out, found


class ArcFaceEmbedder:
    name = 'arcface_ir_se50'

    def __init__(self, weights=None, device='cpu', detect: bool = True):
        from .arcface import load_arcface
        path = W.resolve_weights(W.ARCFACE_IRSE50, path=weights, download=False)
        self.net, self.device = load_arcface(path, device), device
        self.detector = _dlib().get_frontal_face_detector() if detect and importlib.util.find_spec('dlib') else None
        self.info = dict(identity_model=self.name, identity_model_sha256=W.file_sha256(path),
                         identity_face_check='dlib_hog' if self.detector is not None else 'none')

    @torch.no_grad()
    def embed(self, images: torch.Tensor):
        from .arcface import arcface_input
        emb = self.net(arcface_input(images).to(self.device)).cpu().double().numpy()
        found = np.ones(len(images), bool)
        if self.detector is not None:
            for i, img in enumerate(images.permute(0, 2, 3, 1).cpu().numpy()):
                found[i] = len(self.detector(np.ascontiguousarray(img), 1)) > 0
        emb[~found] = np.nan
        return emb, found


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


class IdentityAccumulator:
    """Collects per-pair similarities and the names of images without a detected face."""

    def __init__(self):
        self.sims, self.no_face_a, self.no_face_b = [], [], []

    def add(self, names, emb_a, found_a, emb_b, found_b):
        for k, name in enumerate(names):
            if not found_a[k]:
                self.no_face_a.append(name)
            if not found_b[k]:
                self.no_face_b.append(name)
            if found_a[k] and found_b[k]:
                self.sims.append(float(cosine(emb_a[k], emb_b[k])))

    def result(self, max_names: int = 50):
        n = len(self.sims)
        return dict(id_mean=float(np.mean(self.sims)) if n else None, id_std=float(np.std(self.sims)) if n else None,
                    id_num_scored=n, id_no_face_photo=len(self.no_face_a), id_no_face_stylized=len(self.no_face_b),
                    id_no_face_photo_files=self.no_face_a[:max_names],
                    id_no_face_stylized_files=self.no_face_b[:max_names])
