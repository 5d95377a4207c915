"""FFHQ face alignment and paste-back.

The crop follows the procedure NVIDIA used to build FFHQ (Karras et al., "A Style-Based Generator
Architecture for Generative Adversarial Networks", CVPR 2019; ffhq-dataset
`download_ffhq.py:recreate_aligned_images`): an oriented square from 68 dlib landmarks, an optional
shrink, a crop, reflect padding with a blurred/median blend, and a 4x supersampled quad warp.
Every aligned face carries a JSON-serializable `transform` record that maps the square back into the
photo, which `paste_back` uses to put an edited (stylized) face back into the original photo.

Coordinates: landmarks are dlib pixel indices (pixel (i, j) has its centre at (i, j)); `quad` and
the mapping helpers use continuous coordinates (pixel (i, j) covers [i, i+1] x [j, j+1]), Pillow's
convention for `Image.transform`. The two differ by 0.5, exactly the `quad + 0.5` of NVIDIA's script.
"""

import dataclasses
import functools
import importlib.util
import json
import os
from pathlib import Path

import numpy as np
import scipy.ndimage
from PIL import Image
from pstyle.metrics.weights import (
    DLIB_LANDMARKS_5,
    DLIB_LANDMARKS_68,
    WeightsHashError,
    trusted_path,
)
from pstyle.projectors.image_io import load_image, to_rgb
from pstyle.torch_utils.errors import InputError, PstyleError
from pstyle.torch_utils.folder_run import FolderRun, Item, list_inputs, unique_names

LANDMARKS_FILE = 'shape_predictor_68_face_landmarks.dat'
LANDMARKS_ENV = 'PSTYLE_DLIB_LANDMARKS'
INSTALL_HINT = "pip install 'portrait-stylegan[align]' (installs dlib-bin and face-recognition-models)"
TRANSFORM_FORMAT = 'pstyle-ffhq-align'
TRANSFORM_VERSION = 1
RUN_MANIFEST = 'manifest'  # <outdir>/manifest.json of a folder run: never an aligned photo's name
MAX_FACES = 100           # all_faces writes at most <name>_00 ... <name>_99
SUPERSAMPLE = 4  # transform_size = 4 * output_size, as FFHQ (4096 -> 1024)

_LANCZOS = Image.Resampling.LANCZOS  # Pillow 10 removed Image.ANTIALIAS, which was this filter


class AlignError(PstyleError, RuntimeError):
    """Base class of alignment errors."""


class NoFaceError(AlignError, InputError):
    """No face was detected in an image; the message names the file."""

    def __init__(self, name):
        self.name = str(name)
        super().__init__(f'{self.name}: no face found (dlib frontal face detector)')


class AlignDependencyError(AlignError):
    """dlib or the 68-point landmark model is missing or unusable."""


@dataclasses.dataclass
class AlignedFace:
    image: Image.Image      # RGB, output_size x output_size
    quad: np.ndarray        # [4, 2] corners TL, BL, BR, TR of the square in photo coordinates (continuous)
    landmarks: np.ndarray   # [68, 2] dlib landmarks in photo pixel coordinates
    transform: dict         # JSON-serializable record; see `_transform_record`


# ----------------------------------------------------------------------------------------------
# dlib and the landmark model.

def _import_dlib():
    try:
        import dlib  # noqa: PLC0415 -- optional dependency, imported only when alignment runs
    except ImportError as e:
        raise AlignDependencyError(f'FFHQ alignment needs dlib, which is not installed: {INSTALL_HINT}') from e
    return dlib


def find_landmarks_model(path=None) -> Path:
    """The 68-point model: `path`, else $PSTYLE_DLIB_LANDMARKS, else face-recognition-models' copy."""
    for candidate, origin in ((path, 'landmark model'), (os.environ.get(LANDMARKS_ENV), f'${LANDMARKS_ENV}')):
        if candidate:
            candidate = Path(candidate).expanduser()
            if not candidate.is_file():
                raise AlignDependencyError(f'{origin} {candidate} not found (expected {LANDMARKS_FILE})')
            return candidate
    # Locate the package without importing it: its __init__ imports pkg_resources, gone from new setuptools.
    spec = importlib.util.find_spec('face_recognition_models')
    if spec is not None and spec.submodule_search_locations:
        candidate = Path(list(spec.submodule_search_locations)[0]) / 'models' / LANDMARKS_FILE
        if candidate.is_file():
            return candidate
    raise AlignDependencyError(
        f'dlib landmark model {LANDMARKS_FILE} not found: {INSTALL_HINT}, '
        f'or pass --landmarks FILE / set ${LANDMARKS_ENV}')


