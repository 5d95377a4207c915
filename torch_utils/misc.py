"""Small helpers shared by the networks, the training loop and the tools."""

import contextlib

import numpy as np
import torch


def assert_shape(tensor, ref_shape):
    """Assert `tensor.shape` matches `ref_shape`, where None in `ref_shape` matches any size."""
    if tensor.ndim != len(ref_shape):
        raise AssertionError(f'Wrong number of dimensions: got {tensor.ndim}, expected {len(ref_shape)}')
    for idx, (size, ref_size) in enumerate(zip(tensor.shape, ref_shape)):
        if ref_size is not None and int(size) != int(ref_size):
            raise AssertionError(f'Wrong size for dimension {idx}: got {int(size)}, expected {int(ref_size)}')


def seed_latents(seeds, z_dim, device='cpu'):
    """z for each seed as NVIDIA's scripts draw it: `RandomState(seed).randn(1, z_dim)`.

    One generator per seed, so image k is the same at any batch size.
    """
    z = np.stack([np.random.RandomState(int(seed)).randn(z_dim) for seed in seeds])
    return torch.from_numpy(z).to(device=device, dtype=torch.float32)  # [N, z_dim]


@contextlib.contextmanager
def ddp_sync(module, sync):
    """Skip DDP's gradient all-reduce on accumulation rounds (no-op for plain modules)."""
    if sync or not isinstance(module, torch.nn.parallel.DistributedDataParallel):
        yield
    else:
        with module.no_sync():
            yield


def params_and_buffers(module):
    return list(module.parameters()) + list(module.buffers())


def named_params_and_buffers(module):
    return list(module.named_parameters()) + list(module.named_buffers())


@torch.no_grad()
def copy_params_and_buffers(src_module, dst_module, require_all=False):
    """Copy tensors by name; with `require_all`, every destination tensor must exist in the source."""
    src = dict(named_params_and_buffers(src_module))
    for name, tensor in named_params_and_buffers(dst_module):
        if name in src:
            tensor.copy_(src[name].detach()).requires_grad_(tensor.requires_grad)
        elif require_all:
            raise KeyError(f'{name} missing from the source network')


def device_of(module):
    """The device of a module's first parameter or buffer (CPU for empty modules)."""
    for tensor in params_and_buffers(module):
        return tensor.device
    return torch.device('cpu')
