"""The IR(-SE)-50 trunk shared by ArcFace (metrics/arcface.py) and the pSp/e4e encoders (projectors/encoder_nets.py).

IR units: Deng et al. 2019 ("ArcFace", the improved residual unit of Section 3); squeeze-excitation:
Hu et al. 2018. Module and parameter names (`input_layer`, `body.<i>.shortcut_layer`,
`body.<i>.res_layer.<k>`, `...res_layer.5.fc1`) equal those of TreB1eN's InsightFace_Pytorch `Backbone`,
which both `model_ir_se50.pth` and pSp/e4e checkpoints (under `encoder.*`) use, so either loads as is.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

# IR-50 stages: (in_channels, depth, units); the first unit of each stage has stride 2.
IR50_STAGES = ((64, 64, 3), (64, 128, 4), (128, 256, 14), (256, 512, 3))


class SEModule(nn.Module):
    """Squeeze-excitation with bias-free 1x1 convolutions: x * sigmoid(fc2(relu(fc1(avgpool(x)))))."""

    def __init__(self, channels, reduction=16):
        super().__init__()
        self.fc1 = nn.Conv2d(channels, channels // reduction, 1, bias=False)
        self.fc2 = nn.Conv2d(channels // reduction, channels, 1, bias=False)

    def forward(self, x):
        s = F.adaptive_avg_pool2d(x, 1)                              # [N, C, 1, 1]
        return x * torch.sigmoid(self.fc2(F.relu(self.fc1(s))))


class Subsample(nn.Module):
    """x[:, :, ::stride, ::stride]: what the original's MaxPool2d(1, stride) identity shortcut computes."""

    def __init__(self, stride):
        super().__init__()
        self.stride = stride

    def forward(self, x):
        return x[:, :, ::self.stride, ::self.stride] if self.stride > 1 else x


def fold_batchnorm(conv, bn):
    """conv followed by an eval-mode BatchNorm -> one conv with bias (same output up to rounding)."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
    fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                      conv.dilation, conv.groups, bias=True).to(conv.weight.device)
    with torch.no_grad():
        fused.weight.copy_(conv.weight * scale[:, None, None, None])
        fused.bias.copy_((bias - bn.running_mean) * scale + bn.bias)
    return fused


class BottleneckIR(nn.Module):
    """IR unit: BN -> conv3x3 -> PReLU -> conv3x3(stride) -> BN (-> SE), plus a (projected) shortcut."""

    def __init__(self, in_channels, depth, stride, se=True):
        super().__init__()
        if in_channels == depth:
            self.shortcut_layer = nn.MaxPool2d(1, stride)          # identity, subsampled
        else:
            self.shortcut_layer = nn.Sequential(nn.Conv2d(in_channels, depth, 1, stride, bias=False),
                                                nn.BatchNorm2d(depth))
        layers = [nn.BatchNorm2d(in_channels), nn.Conv2d(in_channels, depth, 3, 1, 1, bias=False), nn.PReLU(depth),
                  nn.Conv2d(depth, depth, 3, stride, 1, bias=False), nn.BatchNorm2d(depth)]
        self.res_layer = nn.Sequential(*layers, *([SEModule(depth, 16)] if se else []))

    def forward(self, x):
        return self.shortcut_layer(x) + self.res_layer(x)

    def fuse(self):
        """Fold the BatchNorms that follow a conv into it (in place; inference only)."""
        if isinstance(self.shortcut_layer, nn.MaxPool2d):
            self.shortcut_layer = Subsample(self.shortcut_layer.stride)
        else:
            self.shortcut_layer = fold_batchnorm(*self.shortcut_layer)
        # res_layer[0] normalizes the conv's zero-padded input, so it cannot be folded into the conv exactly.
        self.res_layer[3] = fold_batchnorm(self.res_layer[3], self.res_layer[4])
        self.res_layer[4] = nn.Identity()


class IRTrunk(nn.Module):
    """Input layer (conv3x3 -> BN -> PReLU, 64 ch) and the 24 IR(-SE) units of IR-50 at names `input_layer`, `body`."""

    def __init__(self, input_nc=3, se=True):
        super().__init__()
        self.input_layer = nn.Sequential(nn.Conv2d(input_nc, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.PReLU(64))
        units = []
        for in_channels, depth, count in IR50_STAGES:
            units.append(BottleneckIR(in_channels, depth, 2, se))
            units += [BottleneckIR(depth, depth, 1, se) for _ in range(count - 1)]
        self.body = nn.Sequential(*units)
