"""Image sources for the metrics: folders, zip datasets and generator networks, all yielding uint8 [B,3,H,W].

Bad input fails early and names the file: an empty folder, a corrupt or undecodable image, a set with
mixed sizes, a 32-bit or float image. Grayscale, alpha, palette and 16-bit images are converted (gray
repeated to RGB as NVIDIA's metrics do, alpha dropped as PIL's convert('RGB') does in torch-fidelity,
pytorch-fid and clean-fid, 16 bits rounded to 8) with one warning per kind naming the first file; the
counts are stamped into the results.
"""

import collections
import concurrent.futures
import hashlib
import io
import os
import warnings
import zipfile
from pathlib import Path

import numpy as np
import torch
from pstyle.models.checkpoint import load_network
from pstyle.torch_utils.image_open import ImageTooLargeError, open_image
from pstyle.torch_utils.zip_open import MEMBER_ERRORS, open_zip
from pstyle.torch_utils import misc

IMAGE_EXTS = ('.png', '.jpg', '.jpeg', '.bmp', '.webp', '.tif', '.tiff', '.ppm', '.pgm')
NOTE_TEXT = {
    'grayscale': 'grayscale image; the channel is repeated to RGB',
    'alpha': 'image with an alpha channel; alpha is dropped',
    'palette': 'palette image; converted to RGB',
    '16bit': '16-bit image; rounded to 8 bits (v / 257)',
}


class InputError(ValueError):
    """Bad input data; the message names the file."""


def decode_image(fp, name: str):
    """Decode one image file (path or file object) -> (uint8 [H,W,3], note kind or None)."""
    try:
        img = open_image(fp, name)
        # 48-bit RGB PNGs decode to 8-bit RGB with raw mode 'RGB;16B'; the tile list is gone after load().
        wide = any(';16' in str(t[3]) for t in (img.tile or []) if len(t) > 3)
        img.load()
    except ImageTooLargeError as e:
        raise InputError(str(e)) from None
    except Exception as e:  # PIL raises many types for truncated or foreign files
        raise InputError(f'{name}: cannot decode image ({type(e).__name__}: {e})') from None
    mode = img.mode
    if mode == 'RGB':
        return np.asarray(img, dtype=np.uint8), ('16bit' if wide else None)
    if mode in ('I;16', 'I;16B', 'I;16L', 'I;16N'):
        arr = np.asarray(img).astype(np.float64)
        arr = np.round(arr / 257).clip(0, 255).astype(np.uint8)
        return np.repeat(arr[:, :, None], 3, axis=2), '16bit'
    if mode in ('L', '1'):
        return np.asarray(img.convert('RGB'), dtype=np.uint8), 'grayscale'
    if mode in ('LA', 'RGBA', 'RGBa', 'La'):
        note = 'alpha' if mode != 'LA' else 'grayscale'
        return np.asarray(img.convert('RGB'), dtype=np.uint8), note
    if mode in ('P', 'PA'):
        return np.asarray(img.convert('RGB'), dtype=np.uint8), 'palette'
    raise InputError(f'{name}: unsupported image mode {mode!r} (32-bit integer, float or {mode} images have no '
                     'defined 8-bit range); convert it to 8-bit RGB first')


class FileSource:
    """Common part of folder and zip sources: a sorted list of image names."""
    kind = 'files'

    def __init__(self, path, names):
        self.path = str(path)
        if not names:
            raise InputError(f'{path}: no images found (looked for {", ".join(IMAGE_EXTS)}, recursively)')
        self.names = names
        self.notes = collections.Counter()
        self.first_note_file = {}
        self._ref = None

    def __len__(self):
        return len(self.names)

    def describe(self):
        return dict(type=self.kind, path=self.path, num_items=len(self))

    def decode(self, i):
        raise NotImplementedError

    def reference_shape(self):
        """Shape of image 0: every image must match it (read once, on every rank)."""
        if self._ref is None:
            self._ref = self.decode(0)[0].shape
        return self._ref

    def record(self, i, arr, note):
        """Validate one decoded image in the main process; warn once per kind of conversion."""
        if arr.shape != self.reference_shape():
            h, w = arr.shape[:2]
            rh, rw = self.reference_shape()[:2]
            raise InputError(f'{self.names[i]}: size {w}x{h} differs from {self.names[0]} ({rw}x{rh}); all images '
                             f'of a set must have the same size (resize them first) in {self.path}')
        if note is not None:
            if note not in self.first_note_file:
                self.first_note_file[note] = self.names[i]
                warnings.warn(f'{os.path.join(self.path, self.names[i])}: {NOTE_TEXT[note]} '
                              '(further images of this kind are counted in the results, not reported)')
            self.notes[note] += 1

    def notes_summary(self):
        return {k: dict(count=v, first=self.first_note_file[k]) for k, v in sorted(self.notes.items())}


