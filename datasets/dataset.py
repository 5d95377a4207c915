"""Training datasets: NVIDIA's `ImageFolderDataset` (stylegan2-ada-pytorch `training/dataset.py`).

Same class name, constructor and behaviour, so their `training_set_kwargs` and datasets work
unchanged: a folder or zip of images plus an optional `dataset.json` with labels, items are
(uint8 [C,H,W] numpy image, float32 label), `xflip` appends mirrored copies, `max_size` takes a
fixed-seed random subset. The zip is opened lazily in each process, so the dataset pickles into
DataLoader workers.
"""

import io
import json
import os

import numpy as np
import PIL.Image
import torch

from pstyle.torch_utils.image_open import open_image
from pstyle.torch_utils.zip_open import MEMBER_ERRORS, open_zip

try:
    import pyspng  # optional: ~2x faster PNG decoding than PIL
except ImportError:
    pyspng = None


class Dataset(torch.utils.data.Dataset):
    """Index bookkeeping shared by all datasets: subset, x-flip doubling, labels."""

    def __init__(self,
        name,                   # Name of the dataset.
        raw_shape,              # Shape of the raw image data [N, C, H, W].
        max_size    = None,     # Keep at most this many images, a random subset chosen by random_seed.
        use_labels  = False,    # Return labels from dataset.json (else empty [0] vectors).
        xflip       = False,    # Append a horizontally mirrored copy of every image (2x size).
        random_seed = 0,        # Seed of the max_size subset.
    ):
        self._name = name
        self._raw_shape = list(raw_shape)
        self._use_labels = use_labels
        self._raw_labels = None
        self._label_shape = None
        self._raw_idx = np.arange(self._raw_shape[0], dtype=np.int64)
        if max_size is not None and self._raw_idx.size > max_size:
            # Shuffle with a fixed seed then sort: the same subset every run, in file order.
            np.random.RandomState(random_seed).shuffle(self._raw_idx)
            self._raw_idx = np.sort(self._raw_idx[:max_size])
        self._xflip = np.zeros(self._raw_idx.size, dtype=np.uint8)
        if xflip:
            self._raw_idx = np.tile(self._raw_idx, 2)
            self._xflip = np.concatenate([self._xflip, np.ones_like(self._xflip)])

    def _get_raw_labels(self):
        if self._raw_labels is None:
            labels = self._load_raw_labels() if self._use_labels else None
            if labels is None:
                labels = np.zeros([self._raw_shape[0], 0], dtype=np.float32)
            assert isinstance(labels, np.ndarray) and labels.shape[0] == self._raw_shape[0]
            assert labels.dtype in (np.float32, np.int64)
            if labels.dtype == np.int64:
                assert labels.ndim == 1 and np.all(labels >= 0)
            self._raw_labels = labels
        return self._raw_labels

    def close(self):  # Release files held by subclasses.
        pass

    def _load_raw_image(self, raw_idx):  # -> uint8 [C, H, W]
        raise NotImplementedError

    def _load_raw_labels(self):  # -> None, int64 [N] or float32 [N, L]
        raise NotImplementedError

    def __getstate__(self):
        return dict(self.__dict__, _raw_labels=None)

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    def __len__(self):
        return self._raw_idx.size

    def __getitem__(self, idx):
        image = self._load_raw_image(self._raw_idx[idx])
        if list(image.shape) != self.image_shape or image.dtype != np.uint8:
            raise ValueError(f'{self._describe(self._raw_idx[idx])} is {image.dtype} {list(image.shape)}, '
                             f'expected uint8 {self.image_shape} like the first image '
                             '(re-create the dataset with `pstyle dataset`)')
        if self._xflip[idx]:
            image = image[:, :, ::-1]  # [CHW] mirror along W
        return image.copy(), self.get_label(idx)

    def _describe(self, raw_idx):
        return f'image {raw_idx}'

    def get_label(self, idx):
        label = self._get_raw_labels()[self._raw_idx[idx]]
        if label.dtype == np.int64:  # class id -> one-hot, as the conditional networks expect
            onehot = np.zeros(self.label_shape, dtype=np.float32)
            onehot[label] = 1
            label = onehot
        return label.copy()

    def get_details(self, idx):
        return dict(raw_idx=int(self._raw_idx[idx]), xflip=bool(self._xflip[idx]),
                    raw_label=self._get_raw_labels()[self._raw_idx[idx]].copy())

    @property
    def name(self):
        return self._name

    @property
    def image_shape(self):  # [C, H, W]
        return list(self._raw_shape[1:])

    @property
    def num_channels(self):
        return self.image_shape[0]

    @property
    def resolution(self):
        assert self.image_shape[1] == self.image_shape[2], 'non-square dataset'
        return self.image_shape[1]

    @property
    def label_shape(self):
        if self._label_shape is None:
            raw = self._get_raw_labels()
            self._label_shape = [int(raw.max()) + 1] if raw.dtype == np.int64 else list(raw.shape[1:])
        return list(self._label_shape)

    @property
    def label_dim(self):
        assert len(self.label_shape) == 1
        return self.label_shape[0]

    @property
    def has_labels(self):
        return any(x != 0 for x in self.label_shape)

    @property
    def has_onehot_labels(self):
        return self._get_raw_labels().dtype == np.int64