@functools.lru_cache(maxsize=4)
def _load_predictor(path: str):
    dlib = _import_dlib()
    try:
        trusted_path(path, DLIB_LANDMARKS_68, DLIB_LANDMARKS_5)  # dlib parses it in C++: published files only.
    except WeightsHashError as e:
        raise AlignDependencyError(str(e)) from None
    try:
        return dlib.shape_predictor(path)  # ~100 MB; cached because a folder run reuses it per file
    except RuntimeError as e:
        raise AlignDependencyError(f'{path}: not a dlib shape predictor model ({e})') from e


@functools.lru_cache(maxsize=1)
def _load_detector():
    return _import_dlib().get_frontal_face_detector()


def _resolve_predictor(predictor):
    if predictor is None or isinstance(predictor, (str, os.PathLike)):
        return _load_predictor(str(find_landmarks_model(predictor)))
    return predictor


# ----------------------------------------------------------------------------------------------
# Detection and landmarks.

def detect_landmarks(image: Image.Image, detector=None, predictor=None, upsample=1, detect_max_side=None):
    """All faces in `image` -> list of (rect (l, t, r, b), landmarks float64 [68, 2]).

    detector(img uint8 [H, W, 3], upsample) -> dlib rectangles; predictor(img, rect) -> 68 parts.
    `detect_max_side` runs the detector on a copy downscaled to that longest side (faster on large
    photos); landmarks are always predicted at full resolution.
    """
    detector = _load_detector() if detector is None else detector
    predictor = _resolve_predictor(predictor)
    image = image.convert('RGB')
    full = np.asarray(image)  # [H, W, 3] uint8, what dlib expects
    small, scale = _detection_copy(image, detect_max_side)
    faces = []
    for rect in detector(small, upsample):
        if scale != 1.0:
            rect = _import_dlib().rectangle(*(int(round(v * scale)) for v in _rect_tuple(rect)))
        shape = predictor(full, rect)
        if shape.num_parts != 68:
            raise AlignDependencyError(
                f'the landmark model gave {shape.num_parts} points; FFHQ alignment needs {LANDMARKS_FILE}')
        landmarks = np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64)
        faces.append((_rect_tuple(rect), landmarks))
    return faces


def _detection_copy(image, max_side):
    """(uint8 array for the detector, factor from its coordinates back to the image's)."""
    if not max_side or max(image.size) <= max_side:
        return np.asarray(image), 1.0
    scale = max(image.size) / max_side
    small = image.resize((max(1, round(image.width / scale)), max(1, round(image.height / scale))), _LANCZOS)
    return np.asarray(small), scale


def _rect_tuple(rect):
    return (int(rect.left()), int(rect.top()), int(rect.right()), int(rect.bottom()))


# ----------------------------------------------------------------------------------------------
# The FFHQ geometry.

def _perp(v):
    """Rotate a 2-vector by +90 degrees in image coordinates (y down): (a, b) -> (-b, a)."""
    return np.array([-v[1], v[0]], dtype=np.float64)


def ffhq_quad(landmarks):
    """68 landmarks -> (quad [4, 2] TL, BL, BR, TR in landmark coordinates, qsize). FFHQ's oriented crop."""
    lm = np.asarray(landmarks, dtype=np.float64)
    assert lm.shape == (68, 2), lm.shape
    eye_left = lm[36:42].mean(axis=0)    # iBUG-68 points 36-41: the eye on the image's left
    eye_right = lm[42:48].mean(axis=0)   # points 42-47
    mouth_avg = (lm[48] + lm[54]) * 0.5  # outer mouth corners
    eye_avg = (eye_left + eye_right) * 0.5
    eye_to_eye = eye_right - eye_left
    eye_to_mouth = mouth_avg - eye_avg
    # recreate_aligned_images: x = eye_to_eye - flipud(eye_to_mouth) * [-1, 1], i.e. the eye line
    # averaged with the eye->mouth axis turned by -90 degrees, so both tilt cues set the roll.
    x = eye_to_eye - _perp(eye_to_mouth)
    x = x / np.hypot(*x)
    # Half side: the larger of 2x the eye distance and 1.8x the eye-mouth distance.
    x = x * max(np.hypot(*eye_to_eye) * 2.0, np.hypot(*eye_to_mouth) * 1.8)
    y = _perp(x)                          # flipud(x) * [-1, 1]
    c = eye_avg + eye_to_mouth * 0.1      # centre slightly below the eyes
    quad = np.stack([c - x - y, c - x + y, c + x + y, c + x - y])
    return quad, float(np.hypot(*x) * 2.0)


