"""Neural style transfer by optimisation (Gatys, Ecker & Bethge 2016, "Image Style Transfer Using
Convolutional Neural Networks"), with the choices of jcjohnson/neural-style: content layer relu4_2, style
layers relu1_1 ... relu5_1, Gram matrices normalised by C*H*W, L-BFGS, several styles blended by
weighted Gram targets, coarse-to-fine scales, and colour preservation (Gatys et al. 2016b).

Photos of the same size are optimised as one batch: each photo's loss is its own and the losses are
summed, and the L-BFGS state is per photo (`baselines/lbfgs.py`), so a photo's result does not depend on
the batch it was in.
"""

import dataclasses
import time

import torch
import torch.nn.functional as F
from PIL import Image

from pstyle.torch_utils.errors import InputError, typed_error
from pstyle.torch_utils.folder_run import plan
from pstyle.baselines import color, runs
from pstyle.baselines.lbfgs import lbfgs
from pstyle.baselines.vgg import LAYER_INDEX, load_vgg19
from pstyle.models.render import pick_device

COLOR_MODES = ('none', 'luminance', 'histogram')
INITS = ('content', 'noise')
OPTIMIZERS = ('lbfgs', 'adam')


@dataclasses.dataclass
class NSTOptions:
    content_layers: tuple = ('relu4_2',)
    style_layers: tuple = ('relu1_1', 'relu2_1', 'relu3_1', 'relu4_1', 'relu5_1')
    content_weight: float = 1.0         # on ImageNet-normalised [0,1] inputs (not jcjohnson's 0-255 Caffe scale)
    style_weight: float = 1e6
    tv_weight: float = 0.0              # mean squared difference of neighbouring pixels
    style_blend_weights: list = None    # one per style, normalised to sum 1; None = equal
    optimizer: str = 'lbfgs'
    learning_rate: float = 1.0          # L-BFGS step (torch's lr); Adam's learning rate on [0,1] pixels
    steps: int = 500                    # iterations per scale
    init: str = 'content'
    seed: int = 0                       # noise init: the same noise for every photo of a given size
    size: int = 512                     # longest side of the output; 0 keeps the photo's size
    style_scale: float = 1.0            # style images are resized to style_scale * size (longest side)
    scales: int = 1                     # coarse-to-fine: 2 runs at half size first, then at full size
    original_colors: str = 'none'       # 'luminance' (YIQ) or 'histogram' matching
    pooling: str = 'max'
    precision: str = 'fp32'             # 'bf16': CPU/GPU autocast of the VGG passes; the image stays fp32
    batch_size: int = 4
    device: str = None

    def check(self, num_styles):
        choices = dict(optimizer=OPTIMIZERS, init=INITS, original_colors=COLOR_MODES, pooling=('max', 'avg'),
                       precision=('fp32', 'bf16'))
        for field, allowed in choices.items():
            if getattr(self, field) not in allowed:
                raise ValueError(f'{field} must be one of {", ".join(allowed)}, got {getattr(self, field)!r}')
        for name in (*self.content_layers, *self.style_layers):
            if name not in LAYER_INDEX:
                raise ValueError(f'unknown VGG19 layer {name!r} (conv1_1 ... relu5_4, pool1 ... pool5)')
        if self.steps < 1 or self.scales < 1 or self.batch_size < 1 or self.size < 0 or self.style_scale <= 0:
            raise ValueError('steps, scales and batch size must be >= 1, size >= 0, style scale > 0')
        if self.style_blend_weights is not None:
            w = list(self.style_blend_weights)
            if len(w) != num_styles or any(v < 0 for v in w) or sum(w) <= 0:
                raise ValueError(f'--style-blend-weights needs {num_styles} values >= 0 with a positive sum, got {w}')
        return self

    def blend_weights(self, num_styles):
        w = self.style_blend_weights or [1.0] * num_styles
        return [v / sum(w) for v in w]


# ----------------------------------------------------------------------------
# Losses.

def _full(x):
    """Losses in at least fp32: autocast's bf16 activations are promoted, fp64 stays fp64."""
    return x.float() if x.dtype in (torch.bfloat16, torch.float16) else x


