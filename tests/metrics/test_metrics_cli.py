"""`pstyle metrics` smoke tests through click's CliRunner."""

import json

import pytest
import torch
from click.testing import CliRunner

from pstyle.cli import main


def _run(args):
    return CliRunner().invoke(main, ['metrics'] + args, catch_exceptions=False)


def test_help_lists_the_interface():
    r = _run(['--help'])
    assert r.exit_code == 0
    for opt in ('--metrics', '--real', '--fake', '--network', '--num-gen', '--protocol', '--inception-weights', '--json'):
        assert opt in r.output


def test_fid_kid_json_and_results_file(tmp_path, inception_pth, imgtools):
    real = imgtools.write_folder(tmp_path / 'r', imgtools.make_images(3, seed=1))
    fake = imgtools.write_folder(tmp_path / 'f', imgtools.make_images(3, offset=60, seed=2))
    results = tmp_path / 'res.jsonl'
    args = ['--metrics', 'fid,kid', '--real', real, '--fake', fake, '--inception-weights', inception_pth,
            '--kid-subset-size', '2', '--kid-subsets', '3', '--workers', '0', '--device', 'cpu',
            '--results', str(results)]
    r = _run(args + ['--json'])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert set(out) >= {'fid', 'kid_mean', 'kid_std', 'meta'} and out['fid'] > 0
    assert out['meta']['protocol'] == 'legacy_tf' and out['meta']['real']['num_items'] == 3
    lines = [json.loads(x) for x in results.read_text().splitlines()]
    assert [x['metric'] for x in lines] == ['fid', 'kid'] and lines[0]['results']['fid'] == out['fid']
    r = _run(args)                                                     # human-readable; appends again
    assert r.exit_code == 0 and 'fid' in r.output and 'legacy_tf' in r.output
    assert len(results.read_text().splitlines()) == 4


def test_kid_on_too_few_images_keeps_the_fid(tmp_path, inception_pth, imgtools):
    """The KID error names the CLI option; the FID computed from the same features is printed and recorded first."""
    real = imgtools.write_folder(tmp_path / 'r', imgtools.make_images(3, seed=1))
    fake = imgtools.write_folder(tmp_path / 'f', imgtools.make_images(3, offset=60, seed=2))
    results = tmp_path / 'res.jsonl'
    args = ['--metrics', 'fid,kid', '--real', real, '--fake', fake, '--inception-weights', inception_pth,
            '--kid-subset-size', '5', '--workers', '0', '--device', 'cpu', '--results', str(results)]
    r = CliRunner().invoke(main, ['metrics'] + args)
    assert r.exit_code == 1
    assert 'KID subset size 5 exceeds the number of images (generated: 3, real: 3); lower --kid-subset-size' in r.output
    assert r.output.index('fid ') < r.output.index('KID subset size')
    lines = [json.loads(x) for x in results.read_text().splitlines()]
    assert [x['metric'] for x in lines] == ['fid'] and lines[0]['results']['fid'] > 0
    r = CliRunner().invoke(main, ['metrics'] + args + ['--json'])
    out = json.loads(r.output.splitlines()[0])
    assert r.exit_code == 1 and out['fid'] == lines[0]['results']['fid'] and 'kid' in out['errors']


@pytest.mark.parametrize('extra,message', [
    (['--metrics', 'fdi'], 'unknown metric(s) fdi'),
    (['--metrics', 'ppl'], 'ppl needs a network (--network)'),
    (['--metrics', 'fid', '--protocol', 'clean', '--kid-subset-size', '1'], 'Invalid value for \'--kid-subset-size\''),
])
def test_bad_requests(tmp_path, imgtools, extra, message):
    real = imgtools.write_folder(tmp_path / 'r', imgtools.make_images(2))
    r = CliRunner().invoke(main, ['metrics', '--real', real, '--fake', real] + extra)
    assert r.exit_code != 0 and message in r.output


def test_empty_folder_and_missing_weights(tmp_path, imgtools, monkeypatch):
    real = imgtools.write_folder(tmp_path / 'r', imgtools.make_images(2))
    (tmp_path / 'empty').mkdir()
    r = CliRunner().invoke(main, ['metrics', '--real', real, '--fake', str(tmp_path / 'empty')])
    assert r.exit_code == 1 and 'empty: no images found' in r.output
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'th'))
    monkeypatch.setattr(torch.hub, '_hub_dir', None)
    r = CliRunner().invoke(main, ['metrics', '--real', real, '--fake', real, '--device', 'cpu'])
    assert r.exit_code == 1 and 'pt_inception-2015-12-05-6726825d.pth not found' in r.output
    assert 'https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/' in r.output
    r = CliRunner().invoke(main, ['metrics', '--metrics', 'lpips', '--real', real, '--fake', real, '--device', 'cpu'])
    assert r.exit_code == 1 and 'vgg16-397923af.pth' in r.output and 'hub/checkpoints' in r.output


def test_network_input(tmp_path, inception_pth, imgtools, tiny_network_factory):
    from pstyle.models.checkpoint import save_network
    G = tiny_network_factory(seed=0, resolution=32)
    save_network(str(tmp_path / 'g.pt'), G_ema=G)
    real = imgtools.write_folder(tmp_path / 'r', imgtools.make_images(2, size=32))
    r = _run(['--metrics', 'fid', '--real', real, '--network', str(tmp_path / 'g.pt'), '--num-gen', '2',
              '--trunc', '0.7', '--inception-weights', inception_pth, '--workers', '0', '--device', 'cpu',
              '--results', str(tmp_path / 'res.jsonl'), '--json'])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out['fid'] > 0 and out['meta']['generated']['type'] == 'network'
    assert out['meta']['generated']['seeds'] == [0, 1] and out['meta']['generated']['truncation_psi'] == 0.7