def _bbox(quad):
    return (int(np.floor(quad[:, 0].min())), int(np.floor(quad[:, 1].min())),
            int(np.ceil(quad[:, 0].max())), int(np.ceil(quad[:, 1].max())))


def _reflect_pad_blend(arr, pad, qsize):
    """Reflect-pad float32 [H, W, 3] by pad (l, t, r, b), then hide the mirror: blur and fade to the median.

    FFHQ: the band is blurred with sigma qsize*0.02 (fully in the pad, fading out a third of the pad
    inside the photo) and pulled towards the median colour as it nears the outer edge.
    """
    left, top, right, bottom = pad
    assert min(pad) >= 1, pad  # the mask divides by each pad width
    arr = np.pad(arr, ((top, bottom), (left, right), (0, 0)), mode='reflect')
    h, w = arr.shape[:2]
    cols = np.arange(w, dtype=np.float32)[None, :, None]
    rows = np.arange(h, dtype=np.float32)[:, None, None]
    # 1 on the outer edge, 0 at the pad's inner edge, negative inside the photo.
    ramp_x = 1.0 - np.minimum(cols / left, (w - 1 - cols) / right)
    ramp_y = 1.0 - np.minimum(rows / top, (h - 1 - rows) / bottom)
    mask = np.maximum(ramp_x, ramp_y)
    sigma = qsize * 0.02
    blurred = scipy.ndimage.gaussian_filter(arr, [sigma, sigma, 0])
    arr = arr + (blurred - arr) * np.clip(mask * 3.0 + 1.0, 0.0, 1.0)
    arr = arr + (np.median(arr, axis=(0, 1)) - arr) * np.clip(mask, 0.0, 1.0)
    return np.uint8(np.clip(np.rint(arr), 0, 255))


def _shrink(img, quad, qsize, size):
    """A face much larger than the output is first reduced by an integer factor (LANCZOS)."""
    shrink = int(np.floor(qsize / size * 0.5))
    if shrink <= 1:
        return img, quad, qsize, 1
    img = img.resize((int(np.rint(img.width / shrink)), int(np.rint(img.height / shrink))), _LANCZOS)
    return img, quad / shrink, qsize / shrink, shrink


def _crop(img, quad, border):
    """Crop to the quad's bounding box plus `border`, when that is smaller than the image."""
    l, t, r, b = _bbox(quad)
    crop = (max(l - border, 0), max(t - border, 0), min(r + border, img.width), min(b + border, img.height))
    if crop[2] - crop[0] < img.width or crop[3] - crop[1] < img.height:
        return img.crop(crop), quad - crop[0:2], crop
    return img, quad, (0, 0, img.width, img.height)


def _pad(img, quad, qsize, border, enable_padding):
    """Reflect-pad where the quad (plus border) leaves the image; FFHQ pads at least qsize * 0.3."""
    l, t, r, b = _bbox(quad)
    pad = (max(-l + border, 0), max(-t + border, 0), max(r - img.width + border, 0), max(b - img.height + border, 0))
    if not enable_padding or max(pad) <= border - 4:
        return img, quad, (0, 0, 0, 0)  # outside the photo the warp then fills black
    pad = tuple(int(p) for p in np.maximum(pad, max(int(np.rint(qsize * 0.3)), 1)))
    img = Image.fromarray(_reflect_pad_blend(np.float32(img), pad, qsize), 'RGB')
    return img, quad + pad[0:2], pad


