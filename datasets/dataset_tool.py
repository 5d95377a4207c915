"""Convert an image folder or zip into a training dataset, in the layout of NVIDIA's dataset_tool.

Output (zip or folder): `00000/img00000000.png`, `00000/img00000001.png`, ... (1000 images per
folder name prefix, as NVIDIA's stylegan2-ada-pytorch `dataset_tool.py` writes them) and
`dataset.json` = `{"labels": [["00000/img00000000.png", 3], ...] | null, "pstyle": {...}}`.
NVIDIA's loader reads only `labels`; the `pstyle` key records how the images were made (transform,
resize filter, resolution, source, skipped files), since the resize filter alone changes FID.

Channel policy (decided here, documented in the README): every output image has the same channel
count. `channels='auto'` writes a 1-channel dataset when every source image is grayscale (what
NVIDIA's tool does for such sources) and an RGB dataset otherwise, promoting grayscale images to
R=G=B. Alpha is composited over white. EXIF orientation is applied before any crop.
"""

import io
import json
import os
import shutil
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np
import PIL.Image
import PIL.ImageOps

from pstyle.torch_utils.image_open import open_image
from pstyle.torch_utils.zip_open import MEMBER_ERRORS, open_zip
from pstyle.projectors import align

# Extensions the converter reads; anything else in the source is counted and ignored.
IMAGE_EXTS = ('.png', '.jpg', '.jpeg', '.jfif', '.bmp', '.webp', '.tif', '.tiff', '.gif',
              '.ppm', '.pgm', '.pbm', '.pnm', '.tga', '.qoi')
TRANSFORMS = (None, 'center-crop', 'center-crop-wide', 'ffhq-align')
RESIZE_FILTERS = {'box': PIL.Image.Resampling.BOX, 'lanczos': PIL.Image.Resampling.LANCZOS}
GRAY_MODES = ('1', 'L', 'LA', 'La', 'I', 'I;16', 'I;16L', 'I;16B', 'I;16N', 'F')
# Errors PIL raises for unreadable or corrupt files (SyntaxError: some broken PNG/GIF headers).
_DECODE_ERRORS = (ValueError, SyntaxError, PIL.Image.DecompressionBombError, *MEMBER_ERRORS)


class _Skip(Exception):
    """An image that cannot go into the dataset; its message is the reason shown to the user."""


@dataclass
class ConversionReport:
    """What `convert_dataset` did: printed by the CLI and stored under `dataset.json['pstyle']`."""
    dest: str
    resolution: int
    channels: int
    num_written: int = 0
    skipped: list = field(default_factory=list)     # [(source name, reason)]
    num_ignored: int = 0                             # non-image files in the source
    num_gray_promoted: int = 0                       # grayscale images written as RGB
    duplicates: list = field(default_factory=list)  # [(zip member name, count)]: every copy is converted

    def summary(self) -> str:
        lines = [f'wrote {self.num_written} images ({self.resolution}x{self.resolution}, '
                 f'{self.channels} channel{"s" if self.channels > 1 else ""}) to {self.dest}']
        if self.num_gray_promoted:
            lines.append(f'{self.num_gray_promoted} grayscale images converted to RGB')
        if self.num_ignored:
            lines.append(f'ignored {self.num_ignored} non-image files')
        if self.duplicates:
            lines.append(f'{len(self.duplicates)} names occur more than once in the source zip (each copy converted):')
            lines += [f'  {name}: {count} members with this name in the zip' for name, count in self.duplicates]
        if self.skipped:
            lines.append(f'skipped {len(self.skipped)} images (listed in dataset.json, key pstyle.skipped):')
            lines += [f'  {name}: {reason}' for name, reason in self.skipped]
        return '\n'.join(lines)


def check_resolution(resolution: int) -> int:
    """A training resolution must be a square power of two (the networks halve it down to 4x4)."""
    if not isinstance(resolution, (int, np.integer)) or resolution < 4 or resolution & (resolution - 1):
        raise ValueError(f'resolution must be a power of two >= 4 (e.g. 256, 512, 1024); got {resolution}')
    return int(resolution)


def nvidia_image_name(idx: int) -> str:
    """NVIDIA's archive name for image `idx`: `00012/img00012345.png`."""
    s = f'{idx:08d}'
    return f'{s[:5]}/img{s}.png'

