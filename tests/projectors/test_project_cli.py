"""`pstyle project` through click: a folder run, rendering the result, option handling, bad inputs."""

import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from pstyle.cli import main
from pstyle import cmd_project as C
from pstyle.models import deltas
from pstyle.models.checkpoint import save_network

QUICK = ['--steps', '3', '--lpips-weight', '0', '--mse-weight', '1', '--set', 'w_avg_samples=100', '--device', 'cpu']


@pytest.fixture(scope='module')
def network(tmp_path_factory, tiny_network_factory):
    G = tiny_network_factory(seed=1)
    path = tmp_path_factory.mktemp('net') / 'tiny.pt'
    save_network(path, G_ema=G)
    return path


@pytest.fixture
def photos(tmp_path):
    src = tmp_path / 'photos'
    src.mkdir()
    for k in range(3):
        Image.fromarray(np.random.RandomState(k).randint(0, 256, (16, 16, 3), dtype=np.uint8)).save(src / f'p{k}.png')
    Image.new('RGB', (20, 16)).save(src / 'wide.png')
    return src


def test_project_then_generate(network, photos, tmp_path):
    out = tmp_path / 'out'
    result = CliRunner().invoke(main, ['project', '--network', str(network), '-i', str(photos), '--outdir', str(out),
                                       '--preset', 'fast', '--batch', '2', '--noise', *QUICK])
    assert result.exit_code == 0, result.output
    assert 'projected 3 image(s)' in result.output and 'wide.png: image is 20x16, not square' in result.output
    doc = json.loads((out / 'metrics.json').read_text())
    assert doc['settings']['project']['optimize_noise'] is True and doc['settings']['project']['num_steps'] == 3
    assert doc['network_sha256'] and len(doc['network_sha256']) == 64
    with np.load(out / 'latents.npz') as data:
        assert data['ws'].shape == (3, 6, 16) and str(data['space']) == 'w+'
        assert str(data['network_sha256']) == doc['network_sha256']
    rendered = CliRunner().invoke(main, ['generate', '--network', str(network), '--projected-w', str(out / 'latents.npz'),
                                         '--outdir', str(tmp_path / 'renders'), '--device', 'cpu'])
    assert rendered.exit_code == 0, rendered.output
    assert sorted(p.name for p in (tmp_path / 'renders').iterdir()) == ['p0.png', 'p1.png', 'p2.png']


def test_crop_option_and_w_space(network, photos, tmp_path):
    out = tmp_path / 'out'
    result = CliRunner().invoke(main, ['project', '--network', str(network), '-i', str(photos / 'wide.png'), '--outdir', str(out),
                                       '--crop', 'center', '--space', 'w', *QUICK])
    assert result.exit_code == 0, result.output
    with np.load(out / 'latents.npz') as data:
        ws = data['ws']
        assert list(data['names']) == ['wide'] and str(data['space']) == 'w'
    assert np.allclose(ws[:, :1], ws)


def test_nothing_projected_exits_1(network, photos, tmp_path):
    result = CliRunner().invoke(main, ['project', '--network', str(network), '-i', str(photos / 'wide.png'), '--outdir',
                                       str(tmp_path / 'out'), *QUICK])
    assert result.exit_code == 1
    assert 'projected 0 image(s)' in result.output and 'not square' in result.output


def test_option_errors(network, photos, tmp_path):
    run = lambda *args: CliRunner().invoke(main, ['project', '--network', str(network), '-i', str(photos), '--outdir', str(tmp_path / 'o'), *args])
    result = run('--set', 'bogus=1', *QUICK)
    assert result.exit_code == 1 and 'unknown projection settings: bogus' in result.output
    result = run('--set', 'nonsense', *QUICK)
    assert result.exit_code == 2 and 'expected KEY=VALUE' in result.output
    result = run('--set', 'pti.alpha=3', '--pti', *QUICK)
    assert result.exit_code == 1 and 'unknown PTI settings: alpha' in result.output
    result = run('--precision', 'fp16', *QUICK)
    assert result.exit_code == 1 and 'fp16 needs a CUDA device' in result.output
    result = CliRunner().invoke(main, ['project', '--network', str(tmp_path / 'none.pt'), '-i', str(photos), '--outdir', str(tmp_path / 'o')])
    assert result.exit_code != 0