def warp_ffhq(img: Image.Image, quad, qsize, size=1024, enable_padding=True):
    """Shrink, crop, pad and warp `img` so that `quad` fills a size x size square -> (image, steps)."""
    photo_size = img.size
    img, quad, qsize, shrink = _shrink(img, np.array(quad, dtype=np.float64), qsize, size)
    resized_size = img.size
    border = max(int(np.rint(qsize * 0.1)), 3)
    img, quad, crop = _crop(img, quad, border)
    img, quad, pad = _pad(img, quad, qsize, border, enable_padding)
    # Warp with 4x supersampling (bilinear QUAD = affine for this square), then reduce: FFHQ 4096 -> 1024.
    transform_size = size * SUPERSAMPLE
    img = img.transform((transform_size,) * 2, Image.Transform.QUAD, tuple((quad + 0.5).flatten()),
                        Image.Resampling.BILINEAR)
    img = img.resize((size, size), _LANCZOS)
    # The square's corners in the photo, continuous coordinates: undo pad, crop and shrink (whose
    # rounded image size makes the true scale photo_size / resized_size, not exactly `shrink`).
    scale = np.array(photo_size, np.float64) / np.array(resized_size, np.float64)
    photo_quad = (quad + 0.5 - np.array(pad[0:2]) + np.array(crop[0:2])) * scale
    steps = dict(photo_size=list(photo_size), shrink=shrink, resized_size=list(resized_size),
                 crop=list(crop), pad=list(pad), transform_size=transform_size, quad=photo_quad.tolist())
    return img, steps


def _transform_record(steps, source, size, quad, qsize, landmarks, rect, index, num_faces, enable_padding):
    """Everything needed to map the aligned square back into the photo, as plain JSON types."""
    return dict(format=TRANSFORM_FORMAT, version=TRANSFORM_VERSION, source=source, output_size=int(size),
                face_index=int(index), num_faces=int(num_faces), enable_padding=bool(enable_padding),
                ffhq_quad=np.asarray(quad).tolist(), qsize=float(qsize), rect=list(rect),
                landmarks=np.asarray(landmarks).tolist(), **steps)


# ----------------------------------------------------------------------------------------------
# Public alignment API.

def _as_image(image):
    """Path / PIL image / uint8 array -> (name for messages, upright RGB PIL image)."""
    if isinstance(image, (str, os.PathLike)):
        return os.fspath(image), load_image(image)
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (1, 3, 4)):
            raise ValueError(f'expected a uint8 [H, W] or [H, W, C] array (C = 1, 3, 4), got {image.dtype} {image.shape}')
        image = Image.fromarray(image[..., 0] if image.ndim == 3 and image.shape[2] == 1 else image)
    if not isinstance(image, Image.Image):
        raise TypeError(f'expected a path, a PIL image or a uint8 array, got {type(image).__name__}')
    return (getattr(image, 'filename', '') or '<image>'), to_rgb(image)


def align_face(image, size=1024, detector=None, predictor=None, all_faces=False, enable_padding=True,
               upsample=1, detect_max_side=None) -> list:
    """FFHQ-align the largest face (or every face, largest first) -> list of AlignedFace.

    image: path, PIL image or uint8 array. detector/predictor: dlib objects (None = the frontal
    detector and the 68-point model found by `find_landmarks_model`; predictor may be a model path).
    "Largest" is the largest FFHQ crop (qsize), which tracks the landmarks rather than the box.
    Raises NoFaceError (naming the file) when nothing is detected.
    """
    if int(size) != size or size < 8:
        raise ValueError(f'size must be an integer >= 8, got {size}')
    name, img = _as_image(image)
    faces = detect_landmarks(img, detector, predictor, upsample, detect_max_side)
    if not faces:
        raise NoFaceError(name)
    measured = [(ffhq_quad(lm), rect, lm) for rect, lm in faces]
    order = sorted(range(len(measured)), key=lambda i: -measured[i][0][1])
    result = []
    for rank, i in enumerate(order if all_faces else order[:1]):
        (quad, qsize), rect, lm = measured[i]
        aligned, steps = warp_ffhq(img, quad, qsize, int(size), enable_padding)
        record = _transform_record(steps, name, size, quad, qsize, lm, rect, rank, len(faces), enable_padding)
        result.append(AlignedFace(aligned, np.array(steps['quad']), lm, record))
    return result


def align_file(src, outdir, size=1024, all_faces=False, stem=None, **align_kwargs) -> list:
    """Align one file into `outdir` as <stem>.png + <stem>.json (<stem>_00.png ... <stem>_99.png with all_faces)."""
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    faces = align_face(src, size=size, all_faces=all_faces, **align_kwargs)[:MAX_FACES]  # largest first
    stem = stem or Path(src).stem
    outputs = []
    for face in faces:
        name = f'{stem}_{face.transform["face_index"]:02d}' if all_faces else stem
        face.transform['source'] = os.fspath(Path(src).resolve())
        if (outdir / f'{name}.png').resolve() == Path(src).resolve():
            raise ValueError(f'{src}: the aligned image would overwrite the input; choose another output folder')
        face.image.save(outdir / f'{name}.png')
        save_transform(outdir / f'{name}.json', face.transform)
        outputs.append(outdir / f'{name}.png')
    return outputs


