"""Robust photo loading for alignment: any file Pillow opens becomes an upright 8-bit RGB image.

Decisions (documented in the README):
- EXIF orientation is applied (`ImageOps.exif_transpose`), so phone photos come out upright.
- Transparency (RGBA, LA, PA, palette with a transparent index) is composited onto white: the RGB
  under alpha = 0 is undefined (often black or garbage from cut-out tools), and a plain white
  backdrop is what the face detector and a portrait model see most naturally.
- 16-bit grey (`I;16*`) is scaled by 255/65535. Mode `I` (32-bit int, how older Pillow and some
  TIFFs hold 16-bit data) is treated as 16-bit when any value exceeds 255, else as 8-bit.
  Mode `F` is treated as [0, 1] when its maximum is <= 1, else as [0, 255], and clipped.
- An embedded ICC profile is converted to sRGB when Pillow has littlecms; CMYK without a profile
  uses Pillow's plain conversion.
"""

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError
from pstyle.torch_utils.errors import InputError
from pstyle.torch_utils.folder_run import IMAGE_EXTENSIONS, list_images  # noqa: F401 -- re-exported
from pstyle.torch_utils.image_open import ImageTooLargeError, open_image

_WHITE = (255, 255, 255)


class ImageLoadError(InputError):
    """A file that is missing, not an image, or corrupt."""


def load_image(path) -> Image.Image:
    """Open `path` and return it upright, 8-bit, RGB; raise ImageLoadError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise ImageLoadError(f'{path}: no such image file')
    try:
        with open_image(path) as img:
            img.load()  # decode now: a truncated file fails here, not later inside alignment
            return to_rgb(img)
    except ImageTooLargeError as e:
        raise ImageLoadError(str(e)) from None
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError, ValueError) as e:
        raise ImageLoadError(f'{path}: cannot read image ({type(e).__name__}: {e})') from e


def to_rgb(img: Image.Image) -> Image.Image:
    """Any Pillow image -> upright 8-bit RGB (see the module docstring for the rules)."""
    img = ImageOps.exif_transpose(img)
    img = _apply_icc(img)
    mode = img.mode
    if mode.startswith('I') or mode == 'F':
        return _high_depth_to_rgb(img)
    if mode == 'P':
        # A palette image may carry a transparent index (info['transparency']) or RGBA entries.
        mode = 'RGBA' if 'transparency' in img.info or img.palette.mode == 'RGBA' else 'RGB'
        img = img.convert(mode)
    if mode in ('RGBA', 'LA', 'PA', 'RGBa', 'La'):
        return _composite_on_white(img)
    return img.convert('RGB')  # RGB, L, 1, CMYK, YCbCr, LAB, HSV, RGBX


def _composite_on_white(img: Image.Image) -> Image.Image:
    rgba = img.convert('RGBA')
    background = Image.new('RGBA', rgba.size, _WHITE + (255,))
    return Image.alpha_composite(background, rgba).convert('RGB')


def _high_depth_to_rgb(img: Image.Image) -> Image.Image:
    """16-bit / 32-bit int / float grey -> 8-bit RGB with the documented scaling."""
    mode = img.mode
    arr = np.asarray(img, dtype=np.float64)
    if mode.startswith('I;16'):
        arr = arr * (255.0 / 65535.0)  # full 16-bit range onto full 8-bit range (x / 257)
    elif mode == 'I':
        arr = arr * (255.0 / 65535.0) if arr.max(initial=0) > 255 else arr
    elif mode == 'F':
        arr = arr * 255.0 if arr.max(initial=0) <= 1.0 else arr
    grey = np.clip(np.rint(arr), 0, 255).astype(np.uint8)
    return Image.fromarray(grey, 'L').convert('RGB')


def _apply_icc(img: Image.Image) -> Image.Image:
    """Convert an image with an embedded ICC profile to sRGB; leave it unchanged on any failure."""
    icc = img.info.get('icc_profile')
    if not icc or img.mode not in ('RGB', 'CMYK', 'L'):
        return img
    try:
        src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        dst = ImageCms.createProfile('sRGB')
        return ImageCms.profileToProfile(img, src, dst, outputMode='RGB')
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
        return img  # a broken profile must not make an otherwise good photo unreadable
