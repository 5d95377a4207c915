"""CycleGAN generators (Zhu et al. 2017) with the published weights of junyanz/pytorch-CycleGAN-and-pix2pix:
`ResnetGenerator` with `resnet_9blocks`, ngf 64, InstanceNorm without affine parameters, reflection
padding, transposed-convolution up-sampling and a Tanh. `nn.Sequential` indices below are the
checkpoint's key names (`model.1.weight` ... `model.26.bias`); parity with the original's outputs is
tested on tests/fixtures/baselines_ref.npz.

Sizes: the two stride-2 convolutions need a height and width divisible by 4 to come back to the same size,
so other sizes are padded reflectively up to the next multiple of 4 and the output is cropped back.
"""

import dataclasses
import re
import time

import numpy as np
import torch
from PIL import Image
from torch import nn

from pstyle.torch_utils.errors import InputError
from pstyle.torch_utils.folder_run import plan
from pstyle.baselines import runs
from pstyle.baselines.published import resolve_published
from pstyle.baselines.vgg import read_state_dict
from pstyle.metrics.weights import load_checked_state_dict
from pstyle.models.render import compute_dtype, pick_device

# Old checkpoints (PyTorch < 0.4 InstanceNorm) carry running statistics that the reference deletes
# (`__patch_instance_norm_state_dict`): inference normalises each image by its own statistics.
_STALE_NORM_KEYS = ('running_mean', 'running_var', 'num_batches_tracked')


class ResnetBlock(nn.Module):
    """x + [pad, conv3x3, IN, ReLU, pad, conv3x3, IN](x); `conv_block` indices 1 and 5 hold the weights."""

    def __init__(self, dim):
        super().__init__()
        self.conv_block = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3, padding=0, bias=True), nn.InstanceNorm2d(dim), nn.ReLU(True),
            nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3, padding=0, bias=True), nn.InstanceNorm2d(dim))

    def forward(self, x):
        return x + self.conv_block(x)