def align_folder(src, dst, size=1024, all_faces=False, log=print, resume=False, **align_kwargs) -> dict:
    """Align a photo, the images directly inside a folder, or a list of both into `dst` as <name>.png +
    <name>.json; a file without a face (or unreadable) is recorded and the others go on.

    A folder run (torch_utils.folder_run): unique names, `dst/manifest.json` rewritten after every photo,
    `resume` skips the photos already aligned with the same settings. Returns the manifest (dict).
    A missing dlib or landmark model stops the whole run.
    """
    dst = Path(dst)
    for folder in ([src] if isinstance(src, (str, os.PathLike)) else list(src)):
        if Path(folder).is_dir() and dst.resolve() == Path(folder).resolve():
            raise ValueError(f'{dst}: the output folder must differ from the input folder')
    files = list_inputs(src)
    # With all_faces a photo `a` writes a_00, a_01, ...: those names are never given to another photo.
    faces = [f'{f.stem}_{k:02d}' for f in files for k in range(MAX_FACES)] if all_faces else []
    items = [Item(f, n) for f, n in zip(files, unique_names(files, reserved=(RUN_MANIFEST, *faces)))]
    settings = dict(size=size, all_faces=all_faces, **align_kwargs)
    run = FolderRun(items, dst / f'{RUN_MANIFEST}.json', 'align', header=lambda: dict(settings=settings),
                    resume_key=settings, resume=resume, log=log)
    for item in run.pending():
        with run.isolate(item):
            faces = align_file(item.source, dst, size, all_faces, stem=item.name, **align_kwargs)
            run.succeed(item, [p for face in faces for p in (face, face.with_suffix('.json'))], faces=len(faces))
    return run.save()


# ----------------------------------------------------------------------------------------------
# Transform records and coordinate mapping.

def save_transform(path, transform):
    Path(path).write_text(json.dumps(transform, indent=1) + '\n')


def load_transform(path) -> dict:
    """Read and check an alignment JSON written by `pstyle align`."""
    try:
        transform = json.loads(Path(path).read_text())
    except FileNotFoundError as e:
        raise InputError(f'{path}: alignment JSON not found') from e
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f'{path}: not a valid alignment JSON ({e})') from e
    check_transform(transform, name=path)
    return transform


def check_transform(transform, name='transform'):
    if not isinstance(transform, dict) or transform.get('format') != TRANSFORM_FORMAT:
        raise InputError(f'{name}: not an alignment record (expected "format": "{TRANSFORM_FORMAT}")')
    missing = [k for k in ('quad', 'photo_size', 'output_size') if k not in transform]
    if missing:
        raise InputError(f'{name}: alignment record lacks {", ".join(missing)}')
    if np.asarray(transform['quad']).shape != (4, 2):
        raise InputError(f'{name}: "quad" must be 4 corners [x, y]')


def homography(src, dst):
    """3x3 H with dst ~ H @ [src, 1] from 4 point pairs (direct linear solve, H[2, 2] = 1)."""
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    assert src.shape == dst.shape == (4, 2)
    rows, rhs = [], []
    for (x, y), (u, v) in zip(src, dst):
        rows += [[x, y, 1, 0, 0, 0, -u * x, -u * y], [0, 0, 0, x, y, 1, -v * x, -v * y]]
        rhs += [u, v]
    return np.append(np.linalg.solve(np.array(rows), np.array(rhs)), 1.0).reshape(3, 3)


def _apply_homography(H, points):
    points = np.asarray(points, np.float64).reshape(-1, 2)
    p = points @ H[:, :2].T + H[:, 2]
    return p[:, :2] / p[:, 2:]


def _square_corners(n):
    return np.array([[0, 0], [0, n], [n, n], [n, 0]], np.float64)  # TL, BL, BR, TR like the quad


def aligned_to_photo(points, transform):
    """[N, 2] continuous coordinates in the aligned image -> photo coordinates."""
    H = homography(_square_corners(transform['output_size']), transform['quad'])
    return _apply_homography(H, points)


