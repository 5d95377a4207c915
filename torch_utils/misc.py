"""Small helpers shared by the networks, the training loop and the tools."""


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



def params_and_buffers(module):
    return list(module.parameters()) + list(module.buffers())


def named_params_and_buffers(module):
    return list(module.named_parameters()) + list(module.named_buffers())



def device_of(module):
    """The device of a module's first parameter or buffer (CPU for empty modules)."""
    for tensor in params_and_buffers(module):
        return tensor.device
    return torch.device('cpu')


def default_device():
    """The device of `--device auto`: 'cuda' when a GPU is available, else 'cpu' (the one place this is decided)."""
    return 'cuda' if torch.cuda.is_available() else 'cpu'
