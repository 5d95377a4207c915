"""The FID Inception-v3: a port of TensorFlow's 2015-12-05 graph (`pool_3:0` features, 1008-way logits).

Parameter names equal those of `pt_inception-2015-12-05-6726825d.pth` (pytorch-fid's FIDInceptionV3,
also loaded by torch-fidelity), so that file loads as is. The graph differs from torchvision's
Inception-v3 in three places (Heusel et al. 2017 TTUR code; pytorch-fid's FID* blocks):
average pools ignore padding, BatchNorm eps is 1e-3, and the last block pools with max, not avg.

For speed, `fuse()` folds every BatchNorm into its convolution and merges the 1x1 convolutions that
read the same input into one; the result differs from the unfused network by float rounding only.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F
from pstyle.metrics.weights import INCEPTION_PTH, load_checked_state_dict, load_tensors


class ConvBN(nn.Module):
    """conv (no bias) -> BatchNorm(eps=1e-3) -> ReLU; names `conv`, `bn` as in the weight file."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(out_channels, eps=0.001)

    def forward(self, x):
        x = self.conv(x)
        if self.bn is not None:
            x = self.bn(x)
        return F.relu(x)

    @torch.no_grad()
    def fold(self):
        """Fold the (eval-mode) BatchNorm into the convolution: w' = w*g/s, b' = beta - mean*g/s."""
        if self.bn is None:
            return
        bn, conv = self.bn, self.conv
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, bias=True)
        fused = fused.to(conv.weight.device, conv.weight.dtype)
        fused.weight.copy_(conv.weight * scale.view(-1, 1, 1, 1))
        fused.bias.copy_(bn.bias - bn.running_mean * scale)
        self.conv, self.bn = fused, None


def _avg_pool_tf(x):
    # TF's AvgPool with SAME padding divides by the number of valid pixels only.
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


class _Block(nn.Module):
    """An Inception block whose `heads` (1x1 convs on the block input) can be merged into one conv."""
    heads: tuple = ()

    def run_heads(self, x):
        merged = getattr(self, 'merged_heads', None)
        if merged is None:
            return [getattr(self, name)(x) for name in self.heads]
        return list(torch.split(F.relu(merged(x)), self.head_sizes, dim=1))

    @torch.no_grad()
    def merge_heads(self):
        convs = [getattr(self, name).conv for name in self.heads]
        assert all(c.kernel_size == (1, 1) and c.stride == (1, 1) and c.bias is not None for c in convs)
        merged = nn.Conv2d(convs[0].in_channels, sum(c.out_channels for c in convs), 1, bias=True)
        merged = merged.to(convs[0].weight.device, convs[0].weight.dtype)
        merged.weight.copy_(torch.cat([c.weight for c in convs]))
        merged.bias.copy_(torch.cat([c.bias for c in convs]))
        self.merged_heads, self.head_sizes = merged, [c.out_channels for c in convs]
        for name in self.heads:
            delattr(self, name)