class ResnetGenerator(nn.Module):
    """RGB [N,3,H,W] in [-1,1] -> RGB in [-1,1]; H and W divisible by 4."""

    def __init__(self, input_nc=3, output_nc=3, ngf=64, n_blocks=9):
        super().__init__()
        layers = [nn.ReflectionPad2d(3), nn.Conv2d(input_nc, ngf, 7, padding=0, bias=True), nn.InstanceNorm2d(ngf), nn.ReLU(True)]
        for mult in (1, 2):                                     # two down-samplings: model.4, model.7
            layers += [nn.Conv2d(ngf * mult, ngf * mult * 2, 3, stride=2, padding=1, bias=True),
                       nn.InstanceNorm2d(ngf * mult * 2), nn.ReLU(True)]
        layers += [ResnetBlock(ngf * 4) for _ in range(n_blocks)]  # model.10 ... model.18
        for mult in (4, 2):                                     # two up-samplings: model.19, model.22
            layers += [nn.ConvTranspose2d(ngf * mult, ngf * mult // 2, 3, stride=2, padding=1, output_padding=1, bias=True),
                       nn.InstanceNorm2d(ngf * mult // 2), nn.ReLU(True)]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, output_nc, 7, padding=0), nn.Tanh()]
        self.model = nn.Sequential(*layers)

    def forward(self, x):
        return self.model(x)


def generator_tensors(state):
    """The checkpoint's tensors minus the stale InstanceNorm statistics of old versions."""
    return {k: v for k, v in state.items() if k.rsplit('.', 1)[-1] not in _STALE_NORM_KEYS}


def generator_config(state):
    """ResnetGenerator arguments of a state_dict, read from its tensor shapes: ngf and input_nc from `model.1`,
    n_blocks from the `model.<i>.conv_block` keys, output_nc from the last convolution. A state_dict without
    `model.1.weight` gives the published configuration (the key check then lists what is missing)."""
    first = state.get('model.1.weight')
    if first is None or first.ndim != 4:
        return dict(input_nc=3, output_nc=3, ngf=64, n_blocks=9)
    n_blocks = len({k.split('.')[1] for k in state if re.fullmatch(r'model\.\d+\.conv_block\.1\.weight', k)})
    last = state.get(f'model.{17 + n_blocks}.weight')          # pad 7x7 conv after the blocks and 2 up-samplings
    output_nc = int(last.shape[0]) if last is not None and last.ndim == 4 else 3
    return dict(input_nc=int(first.shape[1]), output_nc=output_nc, ngf=int(first.shape[0]), n_blocks=n_blocks)


def load_cyclegan(checkpoint, device='cpu', cache_dir=None):
    """(generator, provenance) for a `latest_net_G.pth`-style file, a URL or a short name (`style_monet`).
    Any ngf and number of blocks (read from the tensor shapes): `pstyle cyclegan-train` and `pstyle distill` files too."""
    path = resolve_published(checkpoint, cache_dir)
    state = generator_tensors(read_state_dict(path, 'CycleGAN ResnetGenerator'))
    config = generator_config(state)
    what = f'CycleGAN ResnetGenerator (ngf {config["ngf"]}, {config["n_blocks"]} blocks)'
    G = load_checked_state_dict(ResnetGenerator(**config), state, what, source=path)
    return G.eval().requires_grad_(False).to(device), runs.file_info(path)


def pad_to_multiple(x, multiple=4):
    """Reflect-pad [N,C,H,W] at the bottom/right up to multiples of `multiple`; returns (x, (H, W))."""
    H, W = x.shape[2:]
    ph, pw = -H % multiple, -W % multiple
    if ph or pw:
        x = nn.functional.pad(x, (0, pw, 0, ph), mode='reflect')
    return x, (H, W)


def translate(G, img, dtype=None):
    """float [N,3,H,W] in [0,1] -> float32 [N,3,H,W] in [-1,1] (the generator's output, any H and W); dtype
    (bf16, fp16): the generator pass runs under autocast, input and output stay fp32."""
    x, (H, W) = pad_to_multiple(img * 2 - 1)
    with torch.no_grad():
        return runs.at_precision(G, dtype)(x)[:, :, :H, :W]


def tensor2im(y) -> np.ndarray:
    """util.tensor2im: [N,3,H,W] in [-1,1] -> uint8 [N,H,W,3] as (y+1)/2*255, truncated (not rounded)."""
    arr = (y.detach().float().cpu().numpy().transpose(0, 2, 3, 1) + 1) / 2.0 * 255.0
    return arr.astype(np.uint8)


@dataclasses.dataclass
class CycleganOptions:
    size: int = 0            # resize the shorter side to this (bicubic, as the reference's loader); 0 keeps it
    precision: str = 'fp32'  # 'bf16' (CPU/GPU) or 'fp16' (CUDA): autocast of the generator pass
    device: str = None

    def check(self):
        if self.size < 0:
            raise ValueError(f'size must be >= 0 (0 keeps the input size), got {self.size}')
        return self


def translate_one(G, img: Image.Image, device, dtype=None):
    x = runs.to_tensor(img, device)
    if min(x.shape[2:]) < 4:
        raise InputError(f'image of {x.shape[3]}x{x.shape[2]} pixels is too small (CycleGAN needs >= 4)')
    return tensor2im(translate(G, x, dtype))[0]


def cyclegan_folder(checkpoint, inputs, outdir, opts=None, log=print, resume=False):
    """Translate a photo or every image in a folder; writes `<stem>.png` and manifest.json to `outdir`."""
    opts = (opts or CycleganOptions()).check()
    device = pick_device(opts.device)
    dtype = compute_dtype(opts.precision, device)                  # fp16 off CUDA is refused before any work
    items = plan(inputs)
    G, weights = load_cyclegan(checkpoint, device)
    options = dict(dataclasses.asdict(opts), device=str(device))
    run = runs.start_run(items, outdir, 'cyclegan', dict(input=str(inputs), checkpoint=weights), options, log, resume)

    def process(item):
        img = runs.read_image(item.source, opts.size, Image.BICUBIC)
        return [(f'{item.name}.png', translate_one(G, img, device, dtype))]

    t0 = time.perf_counter()
    for item in run.pending():
        runs.run_photo(run, item, lambda: process(item))
    options['total_seconds'] = time.perf_counter() - t0
    return run.save()
