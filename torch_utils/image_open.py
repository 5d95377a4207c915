"""The one way this project opens an image file: the pixel count is checked from the header, before decoding.

A small file can declare a huge image (a 165 KB PNG of 12000x12000 pixels decodes to 430 MB and cost
alignment 63 s and 8.5 GB), so every reader (photos, datasets, metric inputs) opens files here. The limit
is `$PSTYLE_MAX_PIXELS` (default 8192 x 8192 = 67,108,864 pixels, above any camera photo of today's
phones); Pillow knows the size after reading the header only.
"""

import os
import warnings

import PIL.Image

MAX_PIXELS_ENV = 'PSTYLE_MAX_PIXELS'
DEFAULT_MAX_PIXELS = 8192 * 8192


class ImageTooLargeError(ValueError):
    """An image declares more pixels than the limit; it was not decoded."""


def max_pixels() -> int:
    """The pixel limit: $PSTYLE_MAX_PIXELS when set (a positive integer), else DEFAULT_MAX_PIXELS."""
    raw = os.environ.get(MAX_PIXELS_ENV, '').strip()
    if not raw:
        return DEFAULT_MAX_PIXELS
    try:
        value = int(raw.replace('_', ''))
    except ValueError:
        value = 0
    if value <= 0:
        raise ValueError(f'${MAX_PIXELS_ENV} must be a positive number of pixels, got {raw!r}')
    return value


def check_pixels(img: PIL.Image.Image, name) -> None:
    """Raise ImageTooLargeError when `img` (opened, not decoded) has more pixels than the limit."""
    w, h = img.size
    limit = max_pixels()
    if w * h > limit:
        raise ImageTooLargeError(
            f'{name}: {w}x{h} pixels ({w * h / 1e6:.1f} megapixels) is over the limit of {limit:,} pixels '
            f'({limit / 1e6:.1f} megapixels); refused before decoding. Set ${MAX_PIXELS_ENV} to allow larger images.')


def open_image(fp, name=None) -> PIL.Image.Image:
    """`PIL.Image.open(fp)` (a path or a binary file object), refused before decoding when too large.

    Use it as Pillow's: `with open_image(path) as img: img.load()`.
    """
    limit = max_pixels()
    if PIL.Image.MAX_IMAGE_PIXELS is not None and PIL.Image.MAX_IMAGE_PIXELS < limit:
        PIL.Image.MAX_IMAGE_PIXELS = limit  # Pillow's own bomb check (2x its limit) must not undercut ours.
    with warnings.catch_warnings():  # Pillow warns between 1x and 2x its limit; we refuse or accept below.
        warnings.simplefilter('ignore', PIL.Image.DecompressionBombWarning)
        img = PIL.Image.open(fp)
    try:
        check_pixels(img, name if name is not None else getattr(fp, 'name', fp))
    except ImageTooLargeError:
        img.close()
        raise
    return img