class InceptionA(_Block):
    heads = ('branch1x1', 'branch5x5_1', 'branch3x3dbl_1')

    def __init__(self, in_channels, pool_features):
        super().__init__()
        self.branch1x1 = ConvBN(in_channels, 64, 1)
        self.branch5x5_1 = ConvBN(in_channels, 48, 1)
        self.branch5x5_2 = ConvBN(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = ConvBN(in_channels, 64, 1)
        self.branch3x3dbl_2 = ConvBN(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = ConvBN(96, 96, 3, padding=1)
        self.branch_pool = ConvBN(in_channels, pool_features, 1)

    def forward(self, x):
        b1, b5, b3 = self.run_heads(x)
        b5 = self.branch5x5_2(b5)
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(b3))
        return torch.cat([b1, b5, b3, self.branch_pool(_avg_pool_tf(x))], 1)


class InceptionB(_Block):
    """Grid reduction 35 -> 17 (Mixed_6a)."""

    def __init__(self, in_channels):
        super().__init__()
        self.branch3x3 = ConvBN(in_channels, 384, 3, stride=2)
        self.branch3x3dbl_1 = ConvBN(in_channels, 64, 1)
        self.branch3x3dbl_2 = ConvBN(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = ConvBN(96, 96, 3, stride=2)

    def forward(self, x):
        b3 = self.branch3x3(x)
        bd = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([b3, bd, F.max_pool2d(x, kernel_size=3, stride=2)], 1)


class InceptionC(_Block):
    heads = ('branch1x1', 'branch7x7_1', 'branch7x7dbl_1')

    def __init__(self, in_channels, channels_7x7):
        super().__init__()
        c7 = channels_7x7
        self.branch1x1 = ConvBN(in_channels, 192, 1)
        self.branch7x7_1 = ConvBN(in_channels, c7, 1)
        self.branch7x7_2 = ConvBN(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7_3 = ConvBN(c7, 192, (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = ConvBN(in_channels, c7, 1)
        self.branch7x7dbl_2 = ConvBN(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = ConvBN(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = ConvBN(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = ConvBN(c7, 192, (1, 7), padding=(0, 3))
        self.branch_pool = ConvBN(in_channels, 192, 1)

    def forward(self, x):
        b1, b7, bd = self.run_heads(x)
        b7 = self.branch7x7_3(self.branch7x7_2(b7))
        for i in range(2, 6):
            bd = getattr(self, f'branch7x7dbl_{i}')(bd)
        return torch.cat([b1, b7, bd, self.branch_pool(_avg_pool_tf(x))], 1)


class InceptionD(_Block):
    """Grid reduction 17 -> 8 (Mixed_7a)."""
    heads = ('branch3x3_1', 'branch7x7x3_1')

    def __init__(self, in_channels):
        super().__init__()
        self.branch3x3_1 = ConvBN(in_channels, 192, 1)
        self.branch3x3_2 = ConvBN(192, 320, 3, stride=2)
        self.branch7x7x3_1 = ConvBN(in_channels, 192, 1)
        self.branch7x7x3_2 = ConvBN(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = ConvBN(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = ConvBN(192, 192, 3, stride=2)

    def forward(self, x):
        b3, b7 = self.run_heads(x)
        b3 = self.branch3x3_2(b3)
        b7 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(b7)))
        return torch.cat([b3, b7, F.max_pool2d(x, kernel_size=3, stride=2)], 1)


class InceptionE(_Block):
    """Mixed_7b (pool='avg') and Mixed_7c (pool='max': the TF graph really max-pools there)."""
    heads = ('branch1x1', 'branch3x3_1', 'branch3x3dbl_1')

    def __init__(self, in_channels, pool):
        super().__init__()
        self.pool = pool
        self.branch1x1 = ConvBN(in_channels, 320, 1)
        self.branch3x3_1 = ConvBN(in_channels, 384, 1)
        self.branch3x3_2a = ConvBN(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = ConvBN(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = ConvBN(in_channels, 448, 1)
        self.branch3x3dbl_2 = ConvBN(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = ConvBN(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = ConvBN(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = ConvBN(in_channels, 192, 1)

    def forward(self, x):
        b1, b3, bd = self.run_heads(x)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
        bd = self.branch3x3dbl_2(bd)
        bd = torch.cat([self.branch3x3dbl_3a(bd), self.branch3x3dbl_3b(bd)], 1)
        pooled = _avg_pool_tf(x) if self.pool == 'avg' else F.max_pool2d(x, kernel_size=3, stride=1, padding=1)
        return torch.cat([b1, b3, bd, self.branch_pool(pooled)], 1)


class InceptionV3FID(nn.Module):
    """x: float32 [N,3,299,299] in [-1,1] -> pool3 [N,2048] (and logits [N,1008] when asked)."""

    def __init__(self):
        super().__init__()
        self.Conv2d_1a_3x3 = ConvBN(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = ConvBN(32, 32, 3)
        self.Conv2d_2b_3x3 = ConvBN(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = ConvBN(64, 80, 1)
        self.Conv2d_4a_3x3 = ConvBN(80, 192, 3)
        self.Mixed_5b = InceptionA(192, pool_features=32)
        self.Mixed_5c = InceptionA(256, pool_features=64)
        self.Mixed_5d = InceptionA(288, pool_features=64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = InceptionC(768, channels_7x7=128)
        self.Mixed_6c = InceptionC(768, channels_7x7=160)
        self.Mixed_6d = InceptionC(768, channels_7x7=160)
        self.Mixed_6e = InceptionC(768, channels_7x7=192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = InceptionE(1280, pool='avg')
        self.Mixed_7c = InceptionE(2048, pool='max')
        self.fc = nn.Linear(2048, 1008)              # 1008 classes: the TF graph's softmax width
        self.fused = False

    def pool3(self, x):
        assert x.ndim == 4 and x.shape[1] == 3, f'expected [N,3,H,W], got {list(x.shape)}'
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))        # [N,64,147,147]
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))                           # [N,192,71,71]
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        for name in ('5b', '5c', '5d', '6a', '6b', '6c', '6d', '6e', '7a', '7b', '7c'):
            x = getattr(self, f'Mixed_{name}')(x)                                  # -> [N,2048,8,8]
        return x.mean(dim=(2, 3), dtype=torch.float32)                           # pool_3: global average

    def forward(self, x, logits: bool = False):
        feats = self.pool3(x)
        if not logits:
            return dict(pool3=feats)
        # 'logits_unbiased' (no bias) is what IS uses: NVIDIA's no_output_bias, torch-fidelity's default.
        unbiased = feats @ self.fc.weight.T
        return dict(pool3=feats, logits_unbiased=unbiased, logits=unbiased + self.fc.bias)

    @torch.no_grad()
    def fuse(self):
        """Fold BatchNorms and merge shared-input 1x1 convs (inference only; state_dict changes)."""
        if self.fused:
            return self
        for m in list(self.modules()):
            if isinstance(m, ConvBN):
                m.fold()
        for m in list(self.modules()):
            if isinstance(m, _Block) and m.heads:
                m.merge_heads()
        self.fused = True
        return self


def load_inception_state_dict(model: InceptionV3FID, state_dict: dict) -> InceptionV3FID:
    """Strict load, except that `num_batches_tracked` counters (absent from older files) may be missing."""
    return load_checked_state_dict(model, state_dict, 'FID Inception')


def load_inception_pth(path, device='cpu') -> InceptionV3FID:
    """Build the network from a `pt_inception-2015-12-05-*.pth` file (a plain state_dict; no pickle code runs)."""
    state_dict = load_tensors(path, INCEPTION_PTH)
    model = load_checked_state_dict(InceptionV3FID(), state_dict, 'FID Inception', source=path)
    return model.eval().requires_grad_(False).to(device)


@torch.no_grad()
def random_inception_state_dict(seed: int = 0) -> dict:
    """Random weights in the exact layout of the real file, scaled so activations stay O(1).

    For tests and benchmarks only (the real file cannot be downloaded everywhere).
    """
    gen = torch.Generator().manual_seed(seed)
    sd = {}
    for k, v in InceptionV3FID().state_dict().items():
        if k.endswith('conv.weight'):
            fan_in = v[0].numel()
            sd[k] = torch.randn(v.shape, generator=gen) * (2.0 / fan_in) ** 0.5     # He init keeps ReLU nets O(1)
        elif k.endswith('bn.weight'):
            sd[k] = 0.8 + 0.4 * torch.rand(v.shape, generator=gen)
        elif k.endswith('bn.bias') or k.endswith('running_mean'):
            sd[k] = 0.1 * torch.randn(v.shape, generator=gen)
        elif k.endswith('running_var'):
            sd[k] = 0.5 + torch.rand(v.shape, generator=gen)
        elif k.endswith('num_batches_tracked'):
            sd[k] = torch.zeros((), dtype=torch.long)
        else:                                                                     # fc
            sd[k] = torch.randn(v.shape, generator=gen) * 0.05
    return sd
