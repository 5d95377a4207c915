"""What the baseline commands share: image I/O with the reference projects' conventions, and folder runs
(inputs, output names, one failing photo reported while the others go on, `manifest.json`)."""

import dataclasses
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from pstyle.projectors.image_io import ImageLoadError, load_image
from pstyle.stylize.files import jsonable, write_json
from pstyle.stylize.pipeline import list_photos, output_name, unique_stems
from pstyle.torch_utils.fileio import atomic_path, sha256_file

MANIFEST_FORMAT = 'pstyle-baseline-run'
MANIFEST_VERSION = 1

# Errors that belong to one photo (unreadable, too small, ...): recorded, and the run goes on. Anything else
# (out of memory, a bug) stops the run with its traceback.
PHOTO_ERRORS = (ImageLoadError, ValueError)


def read_image(path, size=0, resample=Image.BILINEAR) -> Image.Image:
    """An upright 8-bit RGB image; size > 0 resizes its shorter side to `size` (see `resize_shorter`)."""
    img = load_image(path)
    return resize_shorter(img, size, resample) if size else img


def resize_shorter(img: Image.Image, size, resample=Image.BILINEAR) -> Image.Image:
    """torchvision's `Resize(size)` with an int on a PIL image: the shorter side becomes `size`, the longer
    one int(size * long / short) (truncated), resampled by PIL; an image already that size is unchanged."""
    w, h = img.size
    short, long = min(w, h), max(w, h)
    new_short, new_long = size, int(size * long / short)
    new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
    if (new_w, new_h) == (w, h):
        return img
    return img.resize((new_w, new_h), resample)


def to_tensor(img, device='cpu') -> torch.Tensor:
    """PIL image or uint8 [H,W,3] -> float32 [1,3,H,W] in [0,1] (torchvision's ToTensor)."""
    arr = np.asarray(img, dtype=np.uint8)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1)[None].to(device=device, dtype=torch.float32) / 255


def save_image_uint8(x) -> np.ndarray:
    """float [N,3,H,W] in [0,1] -> uint8 [N,H,W,3] the way torchvision.utils.save_image quantises
    (x255, +0.5, clamp, truncate: i.e. rounding)."""
    return x.detach().float().mul(255).add(0.5).clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def write_png(path, arr):
    """uint8 [H,W,3] -> PNG, written atomically."""
    path = Path(path)
    with atomic_path(path) as tmp:
        Image.fromarray(np.asarray(arr, dtype=np.uint8)).save(tmp, format='PNG')
    return path


def file_info(path):
    """Provenance of an input or weight file for the manifest."""
    return dict(path=str(path), sha256=sha256_file(path)) if path is not None else None


@dataclasses.dataclass
class PhotoEntry:
    photo: str
    stem: str
    status: str = 'pending'           # pending -> done | failed
    outputs: list = dataclasses.field(default_factory=list)
    seconds: float = 0.0
    error: str = None

    def fail(self, exc):
        self.status, self.error = 'failed', f'{type(exc).__name__}: {exc}'


def photo_entries(inputs):
    """One entry per photo: a file, or every image directly inside a folder (sorted); unique stems."""
    paths = list_photos(inputs)
    return [PhotoEntry(str(p), s) for p, s in zip(paths, unique_stems(paths))]


def style_output_name(stem, style_stem, num_outputs):
    """<stem>.png for one output per photo, <stem>-<style>.png for several; safe file names."""
    return output_name(stem, style_stem, num_outputs) + '.png'


def run_photo(entry, outdir, fn, log=print):
    """Call fn() -> [(file name, uint8 [H,W,3])], write the images under `outdir`, time it and record a
    per-photo failure (PHOTO_ERRORS) in `entry` instead of stopping the run."""
    t0 = time.perf_counter()
    try:
        for name, arr in fn():
            write_png(Path(outdir) / name, arr)
            entry.outputs.append(name)
        entry.status = 'done'
    except PHOTO_ERRORS as e:
        entry.fail(e)
    entry.seconds = time.perf_counter() - t0
    log(f'{entry.photo}: {entry.status}' + (f' ({entry.error})' if entry.error else ''))
    return entry


def write_manifest(outdir, method, inputs, options, entries):
    """`<outdir>/manifest.json`: inputs, options, outputs and seconds per photo, failures; returns it."""
    done = [e for e in entries if e.status == 'done']
    manifest = dict(
        format=MANIFEST_FORMAT, version=MANIFEST_VERSION, method=method, inputs=inputs, options=options,
        photos=[dataclasses.asdict(e) for e in entries],
        failures=[dict(photo=e.photo, error=e.error) for e in entries if e.status == 'failed'],
        num_done=len(done), num_failed=len(entries) - len(done),
        seconds_per_photo=sum(e.seconds for e in done) / len(done) if done else None)
    manifest = jsonable(manifest)
    write_json(Path(outdir) / 'manifest.json', manifest)
    return manifest