def photo_to_aligned(points, transform):
    """[N, 2] continuous photo coordinates -> aligned-image coordinates."""
    H = homography(transform['quad'], _square_corners(transform['output_size']))
    return _apply_homography(H, points)


# ----------------------------------------------------------------------------------------------
# Paste-back.

PASTE_MASKS = ('square', 'circle')


def blend_mask(n, feather=0.1, shape='square') -> Image.Image:
    """n x n 'L' mask: 255 inside, ramping (smoothstep) to 0 over `feather` * n at the edge."""
    centres = (np.arange(n) + 0.5) / n  # pixel centres in (0, 1)
    u, v = centres[None, :], centres[:, None]
    if shape == 'square':
        dist = np.minimum(np.minimum(u, 1 - u), np.minimum(v, 1 - v))  # to the nearest side
    else:
        dist = 0.5 - np.hypot(u - 0.5, v - 0.5)  # inside the inscribed circle
    m = np.clip(dist / feather, 0.0, 1.0) if feather > 0 else (dist > 0).astype(np.float64)
    m = m * m * (3.0 - 2.0 * m)  # smoothstep: no visible kink where the ramp starts or ends
    return Image.fromarray(np.uint8(np.rint(m * 255.0)), 'L')


def _quad_for_photo(transform, photo_size):
    """The recorded quad, rescaled when the photo is a resized copy of the aligned one."""
    quad = np.array(transform['quad'], np.float64)
    (w0, h0), (w, h) = transform['photo_size'], photo_size
    if (w, h) == (w0, h0):
        return quad
    sx, sy = w / w0, h / h0
    if abs(sx - sy) > 0.01 * max(sx, sy):
        raise ValueError(f'the photo is {w}x{h} but the alignment was made on a {w0}x{h0} photo '
                         '(a different aspect ratio: is it the same photo?)')
    return quad * [sx, sy]


def paste_back(photo, face, transform, feather=0.1, mask='square', supersample=2) -> Image.Image:
    """Warp the square `face` back into `photo` where `transform` took it from; feathered blend.

    photo/face: paths, PIL images or uint8 arrays; the face may be any square size (e.g. a
    stylized 256 x 256). Pixels outside the face's footprint are returned unchanged.
    """
    check_transform(transform)
    if not 0.0 <= feather <= 0.5:
        raise ValueError(f'feather must be in [0, 0.5] (a fraction of the face size), got {feather}')
    if mask not in PASTE_MASKS:
        raise ValueError(f'mask must be one of {", ".join(PASTE_MASKS)}, got {mask!r}')
    photo, face = _as_image(photo)[1], _as_image(face)[1]
    if face.width != face.height:
        raise ValueError(f'the face image must be square, got {face.width}x{face.height}')
    quad = _quad_for_photo(transform, photo.size)
    l, t, r, b = _bbox(quad)
    box = (max(l, 0), max(t, 0), min(r, photo.width), min(b, photo.height))
    if box[2] <= box[0] or box[3] <= box[1]:
        return photo.copy()  # the square lies wholly outside the photo
    # Pre-shrink a large face to ~supersample x its footprint: the warp's bicubic filter does not
    # low-pass, so a 1024 face pasted into a 90-pixel footprint would alias.
    side = max(np.hypot(*(quad[3] - quad[0])), np.hypot(*(quad[1] - quad[0])))
    target = max(8, int(np.ceil(side * supersample)))
    if face.width > target:
        face = face.resize((target, target), _LANCZOS)
    rgba = face.convert('RGBA')
    rgba.putalpha(blend_mask(face.width, feather, mask))
    # Warp into the footprint's box, supersampled; Pillow premultiplies alpha for RGBA resampling.
    size = ((box[2] - box[0]) * supersample, (box[3] - box[1]) * supersample)
    H = homography((quad - box[0:2]) * supersample, _square_corners(face.width))  # canvas -> face
    warped = rgba.transform(size, Image.Transform.PERSPECTIVE, tuple(H.flatten()[:8]), Image.Resampling.BICUBIC)
    warped = warped.resize((box[2] - box[0], box[3] - box[1]), _LANCZOS)
    out = photo.copy()
    region = Image.alpha_composite(out.crop(box).convert('RGBA'), warped)
    out.paste(region.convert('RGB'), box[0:2])
    return out
