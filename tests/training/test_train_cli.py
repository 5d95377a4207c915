"""`pstyle train` smoke tests through click's CliRunner."""

import json

import pytest
from click.testing import CliRunner

from pstyle.cli import main
from pstyle.datasets.synthetic import make_shapes_dataset


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    return str(make_shapes_dataset(tmp_path_factory.mktemp('shapes'), num_images=8, resolution=16))


def run(*args):
    return CliRunner().invoke(main, ['train', *args], catch_exceptions=False)


def test_help_lists_the_main_options():
    res = run('--help')
    assert res.exit_code == 0
    for opt in ('--resume', '--freezed', '--freezeg', '--cfg', '--metrics', '--aug', '--gpus', '--dry-run'):
        assert opt in res.output


def test_tiny_training_run(tmp_path, data):
    res = run('--data', data, '--outdir', str(tmp_path), '--cfg', 'tiny', '--batch', '4', '--mbstd', '2',
              '--kimg', '0.008', '--tick', '0.004', '--grid', '2x2', '--workers', '0', '--device', 'cpu')
    assert res.exit_code == 0, res.output
    assert 'tick 2' in res.output and 'Exiting' in res.output
    run_dir = next(tmp_path.glob('00000-*'))
    assert (run_dir / 'network-snapshot-000000-000008img.pt').is_file()


def test_dry_run_prints_the_config(tmp_path, data):
    res = run('--data', data, '--outdir', str(tmp_path), '--cfg', 'paper256', '--gamma', '3', '--dry-run')
    assert res.exit_code == 0, res.output
    cfg = json.loads(res.output)
    assert cfg['loss_kwargs']['r1_gamma'] == 3 and cfg['batch_size'] == 64 and cfg['run_dir'].endswith('paper256-gpus1-batch64')
    assert not list(tmp_path.iterdir())  # nothing written


@pytest.mark.parametrize('args, message', [
    (['--grid', '3by2'], 'expected WxH with positive integers'),
    (['--metrics', 'fid50'], "unknown training metric 'fid50'"),
    (['--cfg', 'huge'], "'huge' is not one of"),
    (['--aug', 'fixed'], '--aug=fixed needs --p'),
    (['--freezeg', '12'], '--freezeg must be one of the generator resolutions [4, 8, 16]'),
    (['--freezed', '50'], '--freezed must be between 0 and 7 '),
])
def test_bad_inputs(tmp_path, data, args, message):
    res = CliRunner().invoke(main, ['train', '--data', data, '--outdir', str(tmp_path), '--cfg', 'tiny', '--batch', '4',
                                    '--kimg', '0.004', '--workers', '0', '--device', 'cpu', '--grid', '1x1', *args])
    assert res.exit_code != 0
    assert message in res.output


def test_missing_data_is_an_error(tmp_path):
    res = CliRunner().invoke(main, ['train', '--outdir', str(tmp_path)])
    assert res.exit_code != 0 and '--data is required' in res.output
