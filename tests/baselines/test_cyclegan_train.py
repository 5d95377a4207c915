"""CycleGAN training: the toy translation, determinism, exact resume (crash, kill -9), torchrun, the run
directory, files `pstyle cyclegan` loads, bad input."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from pstyle.baselines import cyclegan
from pstyle.baselines import translator_train as tt
from pstyle.baselines.cyclegan_train import CycleganTrainConfig, CycleganTrainer, cycle_error, cyclegan_train
from pstyle.baselines.patchgan import ImagePool, NLayerDiscriminator, min_size
from pstyle.cli import main

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
QUIET = dict(device='cpu', log=lambda _: None)


@pytest.fixture(scope='module')
def folders(tmp_path_factory):
    """A: smooth random images; B: the same images with R and B swapped (the toy translation)."""
    root = tmp_path_factory.mktemp('toy')
    for name in 'AB':
        (root / name).mkdir()
    for s in range(6):
        small = np.random.RandomState(s).randint(0, 256, (6, 6, 3), dtype=np.uint8)
        img = np.asarray(Image.fromarray(small).resize((40, 40), Image.BILINEAR))
        Image.fromarray(img).save(root / 'A' / f'{s}.png')
        Image.fromarray(img[:, :, ::-1].copy()).save(root / 'B' / f'{s}.png')
    return root


def _cfg(folders, **kwargs):
    base = dict(a_dir=str(folders / 'A'), b_dir=str(folders / 'B'), iters=6, batch_size=2, crop_size=16, load_size=20,
                ngf=4, n_blocks=1, ndf=4, n_layers_d=1, pool_size=3, snapshot_every=3, log_every=1, lr=1e-3)
    return CycleganTrainConfig(**dict(base, **kwargs))


def _nets(run):
    return {name: torch.load(run / f'latest_net_{name}.pth', weights_only=True) for name in ('G_A', 'G_B', 'D_A', 'D_B')}


def _assert_same_nets(a, b):
    na, nb = _nets(a), _nets(b)
    for name in na:
        for key, value in na[name].items():
            assert torch.equal(value, nb[name][key]), f'{name}.{key} differs'


def _log(run):
    return [{k: v for k, v in json.loads(line).items() if k != 'seconds'} for line in (run / 'log.jsonl').read_text().splitlines()]


@pytest.fixture(scope='module')
def straight(folders, tmp_path_factory):
    run = tmp_path_factory.mktemp('straight')
    cyclegan_train(_cfg(folders), run, **QUIET)
    return run


def test_patchgan_sees_70x70_patches_and_has_the_reference_layout():
    D = NLayerDiscriminator()
    assert [k for k in D.state_dict()] == [f'model.{i}.{w}' for i in (0, 2, 5, 8, 11) for w in ('weight', 'bias')]
    assert D(torch.zeros(1, 3, 256, 256)).shape == (1, 1, 30, 30)
    assert min_size(3) == 24 and D(torch.zeros(1, 3, 24, 24)).shape == (1, 1, 1, 1)
    for i, m in enumerate(D.model):                               # InstanceNorm couples every position: drop it
        if isinstance(m, torch.nn.InstanceNorm2d):                # to see one output's gradient support
            D.model[i] = torch.nn.Identity()
    x = torch.rand(1, 3, 140, 140, requires_grad=True)
    D(x)[0, 0, 5, 5].backward()
    rows = x.grad[0].abs().sum(dim=(0, 2)).nonzero()
    assert int(rows.max() - rows.min()) + 1 == 70


def test_the_image_pool_fills_then_swaps_and_round_trips():
    pool, g = ImagePool(2), torch.Generator().manual_seed(0)
    first = pool.query(torch.arange(2.0).view(2, 1, 1, 1), g)
    assert first.flatten().tolist() == [0.0, 1.0] and len(pool.images) == 2
    out = pool.query(torch.full((20, 1, 1, 1), 7.0), g).flatten().tolist()
    assert {0.0, 1.0} & set(out) and 7.0 in out                     # old images come back, new ones go in
    copy = ImagePool(2)
    copy.load_state_dict(pool.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(copy.images, pool.images))


def test_cycle_error_falls_on_a_toy_translation(folders, tmp_path):
    cfg = _cfg(folders, iters=60, crop_size=32, load_size=36, n_layers_d=2, snapshot_every=60, log_every=10, lr=2e-3)
    images = torch.stack([cyclegan.translate(torch.nn.Identity(), torch.from_numpy(np.array(Image.open(p))).permute(2, 0, 1)[None] / 255.)[0]
                          for p in sorted((folders / 'A').iterdir())])
    untrained = CycleganTrainer(cfg.resolved().check(), 'cpu').nets
    before = cycle_error(untrained['G_A'], untrained['G_B'], images)
    cyclegan_train(cfg, tmp_path, **QUIET)
    G_A, G_B = (cyclegan.load_cyclegan(tmp_path / f'latest_net_{n}.pth')[0] for n in ('G_A', 'G_B'))
    after = cycle_error(G_A, G_B, images)
    print(f'cycle L1 before {before:.4f}, after 60 iterations {after:.4f}')
    assert after < 0.75 * before, (before, after)
    cycle = [line['cycle_A'] + line['cycle_B'] for line in _log(tmp_path)]
    assert np.mean(cycle[-2:]) < np.mean(cycle[:2])


def test_the_run_directory_holds_config_log_snapshots_and_published_networks(straight):
    names = sorted(p.name for p in straight.iterdir())
    assert names == ['config.json', 'latest_net_D_A.pth', 'latest_net_D_B.pth', 'latest_net_G_A.pth', 'latest_net_G_B.pth',
                     'log.jsonl', 'snapshot-0000003.pt', 'snapshot-0000006.pt']
    assert [line['iteration'] for line in _log(straight)] == [1, 2, 3, 4, 5, 6]
    assert json.loads((straight / 'config.json').read_text())['decay_iters'] == 3
    G, info = cyclegan.load_cyclegan(straight / 'latest_net_G_A.pth')   # `pstyle cyclegan --checkpoint` takes it
    assert G.model[1].out_channels == 4 and info['sha256']               # ngf 4, one residual block
    assert sum(isinstance(m, cyclegan.ResnetBlock) for m in G.model) == 1
    state = torch.load(straight / 'snapshot-0000006.pt', weights_only=True)
    assert state['format'] == 'pstyle-cyclegan-train' and state['iteration'] == 6
    assert set(state['nets']) == {'G_A', 'G_B', 'D_A', 'D_B'} and set(state['optimizers']) == set(state['schedulers']) == {'G', 'D'}
    assert state['pools']['fake_A']['images'].shape == (3, 3, 16, 16) and set(state['rng']) == {'torch', 'numpy', 'python'}
    assert state['schedulers']['G']['last_epoch'] == 6


def test_the_learning_rate_is_constant_then_decays_linearly(straight):
    lrs = [line['lr'] for line in _log(straight)]
    rule = tt.linear_decay(6, 3)
    assert lrs == pytest.approx([1e-3 * rule(i) for i in range(1, 7)])
    assert lrs[:2] == [1e-3, 1e-3] and lrs[2] > lrs[3] > lrs[4] > lrs[5] == 0


def test_the_same_seed_gives_the_same_networks_and_another_seed_does_not(straight, folders, tmp_path):
    cyclegan_train(_cfg(folders), tmp_path / 'again', **QUIET)
    _assert_same_nets(straight, tmp_path / 'again')
    cyclegan_train(_cfg(folders, seed=1, iters=1), tmp_path / 'other', **QUIET)
    assert not torch.equal(_nets(tmp_path / 'other')['G_A']['model.1.weight'], _nets(straight)['G_A']['model.1.weight'])


def test_resuming_after_a_crash_gives_identical_networks_and_log(straight, folders, tmp_path):
    def crash(iteration):
        if iteration == 5:                  # after snapshot 3 and the log line of 5, before snapshot 6
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        cyclegan_train(_cfg(folders), tmp_path, fault_hook=crash, **QUIET)
    (tmp_path / '.snapshot-0000006.pt.abc.tmp').write_bytes(b'torn')   # what a kill during a save leaves
    messages = []
    result = cyclegan_train(_cfg(folders), tmp_path, device='cpu', log=messages.append)
    assert result['resumed_from'] == 3 and 'from iteration 3' in messages[0]
    _assert_same_nets(straight, tmp_path)
    assert _log(tmp_path) == _log(straight)                             # lines 4 and 5 are not doubled


@pytest.mark.slow
def test_resuming_after_kill_9_gives_identical_networks(straight, folders, tmp_path):
    # Same thread count as this process: float sums, hence bitwise results, depend on it.
    code = ('import sys, json, torch; from pstyle.baselines.cyclegan_train import CycleganTrainConfig, cyclegan_train; '
            'torch.set_num_threads(int(sys.argv[3])); '
            'cyclegan_train(CycleganTrainConfig(**json.loads(sys.argv[1])), sys.argv[2], device="cpu")')
    cfg = dict(vars(_cfg(folders)), snapshot_every=1)
    proc = subprocess.Popen([sys.executable, '-c', code, json.dumps(cfg), str(tmp_path), str(torch.get_num_threads())],
                            cwd=REPO, env=dict(os.environ, PYTHONPATH=REPO, OMP_NUM_THREADS='1'), stdout=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (tmp_path / 'snapshot-0000002.pt').exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / 'snapshot-0000006.pt').exists(), 'the run finished before it could be killed'
    cyclegan_train(CycleganTrainConfig(**cfg), tmp_path, **QUIET)
    _assert_same_nets(straight, tmp_path)


def _normalised_biases(net):
    """Biases of convolutions followed by InstanceNorm: the norm subtracts them, so their gradient is zero up to
    rounding, which Adam's first steps turn into +-lr moves; they change no output."""
    out = set()
    for prefix, module in net.named_modules():
        if isinstance(module, torch.nn.Sequential):
            kids = list(module.named_children())
            for (name, m), (_, nxt) in zip(kids, kids[1:]):
                if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)) and isinstance(nxt, torch.nn.InstanceNorm2d):
                    out.add(f'{prefix}.{name}.bias' if prefix else f'{name}.bias')
    return out


