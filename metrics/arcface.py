"""ArcFace IR-SE50 (Deng et al. 2019; ResNet-50 "IR" units with squeeze-excitation), as used by pSp/e4e.

Module and parameter names equal those of `model_ir_se50.pth` (TreB1eN's InsightFace_Pytorch
`Backbone(112, 50, 'ir_se')`), so that file loads as is. Input: aligned faces [N,3,112,112] in [-1,1];
output: L2-normalized 512-d embeddings.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F
from pstyle.metrics.weights import ARCFACE_IRSE50, load_checked_state_dict, load_tensors

# IR-50 stages: (in_channels, depth, units); the first unit of each stage has stride 2.
IR50_STAGES = ((64, 64, 3), (64, 128, 4), (128, 256, 14), (256, 512, 3))


class SEModule(nn.Module):
    """Squeeze-excitation (Hu et al. 2018) with 1x1 convolutions and no biases."""

    def __init__(self, channels, reduction=16):
        super().__init__()
        self.fc1 = nn.Conv2d(channels, channels // reduction, 1, bias=False)
        self.fc2 = nn.Conv2d(channels // reduction, channels, 1, bias=False)

    def forward(self, x):
        s = F.adaptive_avg_pool2d(x, 1)
        return x * torch.sigmoid(self.fc2(F.relu(self.fc1(s))))


class BottleneckIRSE(nn.Module):
    """BN -> conv3x3 -> PReLU -> conv3x3(stride) -> BN -> SE, plus a (projected) shortcut."""

    def __init__(self, in_channels, depth, stride):
        super().__init__()
        if in_channels == depth:
            self.shortcut_layer = nn.MaxPool2d(1, stride)          # identity, subsampled
        else:
            self.shortcut_layer = nn.Sequential(nn.Conv2d(in_channels, depth, 1, stride, bias=False),
                                                nn.BatchNorm2d(depth))
        self.res_layer = nn.Sequential(
            nn.BatchNorm2d(in_channels),
            nn.Conv2d(in_channels, depth, 3, 1, 1, bias=False),
            nn.PReLU(depth),
            nn.Conv2d(depth, depth, 3, stride, 1, bias=False),
            nn.BatchNorm2d(depth),
            SEModule(depth, 16))

    def forward(self, x):
        return self.shortcut_layer(x) + self.res_layer(x)


class IRSE50(nn.Module):
    def __init__(self, drop_ratio=0.6):
        super().__init__()
        self.input_layer = nn.Sequential(nn.Conv2d(3, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.PReLU(64))
        units = []
        for in_ch, depth, n in IR50_STAGES:
            units.append(BottleneckIRSE(in_ch, depth, 2))
            units += [BottleneckIRSE(depth, depth, 1) for _ in range(n - 1)]
        self.body = nn.Sequential(*units)
        self.output_layer = nn.Sequential(nn.BatchNorm2d(512), nn.Dropout(drop_ratio), nn.Flatten(),
                                          nn.Linear(512 * 7 * 7, 512), nn.BatchNorm1d(512))

    def forward(self, x):
        assert x.ndim == 4 and x.shape[1:] == (3, 112, 112), f'expected [N,3,112,112], got {list(x.shape)}'
        x = self.output_layer(self.body(self.input_layer(x)))
        return F.normalize(x, dim=1)


def load_arcface(path, device='cpu') -> IRSE50:
    """Load `model_ir_se50.pth` (a plain state_dict; loaded with weights_only, no pickle code runs)."""
    sd = load_tensors(path, ARCFACE_IRSE50)
    sd = {k.removeprefix('module.'): v for k, v in sd.items()}  # saved from nn.DataParallel
    model = load_checked_state_dict(IRSE50(), sd, 'IR-SE50', source=path)
    return model.eval().requires_grad_(False).to(device)


def arcface_input(images: torch.Tensor) -> torch.Tensor:
    """Aligned faces uint8 [N,3,H,W] (FFHQ-style crops) -> [N,3,112,112] in [-1,1], as pSp's ID loss.

    pSp resizes to 256, keeps rows 35:223 and columns 32:220 (the face without hair and background),
    then average-pools to 112x112.
    """
    assert images.dtype == torch.uint8 and images.ndim == 4 and images.shape[1] == 3, (images.dtype, images.shape)
    x = images.float() / 127.5 - 1
    if x.shape[2:] != (256, 256):
        x = F.interpolate(x, size=(256, 256), mode='bilinear', align_corners=False, antialias=True)
    x = x[:, :, 35:223, 32:220]
    return F.adaptive_avg_pool2d(x, (112, 112))
