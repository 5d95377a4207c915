"""ArcFace IR-SE50 (Deng et al. 2019; ResNet-50 "IR" units with squeeze-excitation), as used by pSp/e4e.

Module and parameter names equal those of `model_ir_se50.pth` (TreB1eN's InsightFace_Pytorch
`Backbone(112, 50, 'ir_se')`; the trunk is models/irse.py, shared with the pSp/e4e encoders), so that file
loads as is. Input: aligned faces [N,3,112,112] in [-1,1];
output: L2-normalized 512-d embeddings.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F
from pstyle.models.irse import IRTrunk
from pstyle.metrics.weights import ARCFACE_IRSE50, load_checked_state_dict, load_tensors


class IRSE50(IRTrunk):
    """The IR-SE-50 trunk (models/irse.py) with ArcFace's embedding head at `output_layer`."""

    def __init__(self, drop_ratio=0.6):
        super().__init__(input_nc=3, se=True)
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