def test_two_torchrun_processes_compute_what_one_does(folders, tmp_path, torchrun):
    """Each rank takes one sample of the batch of 2; gradients are summed and the pool is global (size 1: the
    second iteration swaps images between the ranks' samples)."""
    cyclegan_train(_cfg(folders, iters=2, pool_size=1, snapshot_every=2), tmp_path / 'one', **QUIET)
    torchrun(['-m', 'pstyle', 'cyclegan-train', '--a', folders / 'A', '--b', folders / 'B', '--outdir', tmp_path / 'two',
              '--iters', 2, '--batch', 2, '--size', 16, '--load-size', 20, '--ngf', 4, '--n-blocks', 1, '--ndf', 4,
              '--n-layers-d', 1, '--pool-size', 1, '--snapshot-every', 2, '--log-every', 1, '--lr', 1e-3, '--device', 'cpu'],
             timeout=240)
    one, two = _nets(tmp_path / 'one'), _nets(tmp_path / 'two')
    skip = {'G': _normalised_biases(cyclegan.ResnetGenerator(ngf=4, n_blocks=1)),
            'D': _normalised_biases(NLayerDiscriminator(ndf=4, n_layers=1))}
    assert 'model.1.bias' in skip['G'] and 'model.10.conv_block.5.bias' in skip['G'] and 'model.2.bias' in skip['D']
    diff = {f'{n}.{k}': float((one[n][k] - two[n][k]).abs().max()) for n in one for k in one[n] if k not in skip[n[0]]}
    assert max(diff.values()) < 1e-5, sorted(diff.items(), key=lambda kv: -kv[1])[:3]
    assert [line['iteration'] for line in _log(tmp_path / 'two')] == [1, 2]
    assert _log(tmp_path / 'two')[-1]['cycle_A'] == pytest.approx(_log(tmp_path / 'one')[-1]['cycle_A'], rel=1e-5)