#----------------------------------------------------------------------------
# Sources: an image folder (searched recursively) or a zip.

class _Source:
    """Sorted image names (POSIX paths relative to the source root) and a way to open them."""

    def __init__(self, path):
        self.path = Path(path)
        if not self.path.exists():
            raise FileNotFoundError(f'source not found: {self.path}')
        self._zip, self._members, self.duplicates = None, {}, []
        if self.path.is_dir():
            names = [PurePosixPath(Path(root, f).relative_to(self.path)).as_posix()
                     for root, _dirs, files in os.walk(self.path) for f in files]
        elif zipfile.is_zipfile(self.path) or self.path.suffix.lower() == '.zip':
            self._zip = open_zip(self.path)
            names = self._index_members([i for i in self._zip.infolist() if not i.is_dir()])
        else:
            raise ValueError(f'source must be a folder or a .zip file: {self.path}')
        # Hidden files and macOS resource forks (__MACOSX/._x.jpg) are not images of the dataset.
        names = [n for n in names if not any(p.startswith('.') or p == '__MACOSX' for p in n.split('/'))]
        self.all_names = set(names)
        self.image_names = sorted(n for n in names if os.path.splitext(n)[1].lower() in IMAGE_EXTS)
        self.num_ignored = len([n for n in names if n != 'dataset.json']) - len(self.image_names)
        if not self.image_names:
            raise ValueError(f'no image files found in {self.path} (looked for {", ".join(IMAGE_EXTS)})')

    def _index_members(self, infos):
        """Names for every member; a repeated name gets `~2`, `~3`... before its extension (all are read)."""
        counts = {}
        for info in infos:
            counts[info.filename] = counts.get(info.filename, 0) + 1
            k = counts[info.filename]
            stem, ext = os.path.splitext(info.filename)
            self._members[info.filename if k == 1 else f'{stem}~{k}{ext}'] = info
        self.duplicates = sorted((n, c) for n, c in counts.items() if c > 1)
        return list(self._members)

    def open(self, name):
        return self._zip.open(self._members[name]) if self._zip is not None else open(self.path / name, 'rb')

    def read(self, name) -> bytes:
        """All bytes of one image; a zip member is read to its end, so a bad CRC-32 fails here."""
        with self.open(name) as f:
            return f.read()

    def close(self):
        if self._zip is not None:
            self._zip.close()

#----------------------------------------------------------------------------
# Destinations: an uncompressed zip (ZIP_STORED, as NVIDIA's tool) or a folder.

class _Dest:
    """Written under a temporary name beside `path` (`.NAME.PID.partial`) and renamed when complete, so a
    killed run never leaves a half-written dataset at `path`; the next run removes such leftovers."""

    def __init__(self, path):
        self.path = Path(path)
        self.is_zip = self.path.suffix.lower() == '.zip'
        if self.is_zip and self.path.exists():
            raise FileExistsError(f'destination already exists: {self.path} (delete it or choose another --dest)')
        if not self.is_zip and self.path.exists() and (not self.path.is_dir() or any(self.path.iterdir())):
            raise FileExistsError(f'destination folder must be empty or absent: {self.path}')
        self.path.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_partials(self.path)
        self.tmp = self.path.with_name(f'.{self.path.name}.{os.getpid()}.partial')
        if self.is_zip:
            self._zip = zipfile.ZipFile(self.tmp, 'w', compression=zipfile.ZIP_STORED)
        else:
            self.tmp.mkdir()

    def write(self, name, data: bytes):
        if self.is_zip:
            self._zip.writestr(name, data)
        else:
            (self.tmp / name).parent.mkdir(parents=True, exist_ok=True)
            (self.tmp / name).write_bytes(data)

    def close(self):
        """Finish and move the result into place."""
        if self.is_zip:
            self._zip.close()
        elif self.path.is_dir():
            self.path.rmdir()  # Empty (checked at the start); a folder cannot be renamed over it.
        os.replace(self.tmp, self.path)

    def abort(self):
        """Remove the half-written output; `path` was never touched."""
        if self.is_zip:
            self._zip.close()
            self.tmp.unlink(missing_ok=True)
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)


