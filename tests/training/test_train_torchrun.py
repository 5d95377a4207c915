"""`torchrun --nproc_per_node 2 -m pstyle train ...` on the CPU (gloo): the multi-node code path."""

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from training import checkpoint, run_dir as rd
from training.synthetic import make_shapes_dataset

REPO = Path(__file__).resolve().parents[2]


def test_torchrun_two_processes(tmp_path):
    torchrun = shutil.which('torchrun', path=str(Path(sys.executable).parent)) or shutil.which('torchrun')
    if torchrun is None:
        pytest.fail('torchrun not found next to the Python interpreter; it ships with torch')
    data = make_shapes_dataset(tmp_path / 'shapes', num_images=8, resolution=16)
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=str(REPO))
    with socket.socket() as sock:  # torchrun's static rendezvous needs a concrete free port.
        sock.bind(('127.0.0.1', 0))
        port = sock.getsockname()[1]
    cmd = [torchrun, '--nproc_per_node', '2', '--master_addr', '127.0.0.1', '--master_port', str(port), '-m', 'pstyle', 'train', '--data', str(data),
           '--outdir', str(tmp_path / 'runs'), '--cfg', 'tiny', '--batch', '4', '--mbstd', '2', '--kimg', '0.008',
           '--tick', '0.004', '--grid', '2x1', '--workers', '0', '--device', 'cpu']
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    runs = list((tmp_path / 'runs').iterdir())
    assert len(runs) == 1 and 'gpus2' in runs[0].name  # one run dir, chosen by rank 0
    assert res.stdout.count('tick 2') == 1  # only rank 0 logs
    net, state = rd.latest_snapshot(runs[0])
    assert rd.load_training_state(state)['world_size'] == 2
    assert set(checkpoint.load_network(net)) >= {'G', 'D', 'G_ema'}
