"""The folder-run helper: listing, the one naming rule, typed per-item failures, the incremental manifest, resume."""

import json
import unicodedata
from pathlib import Path

import pytest
import torch

from pstyle.torch_utils import errors
from pstyle.torch_utils import folder_run as FR


def touch(folder, *names):
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_bytes(b'x')
    return folder


def names_of(paths, **kw):
    return FR.unique_names([Path(p) for p in paths], **kw)


def test_names_keep_unicode_and_never_collide():
    assert names_of(['张三.png', '李四.png', 'photo 1.png', 'photo_1.png']) == ['张三', '李四', 'photo 1', 'photo_1']
    assert names_of(['a/x.jpg', 'a/x.png']) == ['x', 'x_png']
    assert names_of(['a/y.PNG', 'a/y.png']) == ['y', 'y_png']          # One file on a case-insensitive disk.
    assert names_of(['a/x.png', 'b/x.png', 'c/x.png']) == ['x', 'x_png', 'x_png_2']


def test_a_later_extension_name_does_not_take_an_existing_stem():
    # Two folders: one holds x_png.png, the other x.png (and x.jpg): x_png stays the first file's.
    assert names_of(['a/x.jpg', 'a/x_png.png', 'b/x.png']) == ['x', 'x_png', 'x_png_2']


def test_names_compare_unicode_normalisation_and_reserved_names():
    nfc, nfd = unicodedata.normalize('NFC', 'José'), unicodedata.normalize('NFD', 'José')
    assert names_of([f'a/{nfc}.png', f'b/{nfd}.png']) == [nfc, f'{nfd}_png']
    assert names_of(['manifest.png', 'Manifest.jpg'], reserved=('manifest',)) == ['manifest_png', 'Manifest_jpg']


def test_names_are_deterministic_and_unique_on_many_collisions():
    paths = [f'{d}/{s}.{e}' for d in 'ab' for s in ('x', 'X', 'x_png') for e in ('png', 'PNG', 'jpg')]
    first = names_of(paths)
    assert first == names_of(paths)
    assert len({n.casefold() for n in first}) == len(paths)


def test_listing_sorts_folders_filters_images_and_names_bad_inputs(tmp_path):
    touch(tmp_path / 'f', 'b.png', 'a.JPG', 'notes.txt', '张三.webp')
    touch(tmp_path, 'single.png')
    files = FR.list_inputs([tmp_path / 'single.png', tmp_path / 'f'])
    assert [p.name for p in files] == ['single.png', 'a.JPG', 'b.png', '张三.webp']
    with pytest.raises(FileNotFoundError, match='missing: no such file or folder'):
        FR.list_inputs(tmp_path / 'missing')
    (tmp_path / 'empty').mkdir()
    with pytest.raises(ValueError, match='empty: no image files in this folder'):
        FR.list_inputs(tmp_path / 'empty')


def make_run(tmp_path, resume=False, key='k1', logs=None):
    items = FR.plan([touch(tmp_path / 'in', 'a.png', 'b.png', 'c.png', 'd.png')])
    return FR.FolderRun(items, tmp_path / 'out' / 'manifest.json', 'test', header=lambda: dict(extra=1),
                        resume_key=dict(net=key), resume=resume, log=(logs.append if logs is not None else None))


def process(run, item, fail_on=()):
    with run.isolate(item, stage='work'):
        if item.name in fail_on:
            raise fail_on[item.name]
        out = run.root / f'{item.name}.txt'
        out.write_text(item.name)
        run.succeed(item, [out], value=len(item.name))