def _remove_stale_partials(path: Path):
    """Delete `.NAME.PID.partial` leftovers of runs that were killed (their process no longer exists)."""
    prefix = f'.{path.name}.'
    for p in path.parent.iterdir():
        pid = p.name[len(prefix):-len('.partial')] if p.name.startswith(prefix) and p.name.endswith('.partial') else ''
        if not pid.isdigit() or _process_alive(int(pid)):
            continue
        shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # Someone else's live process.
    return True

#----------------------------------------------------------------------------
# Image modes and transforms. Each transform maps a PIL image to a square `resolution` image.

def _is_gray(mode):
    return mode in GRAY_MODES


def _to_channels(img: PIL.Image.Image, channels: int) -> PIL.Image.Image:
    """Convert any PIL mode to 'L' (channels=1) or 'RGB' (channels=3)."""
    if img.mode.startswith('I') or img.mode == 'F':
        # 16/32-bit grayscale: PIL's own conversion to 'L' clips instead of rescaling.
        arr = np.asarray(img, dtype=np.float64)
        scale = 1 / 257 if arr.max(initial=0) > 255 else 1
        img = PIL.Image.fromarray(np.clip(np.rint(arr * scale), 0, 255).astype(np.uint8), 'L')
    has_alpha = img.mode in ('RGBA', 'LA', 'La', 'RGBa', 'PA') or 'transparency' in img.info
    if has_alpha:
        rgba = img.convert('RGBA')
        img = PIL.Image.alpha_composite(PIL.Image.new('RGBA', rgba.size, (255, 255, 255, 255)), rgba)
    return img.convert('L' if channels == 1 else 'RGB')


def _resize(img, resolution, resize_filter):
    if img.size == (resolution, resolution):
        return img
    return img.resize((resolution, resolution), RESIZE_FILTERS[resize_filter])


def _center_crop(img, resolution, resize_filter):
    w, h = img.size
    s = min(w, h)
    img = img.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))
    return _resize(img, resolution, resize_filter)


