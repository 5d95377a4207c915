"""Folder runs: outputs on disk, bad files, partial results and resume, sharding, PTI deltas, video."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from pstyle.projectors import project_folder as PF
from pstyle.projectors import projector as P
from pstyle.projectors import pti as T
from pstyle.models import deltas, latents
from pstyle.models import render as rendering
from pstyle.models import render as gen

FAST = dict(num_steps=3, lpips_weight=0.0, mse_weight=1.0, w_avg_samples=200)


def entries(doc):
    return {e['name']: e for e in doc['items']}


def ok_names(doc):
    return [e['name'] for e in doc['items'] if e['status'] == 'ok']


def _photo(seed, size=(16, 16)):
    rng = np.random.RandomState(seed)
    return Image.fromarray(rng.randint(0, 256, (size[1], size[0], 3), dtype=np.uint8))


@pytest.fixture
def good_folder(tmp_path):
    src = tmp_path / 'photos'
    src.mkdir()
    for k, name in enumerate(['a.png', 'b.png', 'c.png']):
        _photo(k, (32, 32)).save(src / name)
    return src


@pytest.fixture
def mixed_folder(good_folder):
    (good_folder / 'd.jpg').write_bytes(b'\xff\xd8\xff\xe0 not really a jpeg')
    _photo(5, (4, 4)).save(good_folder / 'e.png')
    _photo(6, (20, 16)).save(good_folder / 'f.png')
    return good_folder


def test_outputs_and_bad_files(G, mixed_folder, tmp_path):
    out = tmp_path / 'out'
    doc = PF.project_folder(G, mixed_folder, out, cfg=P.ProjectConfig(**FAST), batch_size=2, log=lambda m: None)
    assert ok_names(doc) == ['a', 'b', 'c']
    failed = {f['name']: f['error'] for f in doc['failures']}
    assert set(failed) == {'d', 'e', 'f'} and {f['error_type'] for f in doc['failures']} == {'input'}
    assert 'd.jpg: cannot read image' in failed['d']
    assert 'e.png: image is 4x4, too small' in failed['e']
    assert 'f.png: image is 20x16, not square' in failed['f'] and '--crop center' in failed['f']
    on_disk = json.loads((out / 'metrics.json').read_text())
    assert on_disk['summary']['num_images'] == 3 and on_disk['summary']['num_failed'] == 3
    assert on_disk['settings']['project']['num_steps'] == 3 and on_disk['weights_sha256'] == deltas.weights_sha256(G)
    m = entries(on_disk)['b']
    assert m['recon'] == 'recon/b.png' and m['target'] == 'target/b.png' and m['steps'] == 3 and m['mse'] > 0
    assert m['outputs'] == ['recon/b.png', 'target/b.png'] and m['input'] == str(mixed_folder / 'b.png')
    lat = latents.load_latents(out / 'latents.npz')
    assert lat['names'] == ['a', 'b', 'c'] and lat['ws'].shape == (3, G.num_ws, 16)
    assert lat['space'] == 'w+' and lat['alignment'] == [None, None, None]
    # `pstyle generate --projected-w` reads the same file; with the saved noise it reproduces the renders.
    ws, names = latents.load_projected_ws(out / 'latents.npz', G)
    assert names == ['a', 'b', 'c'] and torch.equal(ws, lat['ws'])  # the item names, as the outputs are named
    noise = latents.load_projected_noise(out / 'latents.npz', G)
    assert set(noise) == set(latents.noise_layers(G)) and noise['synthesis.b16.conv0'].shape == (3, 1, 16, 16)
    recon = np.asarray(Image.open(out / 'recon' / 'b.png'))
    again = gen.to_uint8(rendering.render(G, ws, noise))[1]
    assert np.abs(again.astype(int) - recon.astype(int)).max() <= 1
    plain = gen.to_uint8(gen.synthesize(G, ws))[1]
    assert np.abs(plain.astype(int) - recon.astype(int)).max() > 1  # the noise matters


def test_crop_center_and_min_size(G, tmp_path):
    _photo(1, (24, 16)).save(tmp_path / 'wide.png')
    arr = PF.load_target(tmp_path / 'wide.png', 16, crop='center')
    assert arr.shape == (16, 16, 3)
    expected = np.asarray(Image.open(tmp_path / 'wide.png').crop((4, 0, 20, 16)))
    assert np.array_equal(arr, expected)
    with pytest.raises(PF.TargetError, match='too small'):
        PF.load_target(tmp_path / 'wide.png', 1024)
    assert PF.load_target(tmp_path / 'wide.png', 1024, crop='center', min_size=16).shape == (1024, 1024, 3)
    with pytest.raises(ValueError, match='crop must be one of'):
        PF.load_target(tmp_path / 'wide.png', 16, crop='left')


def test_a_failing_batch_keeps_earlier_results_and_resume_finishes(G, good_folder, tmp_path, monkeypatch):
    out, calls = tmp_path / 'out', []
    real = P.project

    def flaky(G, targets, *args, **kwargs):
        calls.append(len(targets))
        if len(calls) == 2:
            raise RuntimeError('a bug (simulated)')
        return real(G, targets, *args, **kwargs)
    monkeypatch.setattr(P, 'project', flaky)
    cfg = P.ProjectConfig(**FAST)
    with pytest.raises(PF.ProjectionRunError, match=r'batch 2 \(c.png\) failed: RuntimeError: a bug.*--resume'):
        PF.project_folder(G, good_folder, out, cfg=cfg, batch_size=2, log=lambda m: None)
    assert latents.load_latents(out / 'latents.npz')['names'] == ['a', 'b']
    assert (out / 'recon' / 'b.png').is_file()
    doc = PF.project_folder(G, good_folder, out, cfg=cfg, batch_size=2, resume=True, log=lambda m: None)
    assert calls == [2, 1, 1]  # only c.png was projected again
    assert ok_names(doc) == ['a', 'b', 'c']
    assert latents.load_latents(out / 'latents.npz')['names'] == ['a', 'b', 'c']
    with pytest.raises(ValueError, match='results of another network or other settings'):
        PF.project_folder(G, good_folder, out, cfg=P.ProjectConfig(**dict(FAST, num_steps=4)), resume=True, log=lambda m: None)


def test_shards_cover_every_file_once_and_merge_in_order(G, good_folder, tmp_path):
    items = list(range(11))
    parts = [PF.shard(items, r, 3) for r in range(3)]
    assert sorted(sum(parts, [])) == items and parts[1] == [1, 4, 7, 10]
    with pytest.raises(ValueError, match='rank 3 out of range'):
        PF.shard(items, 3, 3)
    cfg = P.ProjectConfig(**FAST)
    single = PF.project_folder(G, good_folder, tmp_path / 'one', cfg=cfg, batch_size=3, log=lambda m: None)
    out = tmp_path / 'multi'
    # Ranks run one after the other here; under torchrun they run in parallel and rank 0 merges after a barrier.
    PF.project_folder(G, good_folder, out, cfg=cfg, batch_size=1, rank=1, world_size=2, log=lambda m: None)
    merged = PF.project_folder(G, good_folder, out, cfg=cfg, batch_size=1, rank=0, world_size=2, log=lambda m: None)
    assert latents.load_latents(out / 'shards' / 'rank01' / 'latents.npz')['names'] == ['b']
    assert ok_names(merged) == ['a', 'b', 'c'] and entries(merged)['b']['outputs'] == ['recon/b.png', 'target/b.png']
    a, b = latents.load_latents(tmp_path / 'one' / 'latents.npz'), latents.load_latents(out / 'latents.npz')
    assert a['names'] == b['names'] and torch.allclose(a['ws'], b['ws'], atol=1e-5)
    for name in a['noise']:
        assert torch.allclose(a['noise'][name], b['noise'][name], atol=1e-5)
    assert single['summary']['num_images'] == merged['summary']['num_images'] == 3


def test_pti_in_a_folder_run(G, good_folder, tmp_path):
    out = tmp_path / 'out'
    pti_cfg = T.PTIConfig(num_steps=3, lpips_weight=0.0, regularizer_lpips_weight=0.0, trainable=('synthesis.b16.*',),
                          delta_dtype='fp16')
    doc = PF.project_folder(G, [good_folder / 'a.png'], out, cfg=P.ProjectConfig(**FAST), pti_cfg=pti_cfg, log=lambda m: None)
    m = entries(doc)['a']['pti']
    assert m['delta'] == 'pti/a.safetensors' and m['recon'] == 'recon_pti/a.png' and m['steps'] == 3
    G_tuned = deltas.load_tuned_generator(G, out / m['delta'])
    lat = latents.load_latents(out / 'latents.npz')
    render = gen.to_uint8(rendering.render(G_tuned, lat['ws'], lat['noise']))[0]
    assert np.abs(render.astype(int) - np.asarray(Image.open(out / m['recon'])).astype(int)).max() <= 2


def test_video_sidecar_transform_and_names(G, tmp_path):
    src = tmp_path / 'src'
    (src / 'x').mkdir(parents=True)
    _photo(1).save(src / 'me.png')
    _photo(2).save(src / 'me.jpg')
    _photo(3).save(src / 'x' / 'me.png')
    record = dict(format='pstyle-ffhq-align', quad=[[0, 0], [0, 16], [16, 16], [16, 0]], photo_size=[64, 64], output_size=16)
    (src / 'me.json').write_text(json.dumps(record))
    files = [src / 'me.png', src / 'me.jpg', src / 'x' / 'me.png']
    out = tmp_path / 'out'
    doc = PF.project_folder(G, files, out, cfg=P.ProjectConfig(**dict(FAST, num_steps=4)), video=True, video_every=2, log=lambda m: None)
    assert ok_names(doc) == ['me', 'me_jpg', 'me_png'] and entries(doc)['me']['video'] == 'video/me.mp4'  # imageio-ffmpeg is a dev dependency
    import imageio.v2 as imageio
    with imageio.get_reader(out / 'video' / 'me.mp4') as reader:
        frames = [f for f in reader]
    assert len(frames) == 2 and frames[0].shape == (16, 32, 3)  # target | reconstruction, side by side
    lat = latents.load_latents(out / 'latents.npz')
    assert lat['alignment'][0] == record and lat['alignment'][2] is None
    assert sorted(p.name for p in (out / 'recon').iterdir()) == ['me.png', 'me_jpg.png', 'me_png.png']


def test_video_falls_back_to_gif_without_ffmpeg(tmp_path, monkeypatch):
    import sys
    monkeypatch.setitem(sys.modules, 'imageio_ffmpeg', None)  # import fails, as when it is not installed
    frames = [np.full((16, 32, 3), v, np.uint8) for v in (0, 128, 255)]
    assert PF.write_video(tmp_path / 'video' / 'me', frames, tmp_path) == 'video/me.gif'
    with Image.open(tmp_path / 'video' / 'me.gif') as gif:
        assert gif.n_frames == 3 and gif.size == (32, 16)


def test_latents_file_errors(G, tmp_path):
    path = tmp_path / 'l.npz'
    noise = {k: torch.zeros(1, 1, l.resolution, l.resolution) for k, l in latents.noise_layers(G).items()}
    latents.save_latents(path, ['a'], torch.zeros(1, G.num_ws, 16), {k: v for k, v in list(noise.items())[:-1]})
    with pytest.raises(ValueError, match='noise maps missing for synthesis.b16.conv1'):
        latents.load_projected_noise(path, G)
    latents.save_latents(path, ['a'], torch.zeros(1, G.num_ws, 16), {'synthesis.b64.conv0': torch.zeros(1, 1, 64, 64)})
    with pytest.raises(ValueError, match='noise map synthesis.b64.conv0 has no matching layer'):
        latents.load_projected_noise(path, G)
    latents.save_latents(path, ['a'], torch.zeros(1, G.num_ws, 16))
    assert latents.load_projected_noise(path, G) is None
    np.savez(tmp_path / 'nv.npz', w=np.zeros((1, G.num_ws, 16), np.float32))
    with pytest.raises(ValueError, match='not a latents file written by pstyle project'):
        latents.load_latents(tmp_path / 'nv.npz')
    with pytest.raises(FileNotFoundError, match='missing: no such file or folder'):
        PF.project_folder(G, tmp_path / 'missing', tmp_path / 'out', cfg=P.ProjectConfig(**FAST))
    (tmp_path / 'empty').mkdir()
    with pytest.raises(ValueError, match='empty: no image files in this folder'):
        PF.project_folder(G, tmp_path / 'empty', tmp_path / 'out', cfg=P.ProjectConfig(**FAST))


def test_align_option_records_the_transform(G, tmp_path):
    import skimage.data as skimage  # dev extra: a missing install fails, never skips
    src = tmp_path / 'photos'
    src.mkdir()
    Image.fromarray(skimage.astronaut()).save(src / 'astronaut.png')
    Image.new('RGB', (64, 64), (90, 140, 200)).save(src / 'nobody.png')
    doc = PF.project_folder(G, src, tmp_path / 'out', cfg=P.ProjectConfig(**FAST), align=True, log=lambda m: None)
    assert ok_names(doc) == ['astronaut'] and 'no face found' in entries(doc)['nobody']['error']
    transform = latents.load_latents(tmp_path / 'out' / 'latents.npz')['alignment'][0]
    assert transform['format'] == 'pstyle-ffhq-align' and transform['output_size'] == 16


HOSTILE = dict(one=['张三.png', '李四.png', 'photo 1.png', 'photo_1.png', 'x.jpg', 'x.png', 'y.PNG', 'y.png'],
               two=['x.png', 'x_png.png'])


def test_hostile_names_never_overwrite_and_resume_keeps_them(G, tmp_path):
    for k, (sub, names) in enumerate(HOSTILE.items()):
        (tmp_path / sub).mkdir()
        for j, name in enumerate(names):
            _photo(10 * k + j).save(tmp_path / sub / name)
    out, cfg = tmp_path / 'out', P.ProjectConfig(**FAST)
    doc = PF.project_folder(G, [tmp_path / 'one', tmp_path / 'two'], out, cfg=cfg, batch_size=4, log=lambda m: None)
    names = ['photo 1', 'photo_1', 'x', 'x_png_2', 'y', 'y_png', '张三', '李四', 'x_png_3', 'x_png']
    assert ok_names(doc) == names and doc['summary']['num_images'] == 10
    assert sorted(p.name for p in (out / 'recon').iterdir()) == sorted(f'{n}.png' for n in names)
    assert latents.load_latents(out / 'latents.npz')['names'] == names
    assert entries(doc)['x_png_3']['input'] == str(tmp_path / 'two' / 'x.png')
    again = PF.project_folder(G, [tmp_path / 'one', tmp_path / 'two'], out, cfg=cfg, resume=True, log=lambda m: None)
    assert ok_names(again) == names and latents.load_latents(out / 'latents.npz')['names'] == names


def test_divergence_and_out_of_memory_are_recorded_never_ok(G, good_folder, tmp_path, monkeypatch):
    real, calls = P.project, []

    def flaky(G, targets, *args, **kwargs):
        calls.append(len(targets))
        if len(calls) == 2:
            raise torch.OutOfMemoryError('CUDA out of memory. Tried to allocate 1.00 GiB')
        result = real(G, targets, *args, **kwargs)
        result.metrics[0]['mse'] = float('nan')  # the first image of the first batch diverged
        return result
    monkeypatch.setattr(P, 'project', flaky)
    doc = PF.project_folder(G, good_folder, tmp_path / 'out', cfg=P.ProjectConfig(**FAST), batch_size=2, log=lambda m: None)
    items = entries(doc)
    assert items['a']['status'] == 'failed' and items['a']['error_type'] == 'divergence' and 'a.png: diverged' in items['a']['error']
    assert items['b']['status'] == 'ok'
    assert items['c']['error_type'] == 'out-of-memory' and items['c']['error'].startswith('out of memory (CUDA out of memory')
    assert doc['summary'] == dict(doc['summary'], num_images=1, num_failed=2)
    assert latents.load_latents(tmp_path / 'out' / 'latents.npz')['names'] == ['b']
    assert not (tmp_path / 'out' / 'recon' / 'a.png').exists()
