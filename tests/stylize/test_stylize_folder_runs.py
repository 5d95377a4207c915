"""`stylize` and `mix` as folder runs: hostile file names, resume after a crash (simulated and a real kill -9),
divergence and out of memory recorded as typed failures, other errors propagating."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pstyle.models import latents
from pstyle.models.checkpoint import save_network
from pstyle.projectors import projector as P
from pstyle.stylize import layer_weights as lw
from pstyle.stylize import mix as mixing
from pstyle.stylize import pipeline

REPO = Path(__file__).resolve().parents[2]
FAST = dict(num_steps=2, lpips_weight=0.0, mse_weight=1.0, w_avg_samples=100)


def photo(seed, value=None):
    rng = np.random.RandomState(seed)
    arr = np.full((32, 32, 3), value, np.uint8) if value is not None else rng.randint(0, 255, (32, 32, 3)).astype(np.uint8)
    return Image.fromarray(arr)


@pytest.fixture(scope='module')
def nets(tmp_path_factory, make_G):
    root = tmp_path_factory.mktemp('folder_runs')
    G_a = make_G(seed=3)
    save_network(root / 'a.pt', G_ema=G_a)
    save_network(root / 'b.pt', G_ema=make_G.finetuned(G_a))
    return root


def config(nets, **overrides):
    kwargs = dict(base=str(nets / 'a.pt'), styled=str(nets / 'b.pt'), spec=lw.make_spec(swap_res=8), align=False,
                  project=dict(FAST), batch_size=2, device='cpu', metrics=False)
    return pipeline.StylizeConfig(**{**kwargs, **overrides})


def folder(root, names, seed=0):
    root.mkdir(parents=True, exist_ok=True)
    for k, name in enumerate(names):
        photo(seed + k).save(root / name)
    return root


HOSTILE_ONE = ['张三.png', '李四.png', 'photo 1.png', 'photo_1.png', 'x.jpg', 'x.png', 'y.PNG', 'y.png']
HOSTILE_TWO = ['x.png', 'x_png.png']
HOSTILE_NAMES = ['photo 1', 'photo_1', 'x', 'x_png_2', 'y', 'y_png', '张三', '李四', 'x_png_3', 'x_png']


def test_hostile_names_never_overwrite_and_the_manifest_maps_every_input(nets, tmp_path):
    one = folder(tmp_path / 'one', HOSTILE_ONE)
    two = folder(tmp_path / 'two', HOSTILE_TWO, seed=20)
    out = tmp_path / 'out'
    manifest = pipeline.stylize_photos([one, two], out, config(nets), log=lambda _: None)
    assert [e['name'] for e in manifest['items']] == HOSTILE_NAMES and manifest['num_ok'] == 10
    inputs = [str(one / n) for n in sorted(HOSTILE_ONE)] + [str(two / n) for n in sorted(HOSTILE_TWO)]
    assert [e['input'] for e in manifest['items']] == inputs
    portraits = sorted(p.name for p in out.glob('*.png'))
    assert portraits == sorted(f'{n}.png' for n in HOSTILE_NAMES)  # ten photos, ten portraits: none overwritten
    for entry in manifest['items']:
        assert all((out / o).is_file() for o in entry['outputs'])
    # Each portrait is its own photo's: the projected targets differ between the two Chinese names.
    a, b = (np.asarray(Image.open(out / 'aligned' / f'{n}.png')) for n in ('张三', '李四'))
    assert not np.array_equal(a, b)
    assert latents.load_latents(out / 'latents.npz')['names'] == HOSTILE_NAMES
    assert json.loads((out / 'manifest.json').read_text(encoding='utf-8'))['items'][6]['name'] == '张三'


class Crash(Exception):
    """Stands for the process dying midway (not a typed error: the run stops)."""


def test_resume_after_a_crash_midway_redoes_only_the_unfinished_photos(nets, tmp_path, monkeypatch):
    photos = folder(tmp_path / 'photos', [f'p{k}.png' for k in range(5)])
    out, cfg = tmp_path / 'out', config(nets)
    real, finished = pipeline._render_portraits, []

    def crash_on_the_fourth(entry, name, *args):
        if len(finished) == 3:
            raise Crash(name)
        finished.append(name)
        return real(entry, name, *args)
    monkeypatch.setattr(pipeline, '_render_portraits', crash_on_the_fourth)
    with pytest.raises(Crash):
        pipeline.stylize_photos(photos, out, cfg, log=lambda _: None)
    on_disk = json.loads((out / 'manifest.json').read_text())
    assert [e['status'] for e in on_disk['items']] == ['ok', 'ok', 'ok', 'pending', 'pending']
    before = latents.load_latents(out / 'latents.npz')
    assert before['names'] == ['p0', 'p1', 'p2']
    first_portrait = (out / 'p0.png').read_bytes()

    finished.clear()
    monkeypatch.setattr(pipeline, '_render_portraits', lambda entry, name, *args: finished.append(name) or real(entry, name, *args))
    logs = []
    manifest = pipeline.stylize_photos(photos, out, cfg, log=logs.append, resume=True)
    assert finished == ['p3', 'p4'] and manifest['num_ok'] == 5
    after = latents.load_latents(out / 'latents.npz')
    assert after['names'] == ['p0', 'p1', 'p2', 'p3', 'p4'] and torch.equal(after['ws'][:3], before['ws'])
    assert (out / 'p0.png').read_bytes() == first_portrait
    with pytest.raises(ValueError, match='holds results of another network or other settings'):
        pipeline.stylize_photos(photos, out, config(nets, spec=lw.make_spec(swap_res=16)), resume=True)


def test_resume_after_kill_9(nets, tmp_path):
    photos = folder(tmp_path / 'photos', [f'p{k}.png' for k in range(4)])
    out = tmp_path / 'out'
    script = f'''
import os, signal
from pstyle.stylize import layer_weights as lw, pipeline
cfg = pipeline.StylizeConfig(base={str(nets / "a.pt")!r}, styled={str(nets / "b.pt")!r}, spec=lw.make_spec(swap_res=8),
                             align=False, project={FAST!r}, batch_size=1, device='cpu', metrics=False)
done = []
def log(line):
    done.append(line)
    if len(done) == 2:
        os.kill(os.getpid(), signal.SIGKILL)  # right after the second photo's manifest write
pipeline.stylize_photos({str(photos)!r}, {str(out)!r}, cfg, log=log)
'''
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS='1')
    proc = subprocess.run([sys.executable, '-c', script], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -9, proc.stderr
    on_disk = json.loads((out / 'manifest.json').read_text())
    assert [e['status'] for e in on_disk['items']] == ['ok', 'ok', 'pending', 'pending']
    assert not list(out.glob('.*.tmp'))  # atomic writes leave no temporary file behind
    manifest = pipeline.stylize_photos(photos, out, config(nets, batch_size=1), log=lambda _: None, resume=True)
    assert manifest['num_ok'] == 4 and latents.load_latents(out / 'latents.npz')['names'] == ['p0', 'p1', 'p2', 'p3']


def test_divergence_and_out_of_memory_are_typed_failures_and_other_errors_propagate(nets, tmp_path, monkeypatch):
    photos = tmp_path / 'photos'
    photos.mkdir()
    photo(0).save(photos / 'a.png')
    photo(0, value=13).save(photos / 'b_oom.png')
    photo(0, value=77).save(photos / 'c_nan.png')
    real = P.project

    def flaky(G, targets, *args, **kwargs):
        targets = np.asarray(targets)
        if (targets == 13).all(axis=(1, 2, 3)).any():
            raise torch.OutOfMemoryError('CUDA out of memory. Tried to allocate 4.00 GiB')
        result = real(G, targets, *args, **kwargs)
        for k in np.flatnonzero((targets == 77).all(axis=(1, 2, 3))):
            result.ws[k, 0, 0] = float('nan')  # a diverged projection
        return result
    monkeypatch.setattr(P, 'project', flaky)
    out = tmp_path / 'out'
    manifest = pipeline.stylize_photos(photos, out, config(nets, batch_size=3), log=lambda _: None)
    items = {e['name']: e for e in manifest['items']}
    assert items['a']['status'] == 'ok'
    assert items['b_oom']['error_type'] == 'out-of-memory' and items['b_oom']['stage'] == 'project'
    assert items['b_oom']['error'].startswith('out of memory (CUDA out of memory. Tried to allocate 4.00 GiB)')
    assert items['c_nan']['status'] == 'failed' and items['c_nan']['error_type'] == 'divergence'
    assert 'c_nan.png: diverged' in items['c_nan']['error']
    assert not (out / 'c_nan.png').exists() and latents.load_latents(out / 'latents.npz')['names'] == ['a']

    def buggy(G, targets, *args, **kwargs):
        raise KeyError('a bug in the projector')
    monkeypatch.setattr(P, 'project', buggy)
    with pytest.raises(KeyError, match='a bug in the projector'):
        pipeline.stylize_photos(photos, tmp_path / 'out2', config(nets), log=lambda _: None)
    assert json.loads((tmp_path / 'out2' / 'manifest.json').read_text())['items'][0]['status'] == 'pending'


def test_mix_never_writes_two_mixes_to_one_file(nets, tmp_path, make_G):
    from pstyle.stylize.files import load_generator
    G, info = load_generator(nets / 'a.pt')
    manifest = mixing.mix_to_folder(G, 'seeds:1,1', 'seeds:7', lw.make_spec(preset='fine'), tmp_path, network_info=info)
    assert manifest['images'] == ['seed0001-seed0007', 'seed0001-seed0007_2']
    assert sorted(p.name for p in tmp_path.glob('seed*.png')) == ['seed0001-seed0007.png', 'seed0001-seed0007_2.png']
    assert json.loads((tmp_path / 'manifest.json').read_text())['network']['sha256'] == info['sha256']