def test_missing_vgg_weights_named(network, photos, tmp_path, monkeypatch):
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch'))
    result = CliRunner().invoke(main, ['project', '--network', str(network), '-i', str(photos), '--outdir', str(tmp_path / 'o'),
                                       '--steps', '1', '--device', 'cpu'])
    assert result.exit_code == 1
    assert 'vgg16-397923af.pth' in result.output and str(tmp_path / 'torch' / 'hub' / 'checkpoints') in result.output
    assert 'Or run without LPIPS/VGG: --lpips-weight 0 --mse-weight 1.' in result.output


def test_lpips_weight_0_runs_projection_and_pti_without_vgg(network, photos, tmp_path, monkeypatch):
    """`--lpips-weight 0` means no LPIPS anywhere in the command: PTI needs no VGG file and no extra --set keys."""
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'empty_torch_home'))
    (photos / 'wide.png').unlink()
    result = CliRunner().invoke(main, ['project', '--network', str(network), '-i', str(photos / 'p0.png'),
                                       '--outdir', str(tmp_path / 'o'), '--pti', '--pti-steps', '1', *QUICK])
    assert result.exit_code == 0, result.output
    doc = json.loads((tmp_path / 'o' / 'metrics.json').read_text())
    assert doc['settings']['pti']['lpips_weight'] == 0 and doc['settings']['pti']['regularizer_lpips_weight'] == 0


def test_presets_and_pti_options():
    cfg, pti = C.build_configs('best', {}, None, {})
    assert (cfg.num_steps, cfg.space, cfg.optimize_noise) == (1000, 'w+', True) and pti.num_steps == 350
    cfg, pti = C.build_configs('best', {'precision': 'bf16'}, False, {})
    assert pti is None and cfg.precision == 'bf16'
    cfg, pti = C.build_configs('fast', {}, True, {'num_steps': 20, 'trainable': 'synthesis.b8.*', 'delta_dtype': 'fp16'})
    assert pti.num_steps == 20 and pti.trainable == ('synthesis.b8.*',) and pti.delta_dtype == 'fp16'
    project, pti_over = C._parse_sets(['space=w', 'initial_noise_factor=0.1', 'pti.regularizer_alpha=20', 'optimize_noise=false'])
    assert project == dict(space='w', initial_noise_factor=0.1, optimize_noise=False) and pti_over == dict(regularizer_alpha=20)
    _, pti = C.build_configs('best', {'lpips_weight': 0, 'mse_weight': 1}, None, {})
    assert (pti.lpips_weight, pti.regularizer_lpips_weight, pti.l2_weight) == (0, 0, 1)


def test_torchrun_two_processes_match_one(network, photos, tmp_path, torchrun):
    """`torchrun -m pstyle project`: ranks take every other file, rank 0 merges, results equal one process's."""
    (photos / 'wide.png').unlink()
    args = ['project', '--network', network, '-i', photos, '--batch', '1', '--noise', *QUICK]
    res = torchrun(['-m', 'pstyle', *args, '--outdir', tmp_path / 'two'], timeout=240)
    assert res.stdout.count('projected 3 image(s)') == 1            # only rank 0 reports
    one = CliRunner().invoke(main, [*map(str, args), '--outdir', str(tmp_path / 'one')])
    assert one.exit_code == 0, one.output
    assert sorted(p.name for p in (tmp_path / 'two' / 'shards').iterdir()) == ['rank00', 'rank01']
    with np.load(tmp_path / 'one' / 'latents.npz') as a, np.load(tmp_path / 'two' / 'latents.npz') as b:
        assert list(a['names']) == list(b['names']) == ['p0', 'p1', 'p2']
        np.testing.assert_allclose(b['ws'], a['ws'], atol=1e-5)
        assert np.abs(a['ws'][0] - a['ws'][1]).max() > 1e-3             # different photos, different latents