def test_resuming_with_other_options_is_refused(straight, folders):
    with pytest.raises(ValueError, match=r'started with other options \(lambda_cycle: 10.0 -> 5.0\).*only --iters, '):
        cyclegan_train(_cfg(folders, lambda_cycle=5.0), straight, **QUIET)


def test_an_empty_folder_is_named(folders, tmp_path):
    (tmp_path / 'empty').mkdir()
    with pytest.raises(ValueError, match=f'folder B \\({tmp_path / "empty"}\\) has no images'):
        cyclegan_train(_cfg(folders, b_dir=str(tmp_path / 'empty')), tmp_path / 'run', **QUIET)
    with pytest.raises(ValueError, match='folder A \\(/nowhere\\) does not exist'):
        cyclegan_train(_cfg(folders, a_dir='/nowhere'), tmp_path / 'run', **QUIET)


def test_an_unreadable_image_is_named_before_training(folders, tmp_path):
    (tmp_path / 'A').mkdir()
    Image.open(folders / 'A' / '0.png').save(tmp_path / 'A' / '0.png')
    (tmp_path / 'A' / '1.png').write_bytes(b'\x89PNG\r\n\x1a\n truncated')
    with pytest.raises(ValueError, match=f'{tmp_path / "A" / "1.png"}: cannot read image'):
        cyclegan_train(_cfg(folders, a_dir=str(tmp_path / 'A')), tmp_path / 'run', **QUIET)
    assert not (tmp_path / 'run').exists()


