"""Deterministic, resumable data order.

The stream of training images is the concatenation of permutations `RandomState([seed, epoch])` of
the dataset, so global batch k is a pure function of (seed, k): resuming only needs k. Each process
takes a strided share of every global batch (sample i goes to rank i % world_size), which keeps
NVIDIA's minibatch-std groups identical whether a batch runs on one process or is split.
"""

import numpy as np
import torch


def batch_indices(num_items, batch_size, batch_idx, seed):
    """Dataset indices of global batch `batch_idx` (int64 [batch_size])."""
    start = batch_idx * batch_size
    out = []
    while len(out) < batch_size:
        epoch, offset = divmod(start + len(out), num_items)
        perm = np.random.RandomState([seed & 0xffffffff, epoch]).permutation(num_items)
        out.extend(perm[offset:offset + batch_size - len(out)].tolist())
    return np.asarray(out, dtype=np.int64)


def rank_share(global_items, rank, world_size):
    """This process's strided share of a global batch (works for arrays and tensors)."""
    return global_items[rank::world_size]


class RankBatchSampler(torch.utils.data.Sampler):
    """Infinite batch sampler: this rank's share of global batches start_batch, start_batch + 1, ..."""

    def __init__(self, num_items, batch_size, seed, rank=0, world_size=1, start_batch=0):
        if batch_size % world_size != 0:
            raise ValueError(f'batch size {batch_size} is not a multiple of the {world_size} processes')
        self.num_items = num_items
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.start_batch = start_batch

    def __iter__(self):
        k = self.start_batch
        while True:
            yield rank_share(batch_indices(self.num_items, self.batch_size, k, self.seed), self.rank, self.world_size).tolist()
            k += 1


def real_batches(dataset, batch_size, seed, rank, world_size, start_batch, num_workers, device):
    """Iterator of (images uint8 [n, C, H, W], labels float32 [n, c_dim]) for this rank, from `start_batch`."""
    sampler = RankBatchSampler(len(dataset), batch_size, seed, rank, world_size, start_batch)
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=sampler, num_workers=num_workers,
                                         pin_memory=torch.device(device).type == 'cuda',
                                         persistent_workers=num_workers > 0,
                                         prefetch_factor=2 if num_workers > 0 else None,
                                         # Own generator: the loader's worker seed must not draw from the global RNG.
                                         generator=torch.Generator().manual_seed(seed + start_batch))
    for images, labels in loader:
        yield images, labels
