"""The training loop on the CPU with a 16x16 network: files, losses, snapshots, exact resume, NaN stop."""

import json
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch

from pstyle.models import checkpoint
from pstyle.training import run_dir as rd
from pstyle.training.launch import ignored_options, train, warn_ignored_options
from pstyle.training.loss import StyleGAN2Loss
from pstyle.training.phases import NonFiniteError
from pstyle.training.train_config import TrainOptions
import pstyle_tests_train_helpers as H  # registered by conftest.py


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    return H.make_dataset(tmp_path_factory.mktemp('shapes'))


def read_stats(run):
    return [json.loads(line) for line in (run / 'stats.jsonl').read_text().splitlines()]


def test_run_writes_everything_and_losses_move(tmp_path, data):
    snap = train(H.tiny_options(tmp_path, data, kimg=0.024), echo=False)
    run = snap.parent
    assert snap.name == 'network-snapshot-000000-000024img.pt'
    for name in ('training_options.json', 'log.txt', 'stats.jsonl', 'reals.png', 'fakes_init.png',
                 'fakes000000-000024img.png', 'training-state-000000-000024img.pt'):
        assert (run / name).is_file(), name
    options = json.loads((run / 'training_options.json').read_text())
    assert options['loss_kwargs']['r1_gamma'] == 0.1 and options['batch_size'] == 4
    stats = read_stats(run)
    assert [s['Progress/tick'] for s in stats] == [1, 2, 3]
    g_losses = [s['Loss/G/loss']['mean'] for s in stats]
    assert all(np.isfinite(g_losses)) and len(set(g_losses)) == 3
    for key in ('Loss/D/loss', 'Loss/r1_penalty', 'Loss/pl_penalty', 'Loss/scores/real', 'Timing/sec_per_kimg'):
        assert key in stats[-1], key
    log = (run / 'log.txt').read_text()
    assert 'tick 3' in log and 'sec/kimg' in log and 'augment' in log
    nets = checkpoint.load_network(snap)
    assert set(nets) >= {'G', 'D', 'G_ema'} and nets['G'].init_kwargs == options['G_kwargs']
    # G_ema moved: the grid of the snapshot differs from the grid at initialization.
    before, after = (np.asarray(PIL.Image.open(run / n)) for n in ('fakes_init.png', 'fakes000000-000024img.png'))
    assert before.shape == after.shape == (2 * 16, 2 * 16, 3) and not np.array_equal(before, after)
    state = rd.load_training_state(run / 'training-state-000000-000024img.pt')
    assert state['cur_nimg'] == 24 and state['batch_idx'] == 6 and state['cur_tick'] == 3
    assert 0 <= state['ada']['p'] and state['ada']['p'] != 0.2
    # TensorBoard (a dev dependency, optional for users): the same per-tick means, at kimg steps.
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = EventAccumulator(str(run)).Reload()
    scalars = events.Scalars('Loss/G/loss')
    assert [e.step for e in scalars] == [0, 0, 0]            # kimg 0.008, 0.016, 0.024 as whole kimg
    assert np.allclose([e.value for e in scalars], g_losses)
    assert 'Progress/augment' in events.Tags()['scalars']


def test_resume_is_bit_exact(tmp_path, data):
    opts = dict(kimg=0.032)
    full = train(H.tiny_options(tmp_path / 'a', data, **opts), echo=False)
    half = train(H.tiny_options(tmp_path / 'b', data, **opts), max_ticks=2, echo=False)
    assert rd.load_training_state(half.with_name('training-state-000000-000016img.pt'))['cur_nimg'] == 16
    resumed = train(H.tiny_options(tmp_path / 'b', data, resume=str(half.parent), **opts), echo=False)
    assert resumed.parent == half.parent  # continued in the same run dir
    a, b = checkpoint.load_network(full), checkpoint.load_network(resumed)
    for key in ('G', 'D', 'G_ema'):
        assert H.state_diff(a[key].state_dict(), b[key].state_dict()) == [], key
    sa = rd.load_training_state(full.with_name('training-state-000000-000032img.pt'))
    sb = rd.load_training_state(resumed.with_name('training-state-000000-000032img.pt'))
    assert sa['cur_nimg'] == sb['cur_nimg'] == 32 and sa['ada'] == sb['ada']
    for key in ('G', 'D'):
        oa, ob = sa['optimizers'][key]['state'], sb['optimizers'][key]['state']
        assert all(torch.equal(oa[i]['exp_avg_sq'], ob[i]['exp_avg_sq']) for i in oa)
    assert torch.equal(sa['loss']['pl_mean'], sb['loss']['pl_mean'])
    assert 'Resumed from' in (half.parent / 'log.txt').read_text()


def test_snapshots_never_replace_each_other_in_runs_shorter_than_1_kimg(tmp_path, data):
    """Every tick's snapshot keeps its own files (named by the image count); resume takes the newest."""
    snap = train(H.tiny_options(tmp_path, data, kimg=0.024), echo=False)
    run = snap.parent
    names = sorted(p.name for p in run.glob('network-snapshot-*.pt'))
    assert names == [f'network-snapshot-000000-0000{n:02d}img.pt' for n in (8, 16, 24)]
    for n in (8, 16, 24):
        assert rd.load_training_state(run / f'training-state-000000-0000{n:02d}img.pt')['cur_nimg'] == n
    assert rd.latest_snapshot(run) == rd.snapshot_paths(run, 24)
    assert rd.snapshot_tag(2000) == '000002' and rd.snapshot_nimg('network-snapshot-000002.pt') == 2000  # NVIDIA's names
    assert rd.snapshot_nimg('network-snapshot-000001-001256img.pt') == 1256 and rd.snapshot_nimg('fakes000001.png') is None