class FolderSource(FileSource):
    kind = 'folder'

    def __init__(self, path):
        root = Path(path)
        if not root.is_dir():
            raise InputError(f'{path}: not a folder')
        names = sorted(str(p.relative_to(root)).replace(os.sep, '/') for p in root.rglob('*')
                       if p.suffix.lower() in IMAGE_EXTS and p.is_file())
        super().__init__(path, names)

    def decode(self, i):
        return decode_image(os.path.join(self.path, self.names[i]), os.path.join(self.path, self.names[i]))

    def fingerprint(self) -> str:
        """Digest of every (name, size, sha256 of contents): any changed byte changes the cache key."""
        def one(name):
            p = os.path.join(self.path, name)
            with open(p, 'rb') as f:
                return f'{name}\t{os.path.getsize(p)}\t{hashlib.sha256(f.read()).hexdigest()}\n'
        with concurrent.futures.ThreadPoolExecutor(8) as pool:  # hashlib releases the GIL
            lines = list(pool.map(one, self.names))
        return hashlib.sha256(''.join(lines).encode()).hexdigest()


class ZipSource(FileSource):
    """An image zip (e.g. NVIDIA's dataset_tool output); non-image members such as dataset.json are ignored."""
    kind = 'zip'

    def __init__(self, path):
        if not zipfile.is_zipfile(path):
            raise InputError(f'{path}: not a zip file')
        with open_zip(path) as z:
            self._infos = {i.filename: i for i in z.infolist() if not i.is_dir()}
        names = sorted(n for n in self._infos if os.path.splitext(n)[1].lower() in IMAGE_EXTS)
        self._zip, self._zip_pid = None, None
        super().__init__(path, names)

    def _file(self):
        if self._zip is None or self._zip_pid != os.getpid():  # one handle per data-loader worker
            self._zip, self._zip_pid = open_zip(self.path), os.getpid()
        return self._zip

    def decode(self, i):
        try:
            data = self._file().read(self.names[i])
        except MEMBER_ERRORS as e:  # includes CRC mismatches and broken deflate streams
            raise InputError(f'{self.path}:{self.names[i]}: cannot read ({e})') from None
        return decode_image(io.BytesIO(data), f'{self.path}:{self.names[i]}')

    def fingerprint(self) -> str:
        # The central directory holds each member's CRC-32 and size: content-derived, no decompression needed.
        lines = [f'{n}\t{self._infos[n].file_size}\t{self._infos[n].CRC:08x}\n' for n in self.names]
        return hashlib.sha256(''.join(lines).encode()).hexdigest()

    def __getstate__(self):
        return {**self.__dict__, '_zip': None, '_zip_pid': None}


def open_images(path) -> FileSource:
    """A folder or a .zip of images."""
    if path is None:
        raise InputError('no image path given')
    if os.path.isdir(path):
        return FolderSource(path)
    if os.path.isfile(path) and zipfile.is_zipfile(path):
        return ZipSource(path)
    if not os.path.exists(path):
        raise InputError(f'{path}: no such file or folder')
    raise InputError(f'{path}: neither a folder nor a zip of images')


class _Decode(torch.utils.data.Dataset):
    """Decodes in data-loader workers and returns errors as values, so the main process names the file."""

    def __init__(self, source, indices):
        self.source, self.indices = source, list(indices)

    def __len__(self):
        return len(self.indices)

    def __getitem__(self, k):
        i = self.indices[k]
        try:
            arr, note = self.source.decode(i)
            return i, arr, note, None
        except InputError as e:
            return i, None, None, str(e)


def _collate(items):
    return items


def iter_file_batches(source: FileSource, indices, batch_size=64, num_workers=None):
    """Yield (indices, uint8 [B,3,H,W]) in index order, validating every image."""
    if num_workers is None:
        num_workers = min(4, max(0, (os.cpu_count() or 1) - 1))
    source.reference_shape()
    loader = torch.utils.data.DataLoader(_Decode(source, indices), batch_size=batch_size, shuffle=False,
                                         num_workers=num_workers, collate_fn=_collate)
    for items in loader:
        for i, arr, note, err in items:
            if err is not None:
                raise InputError(err)
            source.record(i, arr, note)
        batch = torch.from_numpy(np.stack([it[1] for it in items])).permute(0, 3, 1, 2)
        yield [it[0] for it in items], batch.contiguous()