def _center_crop_wide(img, resolution, resize_filter):
    """NVIDIA's wide crop (LSUN cars): a centered 2:1 region, resized to R x R/2, pasted centered
    on a black square canvas. Unlike NVIDIA's tool, small images are upscaled rather than dropped."""
    w, h = img.size
    cw, ch = min(w, 2 * h), min(h, w // 2)
    if ch == 0:
        raise _Skip(f'image is {w}x{h}: too narrow for a 2:1 crop')
    img = img.crop(((w - cw) // 2, (h - ch) // 2, (w - cw) // 2 + cw, (h - ch) // 2 + ch))
    img = img.resize((resolution, resolution // 2), RESIZE_FILTERS[resize_filter])
    canvas = PIL.Image.new(img.mode, (resolution, resolution), 0)
    canvas.paste(img, (0, (resolution - resolution // 2) // 2))
    return canvas


def _no_transform(img, resolution, resize_filter):
    if img.size[0] != img.size[1]:
        raise _Skip(f'image is {img.size[0]}x{img.size[1]}, not square')  # caught early by _prescan
    return _resize(img, resolution, resize_filter)


def _load_aligner():
    """The FFHQ aligner (projectors.align) needs dlib: check for dlib and the landmark model before anything
    is scanned or written."""
    try:
        import dlib  # noqa: F401
    except ImportError as e:
        raise ImportError('--transform ffhq-align needs dlib: pip install "portrait-stylegan[align]" '
                          '(dlib-bin and face-recognition-models)') from e
    try:
        align.find_landmarks_model()
    except RuntimeError as e:  # align.AlignDependencyError: the 68-point model is missing
        raise ImportError(f'--transform ffhq-align: {e}') from e
    return align


def _make_ffhq_align():
    align = _load_aligner()

    def transform(img, resolution, resize_filter):
        # Align at FFHQ's own 1024 and resize with the chosen filter: NVIDIA's recipe for FFHQ at
        # 256/512 (dataset_tool on the 1024 images), so the resize filter matters here too.
        try:
            faces = align.align_face(img, size=max(resolution, 1024))
        except align.NoFaceError as e:
            raise _Skip('no face detected') from e
        return _resize(faces[0].image.convert(img.mode), resolution, resize_filter)
    return transform


def _get_transform(transform):
    if transform == 'ffhq-align':
        return _make_ffhq_align()
    return {None: _no_transform, 'center-crop': _center_crop, 'center-crop-wide': _center_crop_wide}[transform]

#----------------------------------------------------------------------------
# Labels: NVIDIA's dataset.json, keyed by source-relative names.

def _read_labels(source: _Source, labels_path):
    """{source name: label} or None. Read from `labels_path`, else from `dataset.json` in the source."""
    if labels_path is not None:
        with open(labels_path, 'rb') as f:
            data, where = f.read(), str(labels_path)
    elif 'dataset.json' in source.all_names:
        with source.open('dataset.json') as f:
            data, where = f.read(), f'{source.path}/dataset.json'
    else:
        return None
    try:
        labels = json.loads(data)['labels']
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f'{where}: expected {{"labels": [["name.png", label], ...]}} or {{"labels": null}} ({e})') from e
    if labels is None:
        return None
    try:
        labels = {str(name).replace('\\', '/'): label for name, label in labels}
    except (TypeError, ValueError) as e:
        raise ValueError(f'{where}: "labels" must be a list of [name, label] pairs') from e
    _check_label_values(list(labels.values()), where)
    return labels


def _check_label_values(values, where):
    """NVIDIA's loader accepts int class labels or equal-length float vectors, not a mix."""
    if all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in values):
        return
    lens = {len(v) if isinstance(v, list) and all(isinstance(x, (int, float)) for x in v) else -1 for v in values}
    if -1 in lens or len(lens) > 1:
        raise ValueError(f'{where}: labels must all be non-negative ints (class ids) or all be '
                         'number lists of the same length')

#----------------------------------------------------------------------------

def _prescan(source: _Source, transform, resolution, min_size=None):
    """Read headers only: decide the channel count and the output resolution, and catch
    whole-dataset errors before anything is written. Returns ({name: reason}, gray flags, resolution).

    Images whose shorter side is under `min_size` (default: a quarter of the resolution) are marked bad."""
    bad, gray, sizes = {}, {}, {}
    for name in source.image_names:
        try:
            with source.open(name) as f, open_image(f, name) as img:
                gray[name] = _is_gray(img.mode)
                w, h = img.size
                sizes[name] = (h, w) if _has_rotation(img) else (w, h)
        except _DECODE_ERRORS as e:
            bad[name] = _reason(e)
    if transform is None and sizes:
        non_square = [f'{n} ({w}x{h})' for n, (w, h) in sizes.items() if w != h]
        if non_square:
            raise ValueError(f'{len(non_square)} source images are not square, e.g. {non_square[0]}; '
                             'use --transform center-crop (or center-crop-wide / ffhq-align)')
        if resolution is None:
            found = sorted({w for w, _ in sizes.values()})
            if len(found) > 1:
                raise ValueError(f'source images have different sizes ({", ".join(map(str, found[:5]))}); '
                                 'pass --resolution to resize them')
            resolution = found[0]
    if resolution is None:
        raise ValueError(f'--resolution is required with --transform {transform}')
    if not sizes:
        raise ValueError(f'none of the {len(source.image_names)} image files in {source.path} could be read')
    min_size = resolution // 4 if min_size is None else min_size
    for name, (w, h) in sizes.items():
        if min(w, h) < min_size:  # Upscaled more than 4x (by default) it would only be a blur.
            bad[name] = f'too small: {w}x{h}, shorter side under --min-size {min_size}'
    return bad, gray, check_resolution(resolution)


def _has_rotation(img):
    try:
        return img.getexif().get(0x0112, 1) in (5, 6, 7, 8)  # EXIF orientations that swap W and H
    except _DECODE_ERRORS:
        return False


def _reason(e: BaseException) -> str:
    return f'{type(e).__name__}: {e}' if not isinstance(e, _Skip) else str(e)


def _encode_png(img: PIL.Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format='png', compress_level=0, optimize=False)  # fast to decode, as NVIDIA's tool
    return buf.getvalue()


def convert_dataset(source, dest, transform=None, resolution=None, resize_filter='lanczos',
                    max_images=None, labels=None, channels='auto', log=print, progress=False,
                    min_size=None) -> ConversionReport:
    """Convert `source` (image folder or zip) to `dest` (`.zip` or folder) in NVIDIA's layout.

    transform: None (square sources only), 'center-crop', 'center-crop-wide' or 'ffhq-align'.
    resolution: output size (power of two); None keeps the size of square, equally sized sources.
    labels: a NVIDIA-style dataset.json for the source (default: `dataset.json` inside the source).
    channels: 'auto', 1 or 3 (see the module docstring). Corrupt images are skipped and reported.
    min_size: images whose shorter side is smaller are skipped and reported (default: resolution // 4; 0 keeps all).
    The output is written under a temporary name beside `dest` and renamed when complete.
    """
    if transform not in TRANSFORMS:
        raise ValueError(f'unknown transform {transform!r}; choose one of center-crop, center-crop-wide, ffhq-align')
    if resize_filter not in RESIZE_FILTERS:
        raise ValueError(f'unknown resize filter {resize_filter!r}; choose box or lanczos')
    if channels not in ('auto', 1, 3, '1', '3'):
        raise ValueError(f'channels must be auto, 1 or 3; got {channels!r}')
    if min_size is not None and min_size < 0:
        raise ValueError(f'--min-size must be >= 0; got {min_size}')
    if max_images is not None and max_images < 1:
        raise ValueError(f'--max-images must be >= 1; got {max_images}')
    if resolution is not None:
        check_resolution(resolution)
    if transform == 'ffhq-align':
        _load_aligner()  # fail on a missing dlib before scanning anything
    src = _Source(source)
    try:
        return _convert(src, dest, transform, resolution, resize_filter, max_images, labels, channels, log, progress,
                        min_size)
    finally:
        src.close()


def _convert(src, dest, transform, resolution, resize_filter, max_images, labels_path, channels, log, progress,
             min_size=None):
    src_labels = _read_labels(src, labels_path)
    bad, gray, resolution = _prescan(src, transform, resolution, min_size)
    if src_labels is not None:
        missing = [n for n in src.image_names if n not in src_labels and n not in bad]
        if missing:
            raise ValueError(f'the labels file has no label for {len(missing)} images, e.g. {", ".join(missing[:3])}')
    if channels == 'auto':
        channels = 1 if all(gray.values()) else 3
        if channels == 1:
            log('all source images are grayscale: writing a 1-channel dataset (--channels 3 for RGB)')
    channels = int(channels)
    fn = _get_transform(transform)
    report = ConversionReport(dest=str(dest), resolution=resolution, channels=channels, num_ignored=src.num_ignored,
                              duplicates=src.duplicates)
    out = _Dest(dest)
    out_labels = []
    names = src.image_names
    if progress:
        import tqdm
        names = tqdm.tqdm(names, unit='img')
    try:
        for name in names:
            if max_images is not None and report.num_written >= max_images:
                break
            if name in bad:
                report.skipped.append((name, bad[name]))
                continue
            try:
                img = _load_one(src, name, fn, resolution, resize_filter, channels)
            except (_Skip, *_DECODE_ERRORS) as e:
                report.skipped.append((name, _reason(e)))
                continue
            report.num_gray_promoted += int(channels == 3 and gray[name])
            out_name = nvidia_image_name(report.num_written)
            out.write(out_name, _encode_png(img))
            if src_labels is not None:
                out_labels.append([out_name, src_labels[name]])
            report.num_written += 1
        if report.num_written == 0:
            raise ValueError(f'no image of {src.path} could be converted:\n{report.summary()}')
        out.write('dataset.json', json.dumps(_metadata(src, report, transform, resize_filter,
                                                      out_labels if src_labels is not None else None), indent=1).encode())
    except BaseException:
        out.abort()
        raise
    out.close()
    log(report.summary())
    return report


def _load_one(src, name, fn, resolution, resize_filter, channels):
    with open_image(io.BytesIO(src.read(name)), name) as img:
        img.load()  # decode now, so a truncated file fails here with its own error
        img = PIL.ImageOps.exif_transpose(img)
        img = fn(_to_channels(img, channels), resolution, resize_filter)
    assert img.size == (resolution, resolution) and img.mode == ('L' if channels == 1 else 'RGB')
    return img


def _metadata(src, report, transform, resize_filter, labels):
    return {
        'labels': labels,
        'pstyle': {
            'version': 1,
            'source': str(src.path.resolve()),
            'transform': transform,
            'resize_filter': resize_filter,
            'resolution': report.resolution,
            'channels': report.channels,
            'num_images': report.num_written,
            'exif_transpose': True,
            'alpha': 'composited over white',
            'skipped': [{'file': n, 'reason': r} for n, r in report.skipped],
            'duplicates': [{'file': n, 'count': c} for n, c in report.duplicates],
        },
    }