class ImageFolderDataset(Dataset):
    """Images from a folder (recursive) or a zip, with labels from its `dataset.json`."""

    def __init__(self,
        path,                   # Folder or zip of images (e.g. written by `pstyle dataset`).
        resolution  = None,     # Expected resolution; None = whatever the images are.
        **super_kwargs,         # max_size, use_labels, xflip, random_seed (see Dataset).
    ):
        self._path = os.fspath(os.path.expanduser(path))
        self._zipfile = None
        self._zipfile_pid = None
        if os.path.isdir(self._path):
            self._type = 'dir'
            self._all_fnames = {os.path.relpath(os.path.join(root, f), start=self._path)
                                for root, _dirs, files in os.walk(self._path) for f in files}
        elif os.path.splitext(self._path)[1].lower() == '.zip' and os.path.isfile(self._path):
            self._type = 'zip'
            self._all_fnames = set(self._get_zipfile().namelist())
        else:
            raise IOError(f'dataset path must be a folder or a .zip file: {self._path}')
        PIL.Image.init()
        self._image_fnames = sorted(f for f in self._all_fnames if self._file_ext(f) in PIL.Image.EXTENSION)
        if len(self._image_fnames) == 0:
            raise IOError(f'no image files found in {self._path}')
        name = os.path.splitext(os.path.basename(self._path.rstrip('/\\')))[0]
        raw_shape = [len(self._image_fnames)] + list(self._load_raw_image(0).shape)
        if resolution is not None and (raw_shape[2] != resolution or raw_shape[3] != resolution):
            raise IOError(f'images of {self._path} are {raw_shape[3]}x{raw_shape[2]}, '
                          f'not the requested resolution {resolution}x{resolution}')
        super().__init__(name=name, raw_shape=raw_shape, **super_kwargs)

    @staticmethod
    def _file_ext(fname):
        return os.path.splitext(fname)[1].lower()

    def _get_zipfile(self):
        assert self._type == 'zip'
        # One handle per process: a handle inherited through fork shares its file offset with the parent
        # and the other workers, and concurrent reads then interleave (BadZipFile at random).
        if self._zipfile is None or self._zipfile_pid != os.getpid():
            self._zipfile = open_zip(self._path)  # The inherited one is dropped, not closed: the parent owns it.
            self._zipfile_pid = os.getpid()
        return self._zipfile

    def _open_file(self, fname):
        if self._type == 'dir':
            return open(os.path.join(self._path, fname), 'rb')
        return self._get_zipfile().open(fname, 'r')

    def close(self):
        try:
            if self._zipfile is not None and self._zipfile_pid == os.getpid():
                self._zipfile.close()
        finally:
            self._zipfile = None

    def __getstate__(self):
        return dict(super().__getstate__(), _zipfile=None)

    def _describe(self, raw_idx):
        return f'{self._image_fnames[raw_idx]} in {self._path}'

    def _load_raw_image(self, raw_idx):
        fname = self._image_fnames[raw_idx]
        try:
            with self._open_file(fname) as f:
                data = f.read()  # Read to the end: a zip member's CRC-32 is checked here.
        except MEMBER_ERRORS as e:
            raise OSError(f'{self._describe(raw_idx)}: cannot read ({type(e).__name__}: {e})') from None
        with open_image(io.BytesIO(data), self._describe(raw_idx)) as img:  # Size checked before decoding.
            if pyspng is not None and self._file_ext(fname) == '.png':
                image = pyspng.load(data)
            else:
                image = np.array(img)
        if image.ndim == 2:
            image = image[:, :, np.newaxis]  # [HW] => [HWC]
        return image.transpose(2, 0, 1)  # [HWC] => [CHW]

    def _load_raw_labels(self):
        if 'dataset.json' not in self._all_fnames:
            return None
        with self._open_file('dataset.json') as f:
            labels = json.load(f).get('labels')
        if labels is None:
            return None
        labels = dict(labels)
        missing = [f for f in self._image_fnames if f.replace('\\', '/') not in labels]
        if missing:
            raise ValueError(f'dataset.json of {self._path} has no label for {len(missing)} images, e.g. {missing[0]}')
        labels = np.array([labels[f.replace('\\', '/')] for f in self._image_fnames])
        return labels.astype({1: np.int64, 2: np.float32}[labels.ndim])
