"""What the baseline commands share: image I/O with the reference projects' conventions, and their folder
runs (torch_utils.folder_run: inputs, output names, one failing photo reported while the others go on,
`manifest.json`)."""

import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from pstyle.projectors.image_io import load_image
from pstyle.stylize.pipeline import output_name
from pstyle.torch_utils.fileio import atomic_path, sha256_file
from pstyle.torch_utils.folder_run import FolderRun


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


def at_precision(net, dtype):
    """`net` run under autocast to `dtype` (bf16, fp16; from `models.render.compute_dtype`) with fp32 output, so
    that only the network passes change precision: inputs, statistics between passes and saved images stay fp32.
    dtype None: `net` itself (fp32)."""
    if dtype is None:
        return net

    def forward(x):
        with torch.autocast(x.device.type, dtype=dtype):
            return net(x).float()
    return forward


def write_png(path, arr):
    """uint8 [H,W,3] -> PNG, written atomically."""
    path = Path(path)
    with atomic_path(path) as tmp:
        Image.fromarray(np.asarray(arr, dtype=np.uint8)).save(tmp, format='PNG')
    return path


def file_info(path):
    """Provenance of an input or weight file for the manifest."""
    return dict(path=str(path), sha256=sha256_file(path)) if path is not None else None


def start_run(items, outdir, method, inputs, options, log=print, resume=False):
    """The folder run of one baseline command over `items` (`torch_utils.folder_run.plan` of a file, a folder
    or a list) with `<outdir>/manifest.json`; `inputs` and `options` (dicts, `options` completed later with
    the total seconds) go into the manifest. resume: keep the photos done there with the same inputs and options."""
    Path(outdir).mkdir(parents=True, exist_ok=True)
    key = dict(inputs=inputs, options={k: v for k, v in options.items() if k not in ('device', 'total_seconds')})
    run = FolderRun(items, Path(outdir) / 'manifest.json', method, header=lambda: header(method, inputs, options, run),
                    resume_key=key, resume=resume, log=log)
    return run


def style_output_name(stem, style_stem, num_outputs):
    """<stem>.png for one output per photo, <stem>-<style>.png for several."""
    return output_name(stem, style_stem, num_outputs) + '.png'


def run_photo(run, item, fn):
    """Call fn() -> [(file name, uint8 [H,W,3])], write the images beside the manifest, time it; a typed
    error (unreadable, too small, out of memory) is recorded as this photo's failure and the run goes on."""
    t0 = time.perf_counter()
    with run.isolate(item):
        paths = [write_png(run.root / name, arr) for name, arr in fn()]
        run.succeed(item, paths, seconds=time.perf_counter() - t0)


def header(method, inputs, options, run):
    """The baseline's fields of manifest.json: method, inputs (with sha256), options, seconds per photo."""
    done = [e for e in run.entries.values() if e['status'] == 'ok']
    return dict(method=method, inputs=inputs, options=options,
                seconds_per_photo=sum(e['seconds'] for e in done) / len(done) if done else None)
