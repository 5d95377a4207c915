"""torch.distributed helpers for metrics under `torchrun`: each rank handles a shard, rank 0 reports."""

import torch
import torch.distributed as dist
from pstyle.torch_utils import distributed as D


def rank_world():
    return D.get_rank(), D.get_world_size()


def init_from_env(device=None):
    """Join the process group that torchrun describes (WORLD_SIZE > 1); returns the device to use."""
    return D.init_from_env(device)


def shard(n: int, rank: int, world: int):
    """Indices of rank `rank`: contiguous batches interleaved across ranks keep the order easy to restore."""
    return list(range(rank, n, world))


def gather_rows(rows: torch.Tensor, indices: torch.Tensor, n: int) -> torch.Tensor:
    """Reassemble [n, D] in index order from the per-rank rows (all ranks get the full result)."""
    rank, world = rank_world()
    rows, indices = rows.cpu(), indices.cpu().long()
    if world > 1:
        backend_dev = torch.device('cuda', torch.cuda.current_device()) \
            if dist.get_backend() == 'nccl' else torch.device('cpu')
        # Pad to a common shape: all_gather needs equal shapes on every rank, and a rank without items
        # (n < world size) does not know the feature width.
        meta = torch.tensor([len(rows), rows.shape[1] if len(rows) and rows.ndim > 1 else -1], device=backend_dev)
        metas = [torch.zeros(2, dtype=torch.long, device=backend_dev) for _ in range(world)]
        dist.all_gather(metas, meta)
        m = max(int(x[0].item()) for x in metas)
        width = max(int(x[1].item()) for x in metas)
        if not len(rows) and width > 0:
            rows = torch.zeros((0, width), dtype=rows.dtype)
        pad_rows = torch.zeros((m,) + tuple(rows.shape[1:]), dtype=rows.dtype)
        pad_rows[:len(rows)] = rows
        pad_idx = torch.full((m,), -1, dtype=torch.long)
        pad_idx[:len(indices)] = indices
        all_rows = [torch.empty_like(pad_rows, device=backend_dev) for _ in range(world)]
        all_idx = [torch.empty_like(pad_idx, device=backend_dev) for _ in range(world)]
        dist.all_gather(all_rows, pad_rows.to(backend_dev))
        dist.all_gather(all_idx, pad_idx.to(backend_dev))
        rows = torch.cat([r.cpu() for r in all_rows])
        indices = torch.cat([i.cpu() for i in all_idx])
        keep = indices >= 0
        rows, indices = rows[keep], indices[keep]
    out = torch.empty((n,) + tuple(rows.shape[1:]), dtype=rows.dtype)
    assert len(indices) == n and torch.equal(indices.sort().values, torch.arange(n)), 'shards do not cover 0..n-1'
    out[indices] = rows
    return out