def test_typed_failures_are_recorded_and_others_propagate(tmp_path):
    logs = []
    run = make_run(tmp_path, logs=logs)
    (tmp_path / 'out').mkdir()
    fails = dict(a=errors.InputError('a.png: cannot read image'),
                 b=torch.OutOfMemoryError('CUDA out of memory. Tried to allocate 2.00 GiB\nmore lines'),
                 c=errors.DivergenceError('c.png: diverged'))
    for item in run.items:
        process(run, item, fails)
    doc = json.loads(run.path.read_text())
    assert [e['status'] for e in doc['items']] == ['failed', 'failed', 'failed', 'ok']
    assert [e['error_type'] for e in doc['items'][:3]] == ['input', 'out-of-memory', 'divergence']
    assert doc['items'][1]['error'] == ('out of memory (CUDA out of memory. Tried to allocate 2.00 GiB); '
                                        'lower --batch or the resolution, or free the device')
    assert doc['items'][3]['outputs'] == ['d.txt'] and doc['items'][3]['value'] == 1 and doc['extra'] == 1
    assert doc['num_ok'] == 1 and doc['num_failed'] == 3 and doc['failures'][0]['stage'] == 'work'
    assert any(line.endswith('a.png: failed (work: a.png: cannot read image)') for line in logs)
    run2 = make_run(tmp_path)
    with pytest.raises(KeyError, match='a bug'):
        process(run2, run2.items[0], dict(a=KeyError('a bug')))
    assert json.loads(run2.path.read_text())['items'][0]['status'] == 'pending'


def test_plain_runtime_errors_are_not_mistaken_for_out_of_memory():
    assert errors.typed_error(RuntimeError('shape mismatch')) is None
    oom = errors.typed_error(RuntimeError('[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: not enough memory: '
                                          'you tried to allocate 1 bytes. Buy new RAM! out of memory'))
    assert isinstance(oom, errors.OutOfMemoryError) and oom.kind == 'out-of-memory'
    assert isinstance(errors.typed_error(MemoryError()), errors.OutOfMemoryError)


def test_check_finite_raises_divergence():
    errors.check_finite('x.png', torch.zeros(2), 0.5)
    with pytest.raises(errors.DivergenceError, match='x.png: diverged'):
        errors.check_finite('x.png', torch.tensor([0.0, float('nan')]))
    with pytest.raises(errors.DivergenceError):
        errors.check_finite('x.png', float('inf'))


class Crash(Exception):
    pass


def test_manifest_after_a_crash_mid_run_and_resume_skips_the_done_items(tmp_path):
    run = make_run(tmp_path)
    (tmp_path / 'out').mkdir()
    with pytest.raises(Crash):
        for k, item in enumerate(run.items):
            if k == 2:
                raise Crash  # The process dies here: nothing after the second item's save ran.
            process(run, item)
    on_disk = json.loads(run.path.read_text())
    assert [e['status'] for e in on_disk['items']] == ['ok', 'ok', 'pending', 'pending']
    assert on_disk['num_items'] == 4 and on_disk['items'][2]['input'].endswith('c.png')

    resumed = make_run(tmp_path, resume=True)
    assert resumed.resumed == ['a', 'b'] and [it.name for it in resumed.pending()] == ['c', 'd']
    for item in resumed.pending():
        process(resumed, item)
    doc = json.loads(resumed.path.read_text())
    assert doc['num_ok'] == 4 and doc['items'][0]['value'] == 1


def test_resume_redoes_items_whose_outputs_are_gone_and_refuses_other_settings(tmp_path):
    run = make_run(tmp_path)
    (tmp_path / 'out').mkdir()
    for item in run.items:
        process(run, item, dict(d=errors.InputError('bad')))
    (tmp_path / 'out' / 'b.txt').unlink()
    resumed = make_run(tmp_path, resume=True)
    assert [it.name for it in resumed.pending()] == ['b', 'd']   # b's output is gone, d had failed.
    with pytest.raises(ValueError, match='holds results of another network or other settings'):
        make_run(tmp_path, resume=True, key='k2')
    (tmp_path / 'out' / 'manifest.json').write_text('{"format": "other"}')
    with pytest.raises(ValueError, match='not the manifest of a `test` run'):
        make_run(tmp_path, resume=True)


def test_plain_labels_get_numbered():
    assert FR.unique_labels(['ben', 'ben', 'Ben', 'seed0001']) == ['ben', 'ben_2', 'Ben_3', 'seed0001']
