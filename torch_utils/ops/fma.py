"""Fused multiply-add a * b + c (NVIDIA's `fma.fma`), used by the non-fused modulated convolution."""

import torch


def fma(a, b, c):
    """a * b + c with broadcasting; `torch.addcmul` computes it in one pass and is twice differentiable."""
    return torch.addcmul(c, a, b)
