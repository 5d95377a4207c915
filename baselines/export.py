"""ONNX export of a translator (a CycleGAN generator, published or trained here, or a distilled portrait
network): the whole of `cyclegan.translate` in one graph, so an ONNX runtime needs nothing else.

    input   float32 [N, 3, H, W] RGB in [0, 1]        (N, H and W dynamic: any batch and any size)
    output  float32 [N, 3, H, W] RGB in [-1, 1]       (the generator's Tanh; `tensor2im` maps it to uint8)

The graph pads H and W reflectively up to multiples of 4 and crops the output back, as `translate` does.
It is traced by torch's TorchScript-based exporter (`dynamo=False`), which needs only the `onnx` package
(torch 2.14's default dynamo exporter also needs `onnxscript`). The file's metadata records the checkpoint's
sha256 and, for a distilled network, its `net_G.pth.json` record.
"""

import json
import warnings
from pathlib import Path

import torch
from torch import nn

from pstyle.baselines.cyclegan import load_cyclegan, translate
from pstyle.torch_utils.fileio import atomic_path

OPSET = 17
_EXTRA = 'pip install "portrait-stylegan[onnx]" (onnx, onnxruntime)'


class PhotoTranslator(nn.Module):
    """`translate` as a module: [N,3,H,W] in [0,1] -> [N,3,H,W] in [-1,1] at any H, W."""

    def __init__(self, G):
        super().__init__()
        self.G = G

    def forward(self, x):
        H, W = x.shape[2], x.shape[3]
        ph, pw = (4 - H % 4) % 4, (4 - W % 4) % 4            # traced from the input's shape: stays dynamic
        y = nn.functional.pad(x * 2 - 1, (0, pw, 0, ph), mode='reflect')
        return self.G(y)[:, :, :H, :W]


def _require(module):
    try:
        return __import__(module)
    except ImportError:
        raise ImportError(f'ONNX export needs the {module} package: {_EXTRA}') from None


def export_onnx(checkpoint, out, size=256, check=True, seed=0):
    """Write `out` (.onnx) for a translator checkpoint (file, URL or short name); `size` is the traced example's
    side (the axes stay dynamic). check: run onnxruntime on a random [2, 3, size+3, size] input against torch.
    Returns {'onnx', 'checkpoint', 'max_abs_diff' (or None), 'inputs', 'outputs'}."""
    onnx = _require('onnx')
    out = Path(out)
    if out.suffix.lower() != '.onnx':
        raise ValueError(f'--onnx {out}: use a file name ending in .onnx')
    if size < 4:
        raise ValueError(f'size must be >= 4, got {size}')
    G, info = load_cyclegan(checkpoint)
    module = PhotoTranslator(G).eval()
    example = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(seed))
    axes = {0: 'batch', 2: 'height', 3: 'width'}
    with atomic_path(out) as tmp, warnings.catch_warnings():
        warnings.simplefilter('ignore')                       # the tracer's notes on shape arithmetic
        torch.onnx.export(module, (example,), str(tmp), dynamo=False, opset_version=OPSET, input_names=['input'],
                          output_names=['output'], dynamic_axes=dict(input=axes, output=axes))
        model = onnx.load(str(tmp))
        _set_metadata(model, info)
        onnx.checker.check_model(model)
        onnx.save(model, str(tmp))
    result = dict(onnx=str(out), checkpoint=info, inputs='input: float32 [N,3,H,W] in [0,1]',
                  outputs='output: float32 [N,3,H,W] in [-1,1]', max_abs_diff=None)
    if check:
        x = torch.rand(2, 3, size + 3, size, generator=torch.Generator().manual_seed(seed + 1))
        result['max_abs_diff'] = float((torch.from_numpy(run_onnx(out, x)) - translate(G, x)).abs().max())
    return result


def _set_metadata(model, info):
    sidecar = Path(info['path']).with_name(Path(info['path']).name + '.json')
    meta = dict(pstyle_checkpoint=Path(info['path']).name, pstyle_checkpoint_sha256=info['sha256'],
                pstyle_io='input [N,3,H,W] RGB in [0,1] -> output in [-1,1]')
    if sidecar.is_file():
        meta['pstyle_record'] = json.dumps(json.loads(sidecar.read_text()))
    for key, value in meta.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value


def onnx_session(path, threads=None):
    """An onnxruntime CPU session on `path` (intra-op threads: onnxruntime's default when None)."""
    ort = _require('onnxruntime')
    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), opts, providers=['CPUExecutionProvider'])


def run_onnx(session_or_path, x):
    """float [N,3,H,W] in [0,1] -> numpy [N,3,H,W] in [-1,1] through an onnxruntime session (or a file's)."""
    session = onnx_session(session_or_path) if isinstance(session_or_path, (str, Path)) else session_or_path
    return session.run(None, {'input': x.detach().float().cpu().numpy()})[0]