def quantize(img: torch.Tensor) -> torch.Tensor:
    """Generator output [-1,1] -> uint8, exactly as NVIDIA's metrics do before the feature extractor."""
    return (img * 127.5 + 128).clamp(0, 255).to(torch.uint8)


def seed_latent(seed: int, z_dim: int, c_dim: int = 0, class_idx=None):
    """Seed k -> z = RandomState(k).randn(z_dim) (NVIDIA's scripts); a label drawn after z when c_dim > 0."""
    rs = np.random.RandomState(seed)
    z = rs.randn(z_dim)
    c = np.zeros(c_dim, dtype=np.float32)
    if c_dim:
        c[class_idx if class_idx is not None else rs.randint(c_dim)] = 1
    return z, c


class NetworkSource:
    """Images generated by G_ema for the given seeds; image k depends only on seed k (any batch size)."""
    kind = 'network'

    def __init__(self, network, seeds, truncation_psi=1.0, truncation_cutoff=None, class_idx=None,
                 noise_mode='const', device=None):
        self.network, self.seeds = network, [int(s) for s in seeds]
        if not self.seeds:
            raise InputError('no seeds to generate (num_gen must be at least 1)')
        self.truncation_psi, self.truncation_cutoff = float(truncation_psi), truncation_cutoff
        self.class_idx, self.noise_mode = class_idx, noise_mode
        self.device = torch.device(device or misc.default_device())
        self._G = None
        self.notes = collections.Counter()

    @property
    def G(self):
        if self._G is None:
            if isinstance(self.network, torch.nn.Module):
                G = self.network
            else:
                G = load_network(self.network, device='cpu')['G_ema']
            self._G = G.eval().requires_grad_(False).to(self.device)
            if self._G.c_dim and self.class_idx is not None and not 0 <= self.class_idx < self._G.c_dim:
                raise InputError(f'class_idx {self.class_idx} out of range for c_dim={self._G.c_dim}')
        return self._G

    def __len__(self):
        return len(self.seeds)

    def describe(self):
        net = self.network if isinstance(self.network, (str, os.PathLike)) else type(self.network).__name__
        return dict(type='network', network=str(net), seeds=[self.seeds[0], self.seeds[-1]], num_items=len(self),
                    truncation_psi=self.truncation_psi, truncation_cutoff=self.truncation_cutoff,
                    class_idx=self.class_idx, noise_mode=self.noise_mode)

    def fingerprint(self):
        return None  # generated sets are not cached

    def notes_summary(self):
        return {}

    @torch.no_grad()
    def generate(self, indices) -> torch.Tensor:
        G = self.G
        zc = [seed_latent(self.seeds[i], G.z_dim, G.c_dim, self.class_idx) for i in indices]
        z = torch.from_numpy(np.stack([a for a, _ in zc])).float().to(self.device)
        c = torch.from_numpy(np.stack([b for _, b in zc])).to(self.device)
        img = G(z, c, truncation_psi=self.truncation_psi, truncation_cutoff=self.truncation_cutoff,
                noise_mode=self.noise_mode)
        if img.shape[1] == 1:
            img = img.repeat(1, 3, 1, 1)
        assert img.ndim == 4 and img.shape[1] == 3, f'generator returned {list(img.shape)}'
        finite = torch.isfinite(img).flatten(1).all(1)
        if not bool(finite.all()):  # quantize() would turn NaN into black pixels, and the metric into a number.
            seed = self.seeds[indices[int((~finite).nonzero()[0])]]
            raise InputError(f'the generator produced non-finite values (NaN or Inf) for seed {seed} '
                             f'({int((~finite).sum())} of {len(finite)} images in the batch); no metric is computed on them')
        return quantize(img)


def iter_batches(source, indices, batch_size=64, num_workers=None):
    """Yield (indices, uint8 [B,3,H,W]) from any source."""
    if isinstance(source, NetworkSource):
        indices = list(indices)
        for s in range(0, len(indices), batch_size):
            idx = indices[s:s + batch_size]
            yield idx, source.generate(idx)
    else:
        yield from iter_file_batches(source, indices, batch_size, num_workers)


def pair_by_name(a: FileSource, b: FileSource):
    """Match two sets by file name without extension (photo.png <-> photo.jpg): (pairs, only_in_a, only_in_b)."""
    def stems(src):
        out = {}
        for i, n in enumerate(src.names):
            out.setdefault(os.path.splitext(n)[0], i)
        return out
    sa, sb = stems(a), stems(b)
    pairs = [(sa[k], sb[k]) for k in sorted(sa) if k in sb]
    return pairs, sorted(k for k in sa if k not in sb), sorted(k for k in sb if k not in sa)
