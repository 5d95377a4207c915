"""e4e and pSp encoder architectures (image -> W+), with the module names of their checkpoints.

pSp: Richardson et al. 2021, "Encoding in Style: a StyleGAN Encoder for Image-to-Image Translation"
(GradualStyleEncoder, Section 3, and the two single-layer baselines of its ablation).
e4e: Tov et al. 2021, "Designing an Encoder for StyleGAN Image Manipulation" (Encoder4Editing, Section 4).
Both sit on the IR-SE-50 backbone of ArcFace (Deng et al. 2019; Hu et al. 2018), shared with metrics/arcface.py
in models/irse.py.

Module and parameter names (`input_layer`, `body.<i>.res_layer.<k>`, `styles.<i>.convs.<k>`, `latlayer1`,
...) equal those the original training code saves under `encoder.*`, so a checkpoint's tensors load
with a name and shape check each. `fuse_for_inference` then rewrites a loaded network for speed
(BatchNorm folded into the convolutions before it, equalized-linear scales applied once, on the CPU Winograd
convolutions); the
unfused network runs exactly the original's sequence of operations.
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from pstyle.models.irse import BottleneckIR, IRTrunk, fold_batchnorm
from pstyle.torch_utils.winograd import use_winograd

TAPS = (6, 20, 23)      # Body units whose outputs are c1 (128 ch, 1/4 size), c2 (256 ch, 1/8), c3 (512 ch, 1/16).
COARSE, MIDDLE = 3, 7   # W+ rows [0, 3) read c3, rows [3, 7) the FPN's p2, rows [7, num_ws) p1 (pSp Section 3).
ENCODER_TYPES = ('GradualStyleEncoder', 'Encoder4Editing',
                 'BackboneEncoderUsingLastLayerIntoW', 'BackboneEncoderUsingLastLayerIntoWPlus')


def num_styles(size):
    """W+ rows of a StyleGAN2 generator of `size` x `size` pixels, as pSp/e4e compute them."""
    return int(math.log2(size)) * 2 - 2


# ----------------------------------------------------------------------------
# Layers.

class EqualLinear(nn.Module):
    """rosinality's equalized linear layer with lr_mul 1 and no activation: x @ (W / sqrt(in)).T + b."""

    def __init__(self, in_features, out_features):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(out_features))
        self.scale = 1 / math.sqrt(in_features)

    def forward(self, x):
        return F.linear(x, self.weight * self.scale, self.bias)


class GradualStyleBlock(nn.Module):
    """log2(spatial) stride-2 conv3x3 + LeakyReLU(0.01) down to 1x1, then an EqualLinear: one W+ row."""

    def __init__(self, in_channels, out_channels, spatial):
        super().__init__()
        layers = []
        for i in range(int(math.log2(spatial))):
            layers += [nn.Conv2d(in_channels if i == 0 else out_channels, out_channels, 3, 2, 1), nn.LeakyReLU()]
        self.convs = nn.Sequential(*layers)
        self.linear = EqualLinear(out_channels, out_channels)
        self.out_channels = out_channels

    def forward(self, x):
        return self.linear(self.convs(x).reshape(-1, self.out_channels))   # [N, C, 1, 1] -> [N, C]


def fuse_for_inference(net, winograd=False):
    """Fold every BatchNorm that follows a conv into it and pre-scale the EqualLinear weights (in place).

    `winograd`: also run the 3x3 convolutions with >= 128 channels as Winograd convolutions (F(4, 3) at stride 1,
    F(2, 2) polyphase at stride 2; torch_utils/winograd.py) -- fp32 CPU inference only, same results to ~1e-5.
    """
    for module in list(net.modules()):
        if isinstance(module, BottleneckIR):
            module.fuse()
        elif isinstance(module, EqualLinear) and module.scale != 1:
            with torch.no_grad():
                module.weight.mul_(module.scale)
            module.scale = 1
    net.input_layer[0] = fold_batchnorm(net.input_layer[0], net.input_layer[1])
    net.input_layer[1] = nn.Identity()
    if winograd:
        use_winograd(net)
    return net


# ----------------------------------------------------------------------------
# Encoders.

class IRBackbone(IRTrunk):
    """The IR(-SE)-50 trunk (models/irse.py) with the feature-pyramid taps the encoders read."""

    def pyramid_taps(self, x):
        """(c1, c2, c3): the body's features after units 6, 20 and 23."""
        x = self.input_layer(x)
        taps = []
        for i, unit in enumerate(self.body):
            x = unit(x)
            if i in TAPS:
                taps.append(x)
        return taps


def _upsample_add(x, y):
    """FPN top-down step: x upsampled bilinearly (align_corners=True, as pSp) to y's size, plus y."""
    return F.interpolate(x, size=y.shape[-2:], mode='bilinear', align_corners=True) + y


def _style_blocks(n_styles):
    return nn.ModuleList([GradualStyleBlock(512, 512, 16 if i < COARSE else 32 if i < MIDDLE else 64)
                          for i in range(n_styles)])


class GradualStyleEncoder(IRBackbone):
    """pSp: one style block per W+ row, on c3 (coarse), p2 (middle) or p1 (fine) of a feature pyramid."""

    def __init__(self, n_styles, input_nc=3, se=True):
        super().__init__(input_nc, se)
        self.styles = _style_blocks(n_styles)
        self.latlayer1 = nn.Conv2d(256, 512, 1)
        self.latlayer2 = nn.Conv2d(128, 512, 1)

    def forward(self, x):
        c1, c2, c3 = self.pyramid_taps(x)
        p2 = _upsample_add(c3, self.latlayer1(c2))
        p1 = _upsample_add(p2, self.latlayer2(c1))
        rows = [style(c3 if i < COARSE else p2 if i < MIDDLE else p1) for i, style in enumerate(self.styles)]
        return torch.stack(rows, dim=1)                                       # [N, n_styles, 512]


