"""AdaIN (Huang & Belongie 2017, "Arbitrary Style Transfer in Real-time with Adaptive Instance
Normalization") with the published weights of naoto0804/pytorch-AdaIN: `vgg_normalised.pth` and
`decoder.pth`, plain state_dicts of its `nn.Sequential`s. The layer indices below are those files' key
names; `test.py`'s semantics (alpha, style interpolation, --preserve_color, sizes) are reproduced and
checked against the original's outputs (tests/fixtures/baselines_ref.npz).
"""

import dataclasses
import time
from pathlib import Path

import torch
from torch import nn

from pstyle.torch_utils.errors import InputError
from pstyle.torch_utils.folder_run import plan, unique_labels
from pstyle.baselines import runs
from pstyle.baselines.published import resolve_published
from pstyle.baselines.vgg import read_state_dict
from pstyle.metrics.weights import load_checked_state_dict
from pstyle.models.render import compute_dtype, pick_device

ENCODER_DEPTH = 31   # net.py: vgg[:31] ends at relu4_1


def _pad_conv(c_in, c_out):
    return [nn.ReflectionPad2d((1, 1, 1, 1)), nn.Conv2d(c_in, c_out, (3, 3)), nn.ReLU()]


def _pool():
    return nn.MaxPool2d((2, 2), (2, 2), (0, 0), ceil_mode=True)


def normalised_vgg() -> nn.Sequential:
    """The 53-layer "normalised VGG19" (net.vgg): a 1x1 colour conv, then reflection-padded 3x3 convs."""
    layers = [nn.Conv2d(3, 3, (1, 1))]
    chans = [(3, 64), (64, 64), 'M', (64, 128), (128, 128), 'M', (128, 256)] + [(256, 256)] * 3 + ['M', (256, 512)] \
        + [(512, 512)] * 3 + ['M'] + [(512, 512)] * 4
    for c in chans:
        layers += [_pool()] if c == 'M' else _pad_conv(*c)
    return nn.Sequential(*layers)


def decoder() -> nn.Sequential:
    """net.decoder: relu4_1 features [N,512,h,w] -> RGB [N,3,8h,8w] (no output activation)."""
    up = lambda: nn.Upsample(scale_factor=2, mode='nearest')  # noqa: E731
    layers = _pad_conv(512, 256) + [up()]
    for _ in range(3):
        layers += _pad_conv(256, 256)
    layers += _pad_conv(256, 128) + [up()] + _pad_conv(128, 128) + _pad_conv(128, 64) + [up()] + _pad_conv(64, 64)
    layers += [nn.ReflectionPad2d((1, 1, 1, 1)), nn.Conv2d(64, 3, (3, 3))]
    return nn.Sequential(*layers)


def calc_mean_std(feat, eps=1e-5):
    """Per-channel mean and sqrt(unbiased variance + eps) of [N,C,H,W] (function.py)."""
    N, C = feat.shape[:2]
    flat = feat.reshape(N, C, -1)
    return flat.mean(dim=2).view(N, C, 1, 1), (flat.var(dim=2) + eps).sqrt().view(N, C, 1, 1)


def adaptive_instance_normalization(content_feat, style_feat):
    """AdaIN(x, y) = sigma(y) (x - mu(x)) / sigma(x) + mu(y) (Eq. 8 of the paper)."""
    assert content_feat.shape[:2] == style_feat.shape[:2]
    style_mean, style_std = calc_mean_std(style_feat)
    content_mean, content_std = calc_mean_std(content_feat)
    return (content_feat - content_mean) / content_std * style_std + style_mean


def _mat_sqrt(x):
    U, D, V = torch.svd(x)
    return U @ D.pow(0.5).diag() @ V.t()


def coral(source, target):
    """Recolour `source` [3,H,W] so its RGB mean and covariance match `target` [3,H',W'] (function.py's
    CORAL). As in the original, the "covariances" are sums over pixels plus I (no 1/n), so the spread is
    matched only when both images have the same number of pixels; kept for parity."""
    def flat_stats(img):
        f = img.reshape(3, -1)
        mean, std = f.mean(dim=-1, keepdim=True), f.std(dim=-1, keepdim=True)
        norm = (f - mean) / std
        return norm, mean, std, norm @ norm.t() + torch.eye(3, dtype=img.dtype, device=img.device)
    src_norm, _, _, src_cov = flat_stats(source)
    _, tgt_mean, tgt_std, tgt_cov = flat_stats(target)
    transfer = _mat_sqrt(tgt_cov) @ torch.inverse(_mat_sqrt(src_cov)) @ src_norm
    return (transfer * tgt_std + tgt_mean).view(source.shape)


