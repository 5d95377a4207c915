"""`torchrun --nproc_per_node 2 -m pstyle train ...` on the CPU (gloo): the multi-node code path."""

from pstyle.models import checkpoint
from pstyle.training import run_dir as rd
from pstyle.datasets.synthetic import make_shapes_dataset


def test_torchrun_two_processes(tmp_path, torchrun):
    data = make_shapes_dataset(tmp_path / 'shapes', num_images=8, resolution=16)
    res = torchrun(['-m', 'pstyle', 'train', '--data', data, '--outdir', tmp_path / 'runs', '--cfg', 'tiny', '--batch', '4',
                        '--mbstd', '2', '--kimg', '0.008', '--tick', '0.004', '--grid', '2x1', '--workers', '0', '--device', 'cpu'],
                       timeout=180)
    runs = list((tmp_path / 'runs').iterdir())
    assert len(runs) == 1 and 'gpus2' in runs[0].name  # one run dir, chosen by rank 0
    assert res.stdout.count('tick 2') == 1  # only rank 0 logs
    net, state = rd.latest_snapshot(runs[0])
    assert rd.load_training_state(state)['world_size'] == 2
    assert set(checkpoint.load_network(net)) >= {'G', 'D', 'G_ema'}
