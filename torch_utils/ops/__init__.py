"""Fused ops of StyleGAN2 with a pure-PyTorch `ref` path and a JIT-built CUDA path.

Import the submodules (`from torch_utils.ops import bias_act, upfirdn2d, conv2d_resample`);
nothing is compiled until a CUDA tensor first reaches a CUDA-capable op.
"""