def style_transfer(encoder, dec, content, styles, alpha=1.0, interpolation_weights=None):
    """test.py's style_transfer. content [1,3,H,W], styles: list of [1,3,h,w] in [0,1]; with
    `interpolation_weights` (one per style, summing to 1) the AdaIN features of every style are mixed
    into one image, else one image per style. Returns [len(styles) or 1, 3, H', W']."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f'alpha must be in [0, 1], got {alpha}')
    content_f = encoder(content)
    # AdaIN is per sample, so each style's features can be computed alone (styles may differ in size).
    feats = torch.cat([adaptive_instance_normalization(content_f, encoder(s)) for s in styles])
    if interpolation_weights is not None:
        if len(interpolation_weights) != len(styles):
            raise ValueError(f'{len(interpolation_weights)} interpolation weights for {len(styles)} styles')
        feats = sum(w * feats[i:i + 1] for i, w in enumerate(interpolation_weights))
    feats = feats * alpha + content_f * (1 - alpha)
    return dec(feats)


def load_encoder(vgg):
    """vgg[:31] (up to relu4_1) of `vgg_normalised.pth` (a path, URL or short name), frozen, and its path."""
    path = resolve_published(vgg)
    full = load_checked_state_dict(normalised_vgg(), read_state_dict(path, 'AdaIN vgg_normalised.pth'),
                                   'AdaIN vgg_normalised.pth', source=path)
    return full[:ENCODER_DEPTH].eval().requires_grad_(False), path


def load_decoder(dec):
    """The decoder of `decoder.pth` (a path, URL or short name) and its path."""
    path = resolve_published(dec)
    return load_checked_state_dict(decoder(), read_state_dict(path, 'AdaIN decoder.pth'), 'AdaIN decoder.pth', source=path), path


def load_adain(vgg, dec, device='cpu'):
    """(encoder = vgg[:31], decoder, provenance) from the two published files, in eval mode."""
    (encoder, vgg_path), (decoder_net, dec_path) = load_encoder(vgg), load_decoder(dec)
    decoder_net.eval().requires_grad_(False)
    return encoder.to(device), decoder_net.to(device), dict(vgg=runs.file_info(vgg_path), decoder=runs.file_info(dec_path))


def normalise_weights(weights, num_styles):
    """test.py: integer-like interpolation weights divided by their sum."""
    if weights is None:
        return None
    if len(weights) != num_styles:
        raise ValueError(f'--style-weights has {len(weights)} values for {num_styles} styles')
    if any(w < 0 for w in weights) or sum(weights) <= 0:
        raise ValueError(f'style weights must be >= 0 with a positive sum, got {list(weights)}')
    return [w / sum(weights) for w in weights]


@dataclasses.dataclass
class AdainOptions:
    alpha: float = 1.0                  # content-style trade-off in feature space, [0, 1]
    style_weights: list = None          # interpolate several styles into one image
    preserve_color: bool = False        # recolour each style to the content's colours first (CORAL)
    content_size: int = 512             # shorter side; 0 keeps the input size (test.py's defaults: 512)
    style_size: int = 512
    precision: str = 'fp32'             # 'bf16' (CPU/GPU) or 'fp16' (CUDA): autocast of the encoder and decoder passes
    device: str = None

    def check(self, num_styles):
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f'alpha must be in [0, 1], got {self.alpha}')
        if self.content_size < 0 or self.style_size < 0:
            raise ValueError('sizes must be >= 0 (0 keeps the input size)')
        self.style_weights = normalise_weights(self.style_weights, num_styles)
        return self


def stylize_one(encoder, dec, content_img, style_imgs, opts, device, dtype=None):
    """PIL content + PIL styles -> list of uint8 [H,W,3] (one per style, or one interpolated). dtype (bf16, fp16):
    the encoder and decoder passes run under autocast; AdaIN's statistics, the mixing and the image stay fp32."""
    content = runs.to_tensor(content_img, device)
    if min(content.shape[2:]) < 16:
        raise InputError(f'image of {content.shape[3]}x{content.shape[2]} pixels is too small (AdaIN needs >= 16)')
    styles = [runs.to_tensor(s, device) for s in style_imgs]
    if opts.preserve_color:
        styles = [coral(s[0], content[0])[None] for s in styles]
    with torch.no_grad():
        out = style_transfer(runs.at_precision(encoder, dtype), runs.at_precision(dec, dtype), content, styles,
                             opts.alpha, opts.style_weights)
    # ceil-mode pooling rounds odd sizes up; keep the content's size (exact for multiples of 8).
    out = out[:, :, :content.shape[2], :content.shape[3]]
    return list(runs.save_image_uint8(out))


def adain_folder(content, styles, outdir, vgg='adain_vgg', decoder_file='adain_decoder', opts=None, log=print, resume=False):
    """Stylise a photo or every image in a folder with each style (or their interpolation); writes PNGs and
    manifest.json to `outdir` and returns the manifest."""
    if not styles:
        raise ValueError('at least one --style image is needed')
    opts = (opts or AdainOptions()).check(len(styles))
    device = pick_device(opts.device)
    dtype = compute_dtype(opts.precision, device)                  # fp16 off CUDA is refused before any work
    items = plan(content)
    encoder, dec, weights = load_adain(vgg, decoder_file, device)
    style_imgs = [runs.read_image(s, opts.style_size) for s in styles]   # a bad style image stops the run
    style_stems = unique_labels([Path(s).stem for s in styles])
    num_outputs = 1 if opts.style_weights is not None else len(styles)
    inputs = dict(content=str(content), styles=[runs.file_info(s) for s in styles], **weights)
    options = dict(dataclasses.asdict(opts), device=str(device))
    run = runs.start_run(items, outdir, 'adain', inputs, options, log, resume)

    def process(item):
        imgs = stylize_one(encoder, dec, runs.read_image(item.source, opts.content_size), style_imgs, opts, device, dtype)
        return [(runs.style_output_name(item.name, style_stems[i], num_outputs), img) for i, img in enumerate(imgs)]

    t0 = time.perf_counter()
    for item in run.pending():
        runs.run_photo(run, item, lambda: process(item))
    options['total_seconds'] = time.perf_counter() - t0
    return run.save()
