"""Opening zip archives of images (datasets, metric inputs) with one clear error for an unreadable archive.

`zipfile` reports a damaged archive with `BadZipFile`, which is neither an OSError nor a ValueError and
so reached users as a traceback; a damaged member (bad CRC-32, broken deflate stream) fails only when it
is read to the end. `MEMBER_ERRORS` are the exceptions reading one member can raise.
"""

import zipfile
import zlib

# Reading one member: bad CRC-32 or truncated data (BadZipFile), a broken deflate stream (zlib.error),
# a member cut short (EOFError), an unsupported compression method (NotImplementedError).
MEMBER_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, OSError)


class UnreadableArchiveError(ValueError):
    """The archive itself (central directory, end record) is damaged; the message names it."""


def open_zip(path) -> zipfile.ZipFile:
    """`zipfile.ZipFile(path)` for reading; a damaged or foreign file raises UnreadableArchiveError naming it."""
    try:
        return zipfile.ZipFile(path)
    except FileNotFoundError:
        raise
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError) as e:
        raise UnreadableArchiveError(
            f'{path}: unreadable zip archive ({type(e).__name__}: {e}); the file is truncated or its central '
            'directory is damaged. Re-copy or re-create it.') from None
