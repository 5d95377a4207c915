"""File helpers shared by checkpoints, runs, caches and manifests: content hashes and atomic writes."""

import contextlib
import errno
import hashlib
import os
import tempfile
from pathlib import Path

import numpy as np


def sha256_file(path, chunk_size=1 << 20):
    """Hex sha256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(chunk_size), b''):
            digest.update(chunk)
    return digest.hexdigest()


def current_umask() -> int:
    """The process umask, read without changing it where Linux exposes it (os.umask can only swap)."""
    try:
        with open('/proc/self/status') as f:
            for line in f:
                if line.startswith('Umask:'):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)  # Not thread-safe for a moment; only where /proc is missing (macOS).
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path beside `path`; on success it replaces `path` in one rename.

    A crash or an exception leaves the old file untouched and no temporary file behind. The file gets
    the mode a plain open() would give it (0666 less the umask), not mkstemp's private 0600.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f'.{path.name}.', suffix='.tmp', dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~current_umask())  # After writing: some writers (safetensors) recreate the file.
        os.replace(tmp, path)
    except OSError as e:  # A failed write names no file, or the temporary one: name the file being written.
        if _unnamed_write_error(e) or str(e.filename) == tmp:
            raise OSError(e.errno, e.strerror or str(e), str(path)) from e
        raise
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def jsonable(value):
    """numpy/Path/tuple -> plain JSON types."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    return value


@contextlib.contextmanager
def naming(path):
    """OSErrors raised inside that name no file (write() on a full disk) get `path` as their file name."""
    try:
        yield
    except OSError as e:
        if _unnamed_write_error(e):
            raise OSError(e.errno, e.strerror or str(e), str(path)) from e
        raise


# What a failing write() or close() raises without a file name (a network error inside the same block is not one).
WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO, errno.EFBIG,
                errno.ENOTDIR, errno.EISDIR, errno.ENAMETOOLONG}


def _unnamed_write_error(e):
    return e.filename is None and e.errno in WRITE_ERRNOS


def describe_os_error(e):
    """'<file>: No space left on device (ENOSPC)': the one-line report of a failed read or write."""
    code = errno.errorcode.get(e.errno)
    where = f'{e.filename}: ' if e.filename is not None else ''
    return f'{where}{e.strerror or e}' + (f' ({code})' if code else '')


def atomic_write_json(path, obj, indent=1):
    """JSON through `atomic_path` (readers see the old file or the complete new one)."""
    import json
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=indent) + '\n', encoding='utf-8')
    return Path(path)


def atomic_torch_save(obj, path):
    """`torch.save` through `atomic_path`."""
    import torch
    with atomic_path(path) as tmp, open(tmp, 'wb') as f:
        torch.save(obj, f)  # Through a Python file: a full disk is an OSError, not torch's RuntimeError.
    return Path(path)
