"""Crash safety of training runs, tested by crashing: a copy of the run directory at every write point
(as a kill at that instant leaves it), each resumed; and a real `kill -9` of a training process.

Every crash must resume bit-exactly (networks, stats and metric lines as in the uninterrupted run) or
be refused with a clear message; never continue silently from something else.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from pstyle.models import checkpoint
from pstyle.training import launch
from pstyle.training import run_dir as rd
from pstyle.training.launch import train
import pstyle_tests_train_helpers as H  # registered by conftest.py

METRIC = 'proxyfid1k_full'  # A valid name for the config; the fake below measures instead (cheap, exact).
KIMG = 0.016                # Two ticks of 8 images, a snapshot at each.


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    return H.make_dataset(tmp_path_factory.mktemp('shapes'))


def weight_sum(G_ema, kimg):
    return {METRIC: dict(wsum=float(sum(p.double().sum() for p in G_ema.parameters())))}


@pytest.fixture
def fake_metric(monkeypatch):
    monkeypatch.setattr(launch, 'metrics_hook', lambda cfg: weight_sum if cfg.get('metrics') else None)


def options(outdir, data, **kw):
    return H.tiny_options(outdir, data, kimg=KIMG, metrics=(METRIC,), **kw)


class CrashImages:
    """At every write into a run directory: a copy of that directory as a kill would leave it while
    the file is half written (a temporary file, or an appended line, cut in the middle)."""

    def __init__(self, root, watched):
        self.root, self.watched, self.images = Path(root), Path(watched), []

    def capture(self, label, run_dir, torn=None):
        if self.watched not in run_dir.parents:
            return
        dest = self.root / f'{len(self.images):03d}'
        shutil.copytree(run_dir, dest / run_dir.name)
        if torn is not None:  # (name, bytes): that file holds only a prefix of what was being written.
            (dest / run_dir.name / torn[0]).write_bytes(torn[1])
        self.images.append((label, dest / run_dir.name))

    def replace_hook(self, real_replace):
        def replace(src, dst):
            src, dst = Path(src), Path(dst)
            data = src.read_bytes()
            self.capture(f'mid-write {dst.name}', dst.parent, torn=(src.name, data[:len(data) // 2]))
            real_replace(src, dst)
        return replace

    def append_hook(self, real_append):
        def append(path, line):
            path = Path(path)
            before = path.read_bytes() if path.is_file() else b''
            self.capture(f'mid-append {path.name}', path.parent, torn=(path.name, before + line.encode()[:len(line) // 2]))
            real_append(path, line)
        return append


def comparable_stats(run):
    drop = ('timestamp', 'Timing/', 'Resources/')
    return [{k: v for k, v in e.items() if not k.startswith(drop)} for e in rd.read_jsonl(run / 'stats.jsonl')]


def comparable_metrics(run):
    return [{k: v for k, v in e.items() if k != 'snapshot'} for e in rd.read_jsonl(run / f'metric-{METRIC}.jsonl')]


def assert_same_run(reference, run):
    """Networks of the final snapshot bit-exact; stats and metric lines equal (timings aside)."""
    final = rd.snapshot_paths(run, int(KIMG * 1000))
    a, b = checkpoint.load_network(rd.snapshot_paths(reference, int(KIMG * 1000))[0]), checkpoint.load_network(final[0])
    for key in ('G', 'D', 'G_ema'):
        assert H.state_diff(a[key].state_dict(), b[key].state_dict()) == [], key
    assert comparable_stats(run) == comparable_stats(reference)
    assert comparable_metrics(run) == comparable_metrics(reference)
    assert not list(run.glob('.*.tmp'))


def test_a_crash_at_any_write_resumes_exactly_or_is_refused(tmp_path, data, fake_metric, monkeypatch):
    reference = train(options(tmp_path / 'ref', data), echo=False).parent
    images = CrashImages(tmp_path / 'images', tmp_path / 'crashing')
    with monkeypatch.context() as m:
        m.setattr(os, 'replace', images.replace_hook(os.replace))
        m.setattr(rd, 'append_line', images.append_hook(rd.append_line))
        crashing = train(options(tmp_path / 'crashing', data), echo=False).parent
    images.capture('after the run', crashing)
    labels = [label for label, _ in images.images]
    for name in ('network-snapshot-000000-000008img.pt', 'training-state-000000-000016img.pt',
                 f'metric-{METRIC}.jsonl', 'stats.jsonl', 'log.txt'):
        assert any(name in label for label in labels), name  # Every kind of write was crashed into.
    resumed = refused = 0
    for label, run in images.images:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter('ignore')  # Passed-over incomplete snapshots are announced.
                train(options(tmp_path / 'unused', data, resume=str(run)), echo=False)
        except ValueError as e:  # Before the first complete snapshot: nothing to continue from.
            assert rd.latest_snapshot(run) is None, label
            assert 'no complete snapshot' in str(e) or 'must be a training run' in str(e), label
            refused += 1
            continue
        assert_same_run(reference, run)
        resumed += 1
    assert resumed >= 6 and refused >= 3, (resumed, refused)


def test_a_state_beside_another_network_is_refused_or_passed_over(tmp_path, data):
    snap = train(H.tiny_options(tmp_path, data, kimg=0.016), echo=False)
    run = snap.parent
    shutil.copy(run / 'network-snapshot-000000-000008img.pt', snap)  # A state beside an older network.
    with pytest.warns(UserWarning, match='its training state was written for a network with sha256'):
        assert rd.latest_snapshot(run) == rd.snapshot_paths(run, 8)
    with pytest.raises(rd.SnapshotError, match=r'cannot resume from .*network-snapshot-000000-000016img\.pt: .*has '
                                                r'sha256 .*, but its training state was written for a network'):
        train(H.tiny_options(tmp_path, data, kimg=0.024, resume=str(snap)), echo=False)


def test_a_network_without_its_state_is_passed_over_and_refused_by_name(tmp_path, data):
    snap = train(H.tiny_options(tmp_path, data, kimg=0.016), echo=False)
    run = snap.parent
    (run / 'training-state-000000-000016img.pt').unlink()
    with pytest.warns(UserWarning, match='has no training-state-000000-000016img.pt'):
        assert rd.latest_snapshot(run) == rd.snapshot_paths(run, 8)
    with pytest.raises(ValueError, match='its training-state-000000-000016img.pt is missing, so the snapshot is incomplete'):
        train(H.tiny_options(tmp_path, data, kimg=0.024, resume=str(snap)), echo=False)


def test_resume_removes_stale_temporary_files_and_torn_lines(tmp_path, data):
    run = train(H.tiny_options(tmp_path, data, kimg=0.016), max_ticks=1, echo=False).parent
    stale = run / '.network-snapshot-000000-000016img.pt.k3j_x9ab.tmp'
    stale.write_bytes(b'half a network')
    with open(run / 'stats.jsonl', 'a') as f:
        f.write('{"Progress/kimg": 0.01')
    train(H.tiny_options(tmp_path, data, kimg=0.016, resume=str(run)), echo=False)
    assert not stale.exists()
    assert [e['Progress/kimg'] for e in rd.read_jsonl(run / 'stats.jsonl')] == [0.008, 0.016]
    assert 'Removed the temporary files of interrupted writes: .network-snapshot' in (run / 'log.txt').read_text()


KILL_SCRIPT = '''
import importlib.util, sys, torch
torch.set_num_threads(1)
spec = importlib.util.spec_from_file_location('h', sys.argv[1]); H = importlib.util.module_from_spec(spec)
spec.loader.exec_module(H)
from pstyle.training.launch import train
train(H.tiny_options(sys.argv[2], sys.argv[3], kimg=float(sys.argv[4])), echo=False)
'''


def wait_for(pattern, folder, proc, timeout=120):
    """The moment a file matching `pattern` appears under `folder` (polling every 10 ms)."""
    start = time.monotonic()
    while not list(Path(folder).glob(pattern)):
        assert proc.poll() is None, f'the training process ended before writing {pattern}'
        assert time.monotonic() - start < timeout, f'no {pattern} after {timeout} s'
        time.sleep(0.01)
    return time.monotonic()


def test_kill_9_during_training_then_resume_is_bit_exact(tmp_path, data):
    """A real SIGKILL at a seeded random instant after the second snapshot (up to one tick later)."""
    kimg = 0.048  # Six ticks: four still to go when the kill comes.
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=os.pathsep.join(sys.path))
    proc = subprocess.Popen([sys.executable, '-c', KILL_SCRIPT, str(Path(H.__file__)), str(tmp_path / 'killed'), data,
                             str(kimg)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        t1 = wait_for('killed/0*/training-state-000000-000008img.pt', tmp_path, proc)
        t2 = wait_for('killed/0*/training-state-000000-000016img.pt', tmp_path, proc)
        time.sleep(np.random.RandomState(2026).uniform(0, 1) * (t2 - t1))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]
    run = next((tmp_path / 'killed').glob('0*'))
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        resumed = train(H.tiny_options(tmp_path / 'killed', data, kimg=kimg, resume=str(run)), echo=False)
    reference = train(H.tiny_options(tmp_path / 'ref', data, kimg=kimg), echo=False)
    a, b = checkpoint.load_network(reference), checkpoint.load_network(resumed)
    for key in ('G', 'D', 'G_ema'):
        assert H.state_diff(a[key].state_dict(), b[key].state_dict()) == [], key
    sa, sb = (rd.load_training_state(rd.snapshot_paths(p.parent, 48)[1]) for p in (reference, resumed))
    assert sa['ada'] == sb['ada'] and torch.equal(sa['loss']['pl_mean'], sb['loss']['pl_mean'])
    assert not list(run.glob('.*.tmp'))
    assert [json.loads(line)['Progress/tick'] for line in (run / 'stats.jsonl').read_text().splitlines()] == [1, 2, 3, 4, 5, 6]