def test_generate_renders_pti_results(network, photos, tmp_path):
    """`pstyle generate --projected-w --pti` gives back the tuned reconstructions `pstyle project` saved."""
    (photos / 'wide.png').unlink()
    out = tmp_path / 'out'
    result = CliRunner().invoke(main, ['project', '--network', str(network), '-i', str(photos), '--outdir', str(out),
                                       '--pti', '--pti-steps', '2', '--set', 'pti.learning_rate=0.01', *QUICK])
    assert result.exit_code == 0, result.output
    render = lambda *extra: CliRunner().invoke(main, ['generate', '--network', str(network), '--projected-w', str(out / 'latents.npz'),
                                                      '--device', 'cpu', *extra])
    assert render('--outdir', str(tmp_path / 'tuned'), '--pti').exit_code == 0
    assert render('--outdir', str(tmp_path / 'plain')).exit_code == 0
    load = lambda p: np.asarray(Image.open(p))
    for stem in ('p0', 'p1', 'p2'):
        assert np.array_equal(load(tmp_path / 'tuned' / f'{stem}.png'), load(out / 'recon_pti' / f'{stem}.png'))
        assert np.array_equal(load(tmp_path / 'plain' / f'{stem}.png'), load(out / 'recon' / f'{stem}.png'))
        assert not np.array_equal(load(tmp_path / 'tuned' / f'{stem}.png'), load(tmp_path / 'plain' / f'{stem}.png'))
    (out / 'pti' / 'p1.safetensors').unlink()
    result = render('--outdir', str(tmp_path / 'again'), '--pti')
    assert result.exit_code == 1 and 'no PTI delta for p1 beside' in result.output
    result = CliRunner().invoke(main, ['generate', '--network', str(network), '--seeds', '0', '--pti', '--outdir', str(tmp_path / 's')])
    assert result.exit_code == 2 and '--pti goes with --projected-w' in result.output


def test_progress_on_stderr_results_on_stdout(network, photos, tmp_path):
    """Projection and PTI report step, loss, rate and ETA on stderr (plain lines off a terminal); stdout has the result only."""
    args = ['project', '--network', str(network), '-i', str(photos / 'p0.png'), '--pti', '--pti-steps', '2', *QUICK]
    result = CliRunner().invoke(main, [*args, '--outdir', str(tmp_path / 'o')])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [f'projected 1 image(s) into {tmp_path / "o"}/latents.npz; 0 failed']
    err = result.stderr.splitlines()
    first = [line for line in err if line.startswith('project p0.png: step 1/3 loss ')]
    last = [line for line in err if line.startswith('project p0.png: step 3/3 loss ')]
    assert first and 'ETA' in first[0] and last and 'done in' in last[0] and 'step/s' in last[0]
    assert any(line.startswith('pti p0.png: step 1/2 loss ') for line in err)
    assert any(line.startswith('pti p0.png: step 2/2 loss ') and 'done in' in line for line in err)
    quiet = CliRunner().invoke(main, [*args, '--outdir', str(tmp_path / 'q'), '--quiet'])
    assert quiet.exit_code == 0 and 'step 1/3' not in quiet.stderr and quiet.stdout == result.stdout.replace('/o/', '/q/')


def test_pti_rank_stores_the_delta_as_low_rank_factors(network, photos, tmp_path):
    outs = {}
    for rank in ('0', '2'):
        out = tmp_path / f'rank{rank}'
        result = CliRunner().invoke(main, ['project', '--network', str(network), '-i', str(photos / 'p0.png'),
                                           '--outdir', str(out), '--pti', '--pti-steps', '2', '--pti-rank', rank, *QUICK])
        assert result.exit_code == 0, result.output
        [item] = json.loads((out / 'metrics.json').read_text())['items']
        outs[rank] = deltas.load_delta(out / item['pti']['delta'])[0]
    assert not any(isinstance(d, deltas.LowRank) for d in outs['0'].values())
    assert any(isinstance(d, deltas.LowRank) for d in outs['2'].values())
    assert deltas.delta_nbytes(outs['2']) < deltas.delta_nbytes(outs['0'])
