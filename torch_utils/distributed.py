"""torch.distributed helpers: torchrun environment, NCCL on GPUs / gloo on the CPU, and no-ops when
the run has a single process (so the training code calls them unconditionally)."""

import atexit
import datetime
import os

import torch
import torch.distributed as dist
from pstyle.torch_utils import misc

TORCHRUN_VARS = ('RANK', 'WORLD_SIZE', 'LOCAL_RANK', 'MASTER_ADDR', 'MASTER_PORT')


def is_initialized():
    return dist.is_available() and dist.is_initialized()


def get_rank():
    return dist.get_rank() if is_initialized() else 0


def get_world_size():
    return dist.get_world_size() if is_initialized() else 1


def is_main():
    return get_rank() == 0


def launched_by_torchrun():
    """True when torchrun (or any launcher setting its variables) started this process."""
    return all(v in os.environ for v in ('RANK', 'WORLD_SIZE', 'LOCAL_RANK'))


def local_rank():
    return int(os.environ.get('LOCAL_RANK', 0))


def backend_for(device):
    """NCCL for CUDA devices, gloo otherwise."""
    return 'nccl' if torch.device(device).type == 'cuda' else 'gloo'


def init(device, rank=None, world_size=None, init_method=None, timeout_s=1800):
    """Join the process group. From torchrun's environment by default (init_method 'env://')."""
    if is_initialized():
        return
    rank = int(os.environ['RANK']) if rank is None else rank
    world_size = int(os.environ['WORLD_SIZE']) if world_size is None else world_size
    if world_size <= 1:
        return
    if torch.device(device).type == 'cuda':
        torch.cuda.set_device(torch.device(device))
    dist.init_process_group(backend=backend_for(device), init_method=init_method or 'env://', rank=rank,
                            world_size=world_size, timeout=datetime.timedelta(seconds=timeout_s))


def shutdown():
    if is_initialized():
        dist.destroy_process_group()


def init_from_env(device=None, timeout_s=1800):
    """Device of this process, joining torchrun's process group when WORLD_SIZE > 1.

    `device` None, 'auto' or 'cuda' means cuda:LOCAL_RANK when CUDA is available (None/'auto': the CPU
    otherwise). The group is left at interpreter exit: a process that exits while gloo's worker threads
    are alive aborts with "terminate called without an active exception" (SIGABRT), so a finished rank
    would make torchrun report the whole run as failed.
    """
    if device in (None, 'auto'):
        device = misc.default_device()
    device = torch.device(device)
    if device.type == 'cuda' and device.index is None:
        device = torch.device('cuda', local_rank())
    if int(os.environ.get('WORLD_SIZE', '1')) > 1 and not is_initialized():
        init(device, timeout_s=timeout_s)
        atexit.register(shutdown)
    elif device.type == 'cuda':
        torch.cuda.set_device(device)
    return device


def barrier():
    if is_initialized():
        dist.barrier()


def all_reduce_sum(tensor):
    """Sum over processes (in place when distributed); returns the tensor."""
    if is_initialized():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_reduce_mean(tensor):
    """Mean over processes (in place when distributed); returns the tensor."""
    if is_initialized():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        tensor /= get_world_size()
    return tensor


def all_gather_names(names):
    """Sorted union of a list of strings over processes."""
    if not is_initialized():
        return list(names)
    gathered = [None] * get_world_size()
    dist.all_gather_object(gathered, list(names))
    return sorted(set(n for part in gathered for n in part))


@torch.no_grad()
def broadcast_module(module, src=0):
    """Copy every parameter and buffer of `module` from process `src` to all others."""
    if not is_initialized():
        return
    for tensor in list(module.parameters()) + list(module.buffers()):
        dist.broadcast(tensor.data, src=src)


def all_gather_object(obj):
    """[obj of rank 0, obj of rank 1, ...] on every process."""
    if not is_initialized():
        return [obj]
    out = [None] * get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj, src=0):
    """A picklable object from process `src` on every process."""
    if not is_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]