class Encoder4Editing(GradualStyleEncoder):
    """e4e: w0 from c3 repeated on every row, plus one predicted offset per row (Tov et al. Section 4.2).

    At inference every offset is used (e4e's progressive stage is `Inference`, beyond the last row).
    """

    def forward(self, x):
        c1, c2, c3 = self.pyramid_taps(x)
        w0 = self.styles[0](c3)
        rows = [w0]
        features = c3
        for i in range(1, len(self.styles)):
            if i == COARSE:
                p2 = features = _upsample_add(c3, self.latlayer1(c2))
            elif i == MIDDLE:
                features = _upsample_add(p2, self.latlayer2(c1))
            rows.append(w0 + self.styles[i](features))
        return torch.stack(rows, dim=1)                                       # [N, n_styles, 512]


class BackboneEncoderUsingLastLayerIntoW(IRBackbone):
    """pSp's W baseline: global average of the last features -> EqualLinear -> one w [N, 512]."""

    def __init__(self, n_styles, input_nc=3, se=True):
        super().__init__(input_nc, se)
        self.output_pool = nn.AdaptiveAvgPool2d((1, 1))
        self.linear = EqualLinear(512, 512)

    def forward(self, x):
        x = self.body(self.input_layer(x))
        return self.linear(self.output_pool(x).reshape(-1, 512))


class BackboneEncoderUsingLastLayerIntoWPlus(IRBackbone):
    """pSp's naive W+ baseline: BN -> 7x7 average pool -> Linear -> EqualLinear to all rows at once."""

    def __init__(self, n_styles, input_nc=3, se=True):
        super().__init__(input_nc, se)
        self.n_styles = n_styles
        self.output_layer_2 = nn.Sequential(nn.BatchNorm2d(512), nn.AdaptiveAvgPool2d((7, 7)), nn.Flatten(),
                                            nn.Linear(512 * 7 * 7, 512))
        self.linear = EqualLinear(512, 512 * n_styles)

    def forward(self, x):
        x = self.output_layer_2(self.body(self.input_layer(x)))
        return self.linear(x).reshape(-1, self.n_styles, 512)


class SmallEncoder(nn.Module):
    """A plain convolutional encoder for small generators (`pstyle train-encoder`, 64x64 toys and up to 128x128).

    Stride-2 stages (conv3x3 s2 + conv3x3, LeakyReLU 0.2) halve the image down to 4x4; the coarse rows read
    the 4x4 features and the fine rows the 8x8 ones, each group through one EqualLinear (the split of pSp's
    feature pyramid, Richardson et al. 2021 Section 3, without its IR-SE trunk). Predicts offsets from
    latent_avg: `forward(x [N, input_nc, S, S])` -> [N, num_ws, w_dim].
    """

    def __init__(self, num_ws, w_dim, input_size, input_nc=3, channels=32, channel_max=256):
        super().__init__()
        if input_size < 8 or input_size & (input_size - 1):
            raise ValueError(f'SmallEncoder needs a power-of-two input_size >= 8, got {input_size}')
        self.num_ws, self.w_dim = num_ws, w_dim
        self.coarse = min(COARSE, num_ws) if input_size > 8 else num_ws      # Rows read from the 4x4 features.
        ch = lambda res: min(channels * input_size // res, channel_max)
        self.input_layer = nn.Sequential(nn.Conv2d(input_nc, ch(input_size), 3, 1, 1), nn.LeakyReLU(0.2))
        stages, res = [], input_size
        while res > 4:
            stages.append(nn.Sequential(nn.Conv2d(ch(res), ch(res // 2), 3, 2, 1), nn.LeakyReLU(0.2),
                                        nn.Conv2d(ch(res // 2), ch(res // 2), 3, 1, 1), nn.LeakyReLU(0.2)))
            res //= 2
        self.body = nn.Sequential(*stages)
        self.head_coarse = EqualLinear(ch(4) * 16, self.coarse * w_dim)
        fine = num_ws - self.coarse
        self.head_fine = EqualLinear(ch(8) * 16, fine * w_dim) if fine else None   # 8x8 pooled to 4x4.

    def forward(self, x):
        x = self.input_layer(x)
        for stage in self.body[:-1]:
            x = stage(x)
        f8 = x                                                                 # [N, C, 8, 8]
        f4 = self.body[-1](f8)                                                 # [N, C, 4, 4]
        rows = [self.head_coarse(f4.flatten(1)).reshape(-1, self.coarse, self.w_dim)]
        if self.head_fine is not None:
            pooled = F.avg_pool2d(f8, 2).flatten(1)                            # [N, C * 16]
            rows.append(self.head_fine(pooled).reshape(-1, self.num_ws - self.coarse, self.w_dim))
        return torch.cat(rows, dim=1)                                          # [N, num_ws, w_dim]


def build_encoder(encoder_type, n_styles, input_nc=3, se=True):
    """A freshly initialised encoder of one of ENCODER_TYPES (random weights; BatchNorm in eval mode)."""
    classes = {cls.__name__: cls for cls in (GradualStyleEncoder, Encoder4Editing, BackboneEncoderUsingLastLayerIntoW,
                                             BackboneEncoderUsingLastLayerIntoWPlus)}
    if encoder_type not in classes:
        raise ValueError(f'unknown encoder_type {encoder_type!r}; expected one of {", ".join(ENCODER_TYPES)}')
    return classes[encoder_type](n_styles, input_nc, se).eval()