@pytest.mark.parametrize('kwargs, message', [
    (dict(crop_size=24), 'crop size 24 is larger than load size 20'),
    (dict(crop_size=12, n_layers_d=3), 'crop size must be a multiple of 4 and >= 24'),
    (dict(decay_iters=7), r'decay iterations must be in \[0, iters=6\], got 7'),
])
def test_bad_options_are_refused(folders, tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        cyclegan_train(_cfg(folders, **kwargs), tmp_path, **QUIET)


def test_cli_trains_resumes_and_the_generator_runs_with_pstyle_cyclegan(folders, tmp_path):
    args = ['cyclegan-train', '--a', folders / 'A', '--b', folders / 'B', '--outdir', tmp_path / 'run', '--size', 16,
            '--load-size', 20, '--ngf', 4, '--n-blocks', 1, '--ndf', 4, '--n-layers-d', 1, '--snapshot-every', 1]
    result = CliRunner().invoke(main, [str(a) for a in args + ['--iters', 1, '--decay-iters', 0]])
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(main, [str(a) for a in args + ['--iters', 2, '--decay-iters', 0]])
    assert result.exit_code == 0 and 'resuming' in result.output and 'iteration 2;' in result.output, result.output
    result = CliRunner().invoke(main, [str(a) for a in args + ['--iters', 2, '--seed', 1]])
    assert result.exit_code == 1 and 'started with other options (seed: 0 -> 1)' in result.output
    result = CliRunner().invoke(main, ['cyclegan', '--checkpoint', str(tmp_path / 'run' / 'latest_net_G_A.pth'),
                                       '--input', str(folders / 'A'), '--outdir', str(tmp_path / 'out')])
    assert result.exit_code == 0 and '6 done, 0 failed' in result.output, result.output
    assert Image.open(tmp_path / 'out' / '0.png').size == (40, 40)