def gram(feat):
    """[N,C,H,W] -> [N,C,C], F F^T / (C*H*W) (Gatys et al. Eq. 3, normalised as jcjohnson's GramMatrix)."""
    N, C, H, W = feat.shape
    flat = _full(feat).reshape(N, C, H * W)                  # [N,C,HW]
    return flat @ flat.transpose(1, 2) / (C * H * W)


def tv_loss(x):
    """Per-image mean squared difference between neighbouring pixels, [N]."""
    dh = (x[:, :, 1:, :] - x[:, :, :-1, :]).pow(2).mean(dim=(1, 2, 3))
    dw = (x[:, :, :, 1:] - x[:, :, :, :-1]).pow(2).mean(dim=(1, 2, 3))
    return dh + dw


def _autocast(x, precision):
    return torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=precision == 'bf16')


class StyleLoss:
    """closure(x) -> per-image loss [N]: content MSE + style Gram MSE (summed over layers) + TV."""

    def __init__(self, vgg, contents, style_grams, opts):
        self.vgg, self.opts = vgg, opts
        with torch.no_grad(), _autocast(contents, opts.precision):
            feats = vgg(contents, opts.content_layers)
        self.content_targets = {k: _full(v) for k, v in feats.items()}
        self.style_targets = style_grams                      # {layer: [N,C,C]}

    def __call__(self, x):
        o = self.opts
        with _autocast(x, o.precision):
            feats = self.vgg(x, set(o.content_layers) | set(o.style_layers))
        loss = o.tv_weight * tv_loss(x) if o.tv_weight else x.new_zeros(x.shape[0])
        for k in o.content_layers:
            loss = loss + o.content_weight * (_full(feats[k]) - self.content_targets[k]).pow(2).mean(dim=(1, 2, 3))
        for k in o.style_layers:
            loss = loss + o.style_weight * (gram(feats[k]) - self.style_targets[k]).pow(2).mean(dim=(1, 2))
        return loss


def style_grams(vgg, styles, weights, opts):
    """Blended Gram targets {layer: [N,C,C]}: sum_i w_i Gram(style_i[n]); styles: list of [N,3,h,w]."""
    out = {}
    with torch.no_grad():
        for s, w in zip(styles, weights):
            with _autocast(s, opts.precision):
                feats = vgg(s, opts.style_layers)
            for k in opts.style_layers:
                out[k] = out.get(k, 0) + w * gram(feats[k])
    return out


# ----------------------------------------------------------------------------
# Optimisation.

def optimise(loss_fn, x, opts, callback=None):
    """Minimise the per-image losses over the pixels of x [N,3,H,W] (a copy) for opts.steps iterations."""
    x = x.detach().clone()
    if opts.optimizer == 'lbfgs':
        return lbfgs(x, loss_fn, opts.steps, lr=opts.learning_rate, callback=callback)
    x.requires_grad_(True)
    adam = torch.optim.Adam([x], lr=opts.learning_rate)      # element-wise: photos stay independent
    for step in range(opts.steps):
        adam.zero_grad(set_to_none=True)
        losses = loss_fn(x)
        losses.sum().backward()
        if callback is not None:
            callback(step, losses.detach())
        adam.step()
    return x.detach()


def _fit(img: Image.Image, size):
    """Resize so the longest side is `size` (bilinear); 0 keeps the image."""
    w, h = img.size
    if not size or max(w, h) == size:
        return img
    s = size / max(w, h)
    return img.resize((max(1, round(w * s)), max(1, round(h * s))), Image.BILINEAR)


def _noise(shape, seed, device):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(shape[1:], generator=g).expand(shape).contiguous().to(device)  # the same at any batch size


def _prepare_styles(style_imgs, contents, size, opts, device):
    """Styles as [N,3,h,w] tensors for a batch of contents [N,3,H,W], recoloured per photo when asked."""
    out = []
    for img in style_imgs:
        s = runs.to_tensor(_fit(img, max(1, round(size * opts.style_scale))), device).to(contents.dtype)
        s = s.expand(contents.shape[0], -1, -1, -1)
        if opts.original_colors == 'histogram':
            s = color.match_histogram(s, contents).clamp(0, 1)
        elif opts.original_colors == 'luminance':
            s = color.match_luminance(color.luminance(s), color.luminance(contents)).expand(-1, 3, -1, -1)
        out.append(s)
    return out


