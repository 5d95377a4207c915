"""AdaIN decoder training: losses, exact resume (stop, crash, kill -9), the run directory, errors."""

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

from pstyle.baselines import adain
from pstyle.baselines.adain_train import AdainTrainConfig, adain_train, content_style_loss
from pstyle.cli import main

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope='module')
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp('data')
    for name, seeds in (('content', range(3)), ('style', range(10, 13))):
        (root / name).mkdir()
        for s in seeds:
            rng = np.random.RandomState(s)
            small = rng.randint(0, 256, (10, 12, 3), dtype=np.uint8)
            Image.fromarray(small).resize((48, 40), Image.BILINEAR).save(root / name / f'{s}.png')
    return root


def _cfg(folders, published, **kwargs):
    base = dict(content_dir=str(folders / 'content'), style_dir=str(folders / 'style'), vgg=str(published['vgg']),
                max_iter=4, batch_size=2, load_size=24, crop_size=16, snapshot_every=2, log_every=1, lr=1e-3)
    return AdainTrainConfig(**dict(base, **kwargs))


def _decoder(run):
    return torch.load(run / 'decoder.pth', weights_only=True)


def _losses(run):
    return [json.loads(line)['loss_style'] for line in (run / 'log.jsonl').read_text().splitlines()]


@pytest.fixture(scope='module')
def straight(folders, published, tmp_path_factory):
    run = tmp_path_factory.mktemp('straight')
    adain_train(_cfg(folders, published), run, device='cpu', log=lambda _: None)
    return run


def test_training_lowers_the_loss_on_a_fixed_batch(published):
    encoder, _, _ = adain.load_adain(published['vgg'], published['decoder'])
    torch.manual_seed(0)
    dec = adain.decoder()
    content, style = torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16)
    opt = torch.optim.Adam(dec.parameters(), lr=1e-3)
    losses = []
    for _ in range(6):
        loss_c, loss_s = content_style_loss(encoder, dec, content, style)
        loss = loss_c + 10 * loss_s
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.8 * losses[0]


def test_the_run_directory_holds_config_log_snapshots_and_a_loadable_decoder(straight, published):
    names = sorted(p.name for p in straight.iterdir())
    assert names == ['config.json', 'decoder.pth', 'log.jsonl', 'snapshot-0000002.pt', 'snapshot-0000004.pt']
    assert [json.loads(line)['iteration'] for line in (straight / 'log.jsonl').read_text().splitlines()] == [1, 2, 3, 4]
    adain.load_adain(published['vgg'], straight / 'decoder.pth')      # the published format: `pstyle adain` uses it
    state = torch.load(straight / 'snapshot-0000004.pt', weights_only=True)
    assert state['iteration'] == 4 and state['format'] == 'pstyle-adain-train'
    assert all(torch.equal(state['decoder'][k], v) for k, v in _decoder(straight).items())


def test_resuming_after_a_stop_gives_the_same_decoder(straight, folders, published, tmp_path):
    adain_train(_cfg(folders, published, max_iter=2), tmp_path, device='cpu', log=lambda _: None)
    messages = []
    result = adain_train(_cfg(folders, published), tmp_path, device='cpu', log=messages.append)
    assert result['resumed_from'] == 2 and 'from iteration 2' in messages[0]
    assert all(torch.equal(v, _decoder(straight)[k]) for k, v in _decoder(tmp_path).items())
    assert _losses(tmp_path) == _losses(straight)


def test_resuming_after_a_crash_gives_the_same_decoder_and_log(straight, folders, published, tmp_path):
    def crash(iteration):
        if iteration == 3:                     # after the log line of iteration 3, before snapshot 4
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        adain_train(_cfg(folders, published), tmp_path, device='cpu', log=lambda _: None, fault_hook=crash)
    (tmp_path / '.snapshot-0000004.pt.abc.tmp').write_bytes(b'torn')    # what a kill during a save leaves
    adain_train(_cfg(folders, published), tmp_path, device='cpu', log=lambda _: None)
    assert all(torch.equal(v, _decoder(straight)[k]) for k, v in _decoder(tmp_path).items())
    assert _losses(tmp_path) == _losses(straight)                       # the line of iteration 3 is not doubled


@pytest.mark.slow
def test_resuming_after_kill_9_gives_the_same_decoder(straight, folders, published, tmp_path):
    # Same thread count as this process: float sums, hence bitwise results, depend on it.
    code = ('import sys, json, torch; from baselines.adain_train import AdainTrainConfig, adain_train; '
            'torch.set_num_threads(int(sys.argv[3])); '
            'cfg = AdainTrainConfig(**json.loads(sys.argv[1])); adain_train(cfg, sys.argv[2], device="cpu")')
    cfg = dict(vars(_cfg(folders, published)), snapshot_every=1)
    proc = subprocess.Popen([sys.executable, '-c', code, json.dumps(cfg), str(tmp_path), str(torch.get_num_threads())],
                            cwd=REPO,
                            env=dict(os.environ, PYTHONPATH=REPO, OMP_NUM_THREADS='1'), stdout=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (tmp_path / 'snapshot-0000001.pt').exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / 'snapshot-0000004.pt').exists(), 'the run finished before it could be killed'
    adain_train(AdainTrainConfig(**cfg), tmp_path, device='cpu', log=lambda _: None)
    assert all(torch.equal(v, _decoder(straight)[k]) for k, v in _decoder(tmp_path).items())


def test_resuming_with_other_options_is_refused(straight, folders, published):
    with pytest.raises(ValueError, match=r'started with other options \(style_weight: 10.0 -> 5.0\).*only --max-iter may change'):
        adain_train(_cfg(folders, published, style_weight=5.0), straight, device='cpu', log=lambda _: None)


def test_unreadable_images_are_skipped_and_reported(folders, published, tmp_path):
    (tmp_path / 'style').mkdir()
    (tmp_path / 'style' / '10.png').write_bytes((folders / 'style' / '10.png').read_bytes())
    (tmp_path / 'style' / '00_broken.png').write_bytes(b'not a png')
    result = adain_train(_cfg(folders, published, style_dir=str(tmp_path / 'style'), max_iter=1, batch_size=8), tmp_path / 'run',
                         device='cpu', log=lambda _: None)
    assert result['skipped'] == [str(tmp_path / 'style' / '00_broken.png')]


@pytest.mark.parametrize('kwargs, message', [
    (dict(content_dir='/nowhere'), 'content folder /nowhere does not exist'),
    (dict(crop_size=32), 'crop size 32 is larger than load size 24'),
])
def test_bad_inputs_are_refused(folders, published, tmp_path, kwargs, message):
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        adain_train(_cfg(folders, published, **kwargs), tmp_path, device='cpu', log=lambda _: None)


def test_cli_trains_and_resumes(folders, published, tmp_path):
    args = ['adain-train', '--content-dir', folders / 'content', '--style-dir', folders / 'style', '--vgg', published['vgg'],
            '--outdir', tmp_path, '--batch', 1, '--load-size', 20, '--crop-size', 16, '--snapshot-every', 1, '--log-every', 1]
    result = CliRunner().invoke(main, [str(a) for a in args + ['--max-iter', 1]])
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(main, [str(a) for a in args + ['--max-iter', 2]])
    assert result.exit_code == 0 and 'resuming' in result.output and 'iteration 2;' in result.output
    result = CliRunner().invoke(main, [str(a) for a in args + ['--max-iter', 2, '--seed', 1]])
    assert result.exit_code == 1 and 'started with other options (seed: 0 -> 1)' in result.output
