"""Cache of per-dataset features, keyed by the dataset's contents, the extractor's hash and the protocol.

Key = sha256 of {dataset fingerprint (every file's name, size and content hash), extractor name and
weights sha256, protocol, feature names, item count, cache format}. A changed image, a renamed file,
other weights or another protocol give another key, so stale features are never reused. Files are
written to a temporary name and renamed (atomic on POSIX), in `$PSTYLE_CACHE_DIR/metrics-stats`
(default `~/.cache/portrait-stylegan/metrics-stats`), never inside site-packages.
"""

import hashlib
import json
import os
import zipfile
from pathlib import Path

import numpy as np
from pstyle.torch_utils.fileio import atomic_path

CACHE_FORMAT = 1


def stats_dir() -> Path:
    root = os.environ.get('PSTYLE_CACHE_DIR') or os.path.join(os.path.expanduser('~'), '.cache', 'portrait-stylegan')
    return Path(root) / 'metrics-stats'


def cache_key(fingerprint: str, extractor_info: dict, features, num_items: int) -> str:
    desc = dict(fingerprint=fingerprint, extractor=extractor_info['extractor'],
                extractor_sha256=extractor_info['extractor_sha256'], protocol=extractor_info['protocol'],
                features=sorted(features), num_items=int(num_items), format=CACHE_FORMAT)
    return hashlib.sha256(json.dumps(desc, sort_keys=True).encode()).hexdigest()


def load(key: str):
    """Cached {feature name: array} or None (also None for an unreadable, e.g. truncated, file)."""
    path = stats_dir() / f'{key}.npz'
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile):
        return None


def save(key: str, arrays: dict) -> Path:
    folder = stats_dir()
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_path(folder / f'{key}.npz') as tmp, open(tmp, 'wb') as f:
        np.savez(f, **arrays)                         # readers see the old file or the complete new one
    return folder / f'{key}.npz'
