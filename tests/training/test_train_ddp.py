"""Data parallel on the CPU: 2 processes (gloo) x batch 2 must train like 1 process x batch 4."""

import torch

from pstyle.models import checkpoint
from pstyle.training import run_dir as rd
from pstyle.training.launch import train
import pstyle_tests_train_helpers as H  # registered by conftest.py

# Noise inputs draw from each process's own RNG, and ADA's per-sample draws too: off, so that the
# two runs see the same numbers. Latents, style mixing, path-length noise, data order and
# minibatch-std groups are per sample by design and stay on.
NO_NOISE = {'G_kwargs': {'synthesis_kwargs': {'use_noise': False}}}


def test_two_processes_match_one(tmp_path):
    data = H.make_dataset(tmp_path / 'shapes')  # One thread per process (conftest.py): same kernels in both runs.
    common = dict(aug='noaug', p=None, kimg=0.016, mbstd=2)
    one = train(H.tiny_options(tmp_path / 'one', data, gpus=1, **common), echo=False, cfg_overrides=NO_NOISE)
    two = train(H.tiny_options(tmp_path / 'two', data, gpus=2, **common), echo=False, cfg_overrides=NO_NOISE)
    assert two is not None and 'gpus2' in two.parent.name and 'gpus1' in one.parent.name
    a, b = checkpoint.load_network(one), checkpoint.load_network(two)
    sa, sb = (rd.load_training_state(rd.snapshot_paths(run.parent, rd.snapshot_nimg(run.name))[1]) for run in (one, two))
    assert sa['cur_nimg'] == sb['cur_nimg'] == 16 and sb['world_size'] == 2 and len(sb['rng']) == 2
    for key in ('G', 'D', 'G_ema'):
        mean, off = _difference(a[key], b[key])
        # Summation order differs (all-reduce of two halves, and oneDNN picks other kernels for batch 2
        # than for batch 4). Adam normalises each step, so an element whose gradient is ~0 can move by up
        # to its 2.5e-3 step either way: measured on AVX-512, 8 of 45k G elements differ by > 1e-4, the
        # mean by 1.6e-6. A wrong reduction (sum instead of mean, a missing rank) moves most elements.
        assert mean < 1e-5 and off < 1e-3, (key, mean, off)
    assert abs(sa['loss']['pl_mean'].item() - sb['loss']['pl_mean'].item()) < 1e-5
    # The comparison can fail: the same run with a different seed differs by far more than the tolerance.
    other = train(H.tiny_options(tmp_path / 'other', data, gpus=1, seed=1, **common), echo=False, cfg_overrides=NO_NOISE)
    mean, off = _difference(a['G'], checkpoint.load_network(other)['G'])
    assert mean > 1e-4 and off > 0.1, (mean, off)


def _difference(net_a, net_b):
    """(mean |a - b|, fraction of elements with |a - b| > 1e-4) over every tensor of the state dicts."""
    ta, tb = net_a.state_dict(), net_b.state_dict()
    diff = torch.cat([(ta[n].double() - tb[n].double()).abs().flatten() for n in ta])
    return diff.mean().item(), (diff > 1e-4).double().mean().item()

def test_distributed_helpers_are_noops_in_one_process(monkeypatch):
    from pstyle.torch_utils import distributed
    for var in ('RANK', 'WORLD_SIZE', 'LOCAL_RANK'):
        monkeypatch.delenv(var, raising=False)
    assert not distributed.launched_by_torchrun()
    assert (distributed.get_rank(), distributed.get_world_size(), distributed.is_main()) == (0, 1, True)
    t = torch.tensor([1.0, 2.0])
    assert distributed.all_reduce_mean(t) is t and t.tolist() == [1.0, 2.0]
    assert distributed.all_gather_object({'a': 1}) == [{'a': 1}] and distributed.broadcast_object(3) == 3
    assert distributed.backend_for('cpu') == 'gloo' and distributed.backend_for('cuda:0') == 'nccl'
    monkeypatch.setenv('RANK', '0')
    monkeypatch.setenv('WORLD_SIZE', '2')
    monkeypatch.setenv('LOCAL_RANK', '0')
    assert distributed.launched_by_torchrun() and distributed.local_rank() == 0