def test_resume_errors(tmp_path, data):
    (tmp_path / 'notarun').mkdir()
    with pytest.raises(ValueError, match='a directory must be a training run'):
        train(H.tiny_options(tmp_path, data, resume=str(tmp_path / 'notarun')), echo=False)
    run = tmp_path / '00000-x'
    run.mkdir()
    (run / 'training_options.json').write_text('{}')
    with pytest.raises(ValueError, match='the run has no complete snapshot'):
        train(H.tiny_options(tmp_path, data, resume=str(run)), echo=False)


def test_nan_stops_with_message_and_keeps_last_good_snapshot(tmp_path, data, monkeypatch):
    calls = {'n': 0}
    original = StyleGAN2Loss._G_main

    def poisoned(self, b, gain):
        calls['n'] += 1
        if calls['n'] > 2:  # Ticks 1 is fine (2 iterations), then G's loss turns NaN.
            self.G.synthesis.b4.const.data[0, 0, 0] = float('nan')
        return original(self, b, gain)

    monkeypatch.setattr(StyleGAN2Loss, '_G_main', poisoned)
    with pytest.raises(NonFiniteError, match=r'non-finite gradients in phase (Gmain|Greg|Dmain|Dreg) at kimg 0.008'):
        train(H.tiny_options(tmp_path, data, kimg=0.032), echo=False)
    run = next(tmp_path.glob('0*'))
    assert 'Stopped: non-finite gradients' in (run / 'log.txt').read_text()
    nets = checkpoint.load_network(run / 'network-snapshot-000000-000008img.pt')
    assert all(torch.isfinite(t).all() for k in ('G', 'D', 'G_ema') for t in nets[k].state_dict().values())
    assert rd.load_training_state(run / 'training-state-000000-000008img.pt')['cur_nimg'] == 8


def test_transfer_from_nvidia_pickle(tmp_path, fixtures):
    data = H.make_dataset(tmp_path / 'shapes32', num_images=8, resolution=32)
    source = fixtures / 'nvlabs_uncond32.pkl'
    # Learning rates 0: whatever the snapshot holds came from the pickle, tensor for tensor.
    snap = train(H.tiny_options(tmp_path / 'runs', data, cfg='auto', resume=str(source), kimg=0.008, batch=2,
                                aug='noaug', p=None, glr=0, dlr=0), echo=False)
    options = json.loads((snap.parent / 'training_options.json').read_text())
    assert options['G_kwargs']['mapping_kwargs']['num_layers'] == 2 and options['G_kwargs']['z_dim'] == 32
    assert options['G_kwargs']['synthesis_kwargs']['channel_base'] == 1024  # from the pickle, not auto's 16384
    assert options['D_kwargs']['epilogue_kwargs']['mbstd_group_size'] == 2
    src, out = checkpoint.load_network(source), checkpoint.load_network(snap)
    assert H.state_diff(src['D'].state_dict(), out['D'].state_dict()) == []
    assert H.state_diff(dict(src['G'].named_parameters()), dict(out['G'].named_parameters())) == []
    assert rd.load_training_state(snap.with_name('training-state-000000-000008img.pt'))['cur_nimg'] == 8  # from kimg 0


def test_conditional_training_and_continuing_without_data(tmp_path):
    data = Path(H.make_dataset(tmp_path / 'labelled', num_images=8))
    names = sorted(p.name for p in data.iterdir())
    (data / 'dataset.json').write_text(json.dumps({'labels': [[n, i % 3] for i, n in enumerate(names)]}))
    snap = train(H.tiny_options(tmp_path / 'runs', str(data), cond=True, kimg=0.016), max_ticks=1, echo=False)
    nets = checkpoint.load_network(snap)
    assert nets['G'].c_dim == 3 and nets['D'].c_dim == 3
    # Continue the run by its directory alone: no --data needed, the run's options are reused.
    snap2 = train(H.tiny_options(tmp_path / 'runs', None, resume=str(snap.parent)), echo=False)
    assert snap.name == 'network-snapshot-000000-000008img.pt' and snap.is_file()  # kept beside snap2
    assert rd.load_training_state(snap2.with_name('training-state-000000-000016img.pt'))['cur_nimg'] == 16
    # A finished run has nothing left to do.
    assert train(H.tiny_options(tmp_path / 'runs', None, resume=str(snap.parent)), echo=False) == snap2
    assert rd.load_training_state(snap2.with_name('training-state-000000-000016img.pt'))['cur_nimg'] == 16
    assert 'already reached' in (snap.parent / 'log.txt').read_text()


def test_continuing_a_run_warns_about_the_options_it_ignores(tmp_path):
    """`--resume RUN_DIR` replays the run's own options: new data or FreezeD given beside it would be ignored
    silently (a user meaning to fine-tune from the snapshot trained on the old data), so it warns and names them."""
    honoured = TrainOptions(resume=str(tmp_path), kimg=10, gpus=1, device='cpu', outdir='elsewhere')
    assert ignored_options(honoured) == []
    o = TrainOptions(resume=str(tmp_path), data='toon.zip', freezed=4, kimg=10)
    assert ignored_options(o) == ['--data', '--freezed']
    with pytest.warns(UserWarning, match=r'continues the run in .* ignored: --data, --freezed\. To fine-tune'):
        warn_ignored_options(o, tmp_path)