def transfer(vgg, photos, style_imgs, opts, device='cpu', callback=None):
    """Stylise same-size PIL photos with PIL styles; returns float [N,3,H,W] RGB (unclipped) at the photos' size.

    Coarse-to-fine: scale k of S runs at size / 2^(S-1-k), initialised from the previous scale's result."""
    dtype = next(vgg.parameters()).dtype                     # fp32; fp64 in the batch-independence tests
    full = torch.cat([runs.to_tensor(p, device) for p in photos]).to(dtype)
    H, W = full.shape[2:]
    weights, x = opts.blend_weights(len(style_imgs)), None
    for k in range(opts.scales):
        factor = 2 ** (opts.scales - 1 - k)
        h, w = max(1, round(H / factor)), max(1, round(W / factor))
        contents = full if factor == 1 else \
            F.interpolate(full, size=(h, w), mode='bilinear', align_corners=False, antialias=True)
        if min(h, w) < 16:
            raise InputError(f'{W}x{H} pixels at scale 1/{factor} is too small for VGG19 (>= 16 needed)')
        targets = color.luminance(contents).expand(-1, 3, -1, -1) if opts.original_colors == 'luminance' else contents
        styles = _prepare_styles(style_imgs, contents, max(h, w), opts, device)
        loss_fn = StyleLoss(vgg, targets, style_grams(vgg, styles, weights, opts), opts)
        if x is None:
            x = targets if opts.init == 'content' else _noise(targets.shape, opts.seed, device)
        else:
            x = F.interpolate(x, size=(h, w), mode='bilinear', align_corners=False)
        x = optimise(loss_fn, x, opts, callback)
    if opts.original_colors == 'luminance':
        x = color.combine_luminance(x, full)                 # stylised luminance, the photo's I and Q
    return x


def nst_folder(content, styles, outdir, opts=None, vgg=None, vgg_weights=None, log=print, resume=False):
    """Stylise a photo or every image in a folder; `<stem>.png` per photo and manifest.json in `outdir`.

    vgg: a VGG19 module (tests pass random weights), else torchvision's weights (`vgg_weights` or found)."""
    if not styles:
        raise ValueError('at least one --style image is needed')
    opts = (opts or NSTOptions()).check(len(styles))
    device = pick_device(opts.device)
    items = plan(content)
    if vgg is None:
        vgg = load_vgg19(vgg_weights, pooling=opts.pooling, device=device)
    vgg = vgg.to(device).eval().requires_grad_(False)
    style_imgs = [runs.read_image(s) for s in styles]
    inputs = dict(content=str(content), styles=[runs.file_info(s) for s in styles],
                  vgg=runs.file_info(getattr(vgg, 'weights_path', None)))
    options = dict(dataclasses.asdict(opts), device=str(device))
    run = runs.start_run(items, outdir, 'nst', inputs, options, log, resume)
    t0 = time.perf_counter()
    for group in _groups(run, opts):
        for start in range(0, len(group), opts.batch_size):
            _run_batch(run, vgg, group[start:start + opts.batch_size], style_imgs, opts, device)
    options['total_seconds'] = time.perf_counter() - t0
    return run.save()


def _groups(run, opts):
    """Load every photo (a typed failure is recorded, the rest go on) and group (item, image, seconds) by working size."""
    groups = {}
    for item in run.pending():
        t0 = time.perf_counter()
        ok, img = run.attempt(item, lambda: _fit(runs.read_image(item.source), opts.size))
        if ok:
            groups.setdefault(img.size, []).append((item, img, time.perf_counter() - t0))
    return list(groups.values())


def _run_batch(run, vgg, batch, style_imgs, opts, device):
    """One L-BFGS batch of same-size photos; a typed error (out of memory, too small) fails each photo of it."""
    t0 = time.perf_counter()
    try:
        out = runs.save_image_uint8(transfer(vgg, [img for _, img, _ in batch], style_imgs, opts, device).clamp(0, 1))
    except Exception as e:  # noqa: BLE001 -- typed errors are recorded per photo, the rest re-raised
        typed = typed_error(e)
        if typed is None:
            run.save()
            raise
        for item, _, _ in batch:
            run.fail(item, typed)
        return
    seconds = (time.perf_counter() - t0) / len(batch)
    for i, (item, _, load_seconds) in enumerate(batch):
        run.succeed(item, [runs.write_png(run.root / f'{item.name}.png', out[i])], seconds=load_seconds + seconds)
