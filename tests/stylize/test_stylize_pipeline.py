"""The photo -> portrait pipeline on tiny generators: outputs, exact rendering, manifest, failures."""

import copy
import hashlib
import json

import numpy as np
import pytest
import torch
from PIL import Image

from pstyle.projectors import projector as P
from pstyle.stylize import layer_weights as lw
from pstyle.stylize import pipeline
from pstyle.stylize.blend import ArchitectureMismatch
from pstyle.models import render as gen
from pstyle.models import deltas, latents
from pstyle.models import render as rendering
from pstyle.models.checkpoint import load_network, save_network

FAST = dict(num_steps=3, lpips_weight=0.0, mse_weight=1.0, w_avg_samples=200)


def smooth_photo(seed, size):
    """A smooth random uint8 image (a stand-in photo)."""
    rng = np.random.RandomState(seed)
    small = rng.randint(0, 255, (4, 4, 3)).astype(np.uint8)
    return Image.fromarray(small).resize((size, size), Image.Resampling.BICUBIC)


@pytest.fixture(scope='module')
def work(tmp_path_factory, make_G):
    root = tmp_path_factory.mktemp('stylize')
    G_a = make_G(seed=3)
    save_network(root / 'a.pt', G_ema=G_a)
    save_network(root / 'b.pt', G_ema=make_G.finetuned(G_a))
    photos = root / 'photos'
    photos.mkdir()
    smooth_photo(0, 32).save(photos / 'p0.png')
    smooth_photo(1, 64).save(photos / 'p1.png')  # Resized to the network's 32x32.
    smooth_photo(2, 32).crop((0, 0, 32, 24)).save(photos / 'wide.png')
    (photos / 'broken.jpg').write_bytes(b'not an image')
    return root


@pytest.fixture(scope='module')
def run(work):
    cfg = pipeline.StylizeConfig(base=str(work / 'a.pt'), styled=str(work / 'b.pt'), spec=lw.make_spec(swap_res=8),
                                 align=False, project=dict(FAST), batch_size=3, device='cpu')
    logs = []
    manifest = pipeline.stylize_photos(work / 'photos', work / 'out', cfg, log=logs.append)
    return manifest, work / 'out', logs


def load_png(path):
    return np.asarray(Image.open(path).convert('RGB'))


def module_swap(G_a, G_b, r):
    """Reference built without stylize.blend: B with A's mapping and A's blocks <= r."""
    G = copy.deepcopy(G_b)
    G.mapping = copy.deepcopy(G_a.mapping)
    for res in G.synthesis.block_resolutions:
        if res <= r:
            setattr(G.synthesis, f'b{res}', copy.deepcopy(getattr(G_a.synthesis, f'b{res}')))
    return G


def test_outputs_render_exactly(run, work):
    manifest, out, _ = run
    G_a, G_b = load_network(work / 'a.pt')['G_ema'], load_network(work / 'b.pt')['G_ema']
    data = np.load(out / 'latents.npz')
    assert list(data['names']) == ['p0', 'p1']
    ws = torch.from_numpy(data['w'])
    noise = {k[len('noise/'):]: torch.from_numpy(data[k])[:, None] for k in data.files if k.startswith('noise/')}
    assert ws.shape == (2, G_a.num_ws, G_a.w_dim) and len(noise) == len(latents.noise_layers(G_a))
    G_ref = module_swap(G_a, G_b, 8)
    for k, stem in enumerate(['p0', 'p1']):
        # One photo per render, as the pipeline does (CPU convolutions may round differently per batch size).
        noise_k = {name: v[k:k + 1] for name, v in noise.items()}
        styled = gen.to_uint8(rendering.render(G_ref, ws[k:k + 1], noise_k))[0]
        recon = gen.to_uint8(rendering.render(G_a, ws[k:k + 1], noise_k))[0]
        assert np.array_equal(load_png(out / f'{stem}.png'), styled)
        assert np.array_equal(load_png(out / 'projected' / f'{stem}.png'), recon)
        assert not np.array_equal(styled, recon)  # B's fine layers changed the picture.
    saved = latents.load_latents(out / 'latents.npz')  # `pstyle project`'s format.
    assert list(saved['names']) == ['p0', 'p1'] and torch.equal(torch.as_tensor(saved['ws']), ws)
    assert saved['network_sha256'] == manifest['networks']['base']['sha256']
    resized = smooth_photo(1, 64).resize((32, 32), Image.Resampling.LANCZOS)
    assert np.array_equal(load_png(out / 'aligned' / 'p1.png'), np.asarray(resized))


def test_manifest_records_knobs_hashes_and_failures(run, work):
    manifest, out, logs = run
    assert json.loads((out / 'manifest.json').read_text())['num_ok'] == 2
    assert manifest['num_items'] == 4 and manifest['num_ok'] == 2
    failures = {f['input'].split('/')[-1]: f for f in manifest['failures']}
    assert failures['wide.png']['stage'] == 'align' and '32x24 is not square' in failures['wide.png']['error']
    assert 'cannot read image' in failures['broken.jpg']['error']
    assert any('broken.jpg: failed' in line for line in logs)
    for key, name in (('base', 'a.pt'), ('styled', 'b.pt')):
        assert manifest['networks'][key]['sha256'] == hashlib.sha256((work / name).read_bytes()).hexdigest()
    assert manifest['config']['spec']['swap_res'] == 8 and manifest['spec_text'] == 'swap-res 8'
    assert manifest['weights'] == [0, 0, 0, 1, 1, 1, 1, 1]
    assert manifest['projection']['num_steps'] == 3
    ok = [e for e in manifest['items'] if e['status'] == 'ok']
    for entry in ok:
        assert {'align', 'project', 'render'} <= set(entry['seconds']) and 'pti' not in entry['seconds']
        out_entry = entry['portraits'][entry['name']]
        assert out_entry['image'] == f'{entry["name"]}.png'
        assert set(out_entry['metrics']) == {'lpips', 'identity_embedder', 'identity_dlib_distance', 'same_person',
                                             'identity_note'}
        assert out_entry['metrics']['identity_embedder'] == 'dlib_resnet_v1'
        assert entry['projection']['steps'] == 3 and entry['projection']['mse'] > 0
    assert set(manifest['seconds']['per_photo']) >= {'project', 'render'}
    if 'lpips' not in manifest['metrics_available']:
        assert any('alexnet' in note for note in manifest['notes'])  # Names the missing file.


def test_one_bad_image_fails_alone():
    class Flaky:
        def __call__(self, targets):
            if (targets == 13).all(axis=(1, 2, 3)).any():
                raise RuntimeError('diverged')
            n = len(targets)
            return torch.zeros(n, 2, 3), None, [dict(mse=float(t.mean())) for t in targets]
    targets = [np.full((4, 4, 3), v, np.uint8) for v in (1, 13, 2)]
    results = pipeline.project_robust(Flaky(), targets)
    assert isinstance(results[1], RuntimeError) and 'diverged' in str(results[1])
    assert results[0][2]['mse'] == 1 and results[2][2]['mse'] == 2


def test_config_errors(work):
    with pytest.raises(ValueError, match='nothing to stylize with'):
        pipeline.StylizeConfig(base='a.pt').check()
    with pytest.raises(ValueError, match='mapping must be one of'):
        pipeline.StylizeConfig(styled='b', mapping='mean').check()
    cfg = pipeline.StylizeConfig(base=str(work / 'a.pt'), styled=str(work / 'b.pt'), device='cpu')
    with pytest.raises(FileNotFoundError, match='nothing: no such file or folder'):
        pipeline.stylize_photos(work / 'nothing', work / 'out_none', cfg)
    (work / 'empty').mkdir(exist_ok=True)
    with pytest.raises(ValueError, match='empty: no image files in this folder'):
        pipeline.stylize_photos(work / 'empty', work / 'out_none', cfg)


def test_mismatched_networks_stop_before_projection(work, make_G):
    save_network(work / 'c.pt', G_ema=make_G(synthesis_kwargs=dict(channel_max=16)))
    cfg = pipeline.StylizeConfig(base=str(work / 'a.pt'), styled=str(work / 'c.pt'), align=False, device='cpu')
    with pytest.raises(ArchitectureMismatch, match=r'synthesis\.b4\.const has shape \[32, 4, 4\] in A but \[16, 4, 4\] in B'):
        pipeline.stylize_photos(work / 'photos', work / 'out_c', cfg)


def test_missing_dlib_stops_the_run(work, monkeypatch):
    from pstyle.projectors import align
    def no_dlib(*args, **kwargs):
        raise align.AlignDependencyError('FFHQ alignment needs dlib, which is not installed')
    monkeypatch.setattr(align, 'align_face', no_dlib)
    cfg = pipeline.StylizeConfig(base=str(work / 'a.pt'), styled=str(work / 'b.pt'), project=dict(FAST), device='cpu')
    with pytest.raises(align.AlignDependencyError, match='needs dlib'):
        pipeline.stylize_photos(work / 'photos' / 'p0.png', work / 'out_d', cfg)


def test_no_align_uses_the_align_record_for_paste_back(work):
    """An aligned photo from `pstyle align` (<stem>.json beside it) can still be pasted back."""
    folder = work / 'from_align'
    folder.mkdir()
    original = smooth_photo(5, 80)
    original.save(folder / 'orig.jpg', quality=95)
    smooth_photo(6, 32).save(folder / 'face.png')
    quad = [[20, 10], [20, 60], [70, 60], [70, 10]]
    record = dict(format='pstyle-ffhq-align', version=1, quad=quad, photo_size=[80, 80], output_size=32,
                  source=str(folder / 'orig.jpg'))
    (folder / 'face.json').write_text(json.dumps(record))
    target, transform, photo = pipeline.prepare_photo(folder / 'face.png', 32, pipeline.StylizeConfig(styled='b', align=False))
    assert target.shape == (32, 32, 3) and transform['quad'] == quad and photo.size == (80, 80)
    target, transform, photo = pipeline.prepare_photo(work / 'photos' / 'p0.png', 32, pipeline.StylizeConfig(styled='b', align=False))
    assert transform is None and photo is None


def test_style_exemplars_are_projected_into_the_styled_network(work):
    exemplar = work / 'exemplar.png'
    smooth_photo(9, 32).save(exemplar)
    cfg = pipeline.StylizeConfig(base=str(work / 'a.pt'), styled=str(work / 'b.pt'), mix_style=f'images:{exemplar}',
                                 align=False, project=dict(FAST, num_steps=2), device='cpu')
    models = pipeline.load_models(cfg, torch.device('cpu'), blend_now=False)
    ws, names = pipeline.load_styles(cfg, models, torch.device('cpu'))
    assert names == ['exemplar'] and ws.shape == (1, 8, 16)
    P_cfg = P.preset_config('default', **cfg.project)
    target = np.array(Image.open(exemplar))[None]
    expected = P.project(models.G_b, target, P_cfg, w_stats=P.compute_w_stats(models.G_b, 200)).ws
    assert torch.equal(ws, expected)


def test_output_names():
    assert pipeline.output_name('p0', None, 1) == 'p0'
    assert pipeline.output_name('p0', 'seed0003', 2) == 'p0-seed0003'
    assert pipeline.output_name('p0', 'a/b c', 2) == 'p0-a_b c'  # Only path separators change (was: all but [A-Za-z0-9._-]).
    assert pipeline.output_name('张三', None, 1) == '张三'


def test_missing_lpips_weights_name_the_file_and_the_fallback(work, monkeypatch):
    from pstyle.metrics import lpips_utils
    monkeypatch.setattr(lpips_utils, 'backbone_path', lambda net: work / 'nowhere' / 'vgg16-397923af.pth')
    cfg = pipeline.StylizeConfig(base=str(work / 'a.pt'), styled=str(work / 'b.pt'), align=False,
                                 project=dict(num_steps=1, w_avg_samples=10), device='cpu')
    with pytest.raises(FileNotFoundError, match=r'vgg16-397923af\.pth.*--lpips-weight 0 --mse-weight 1'):
        pipeline.stylize_photos(work / 'photos' / 'p0.png', work / 'out_l', cfg)


def test_pivotal_tuning_blends_the_tuned_base_with_b(work):
    """With PTI, A is tuned on the photo (delta saved), and the output is the swap of the tuned A with B."""
    cfg = pipeline.StylizeConfig(base=str(work / 'a.pt'), styled=str(work / 'b.pt'), spec=lw.make_spec(swap_res=8),
                                 align=False, project=dict(FAST), pti=True, pti_settings=dict(num_steps=3, learning_rate=0.01),
                                 device='cpu', metrics=False)
    manifest = pipeline.stylize_photos(work / 'photos' / 'p0.png', work / 'out_pti', cfg)
    out = work / 'out_pti'
    entry = manifest['items'][0]
    assert entry['status'] == 'ok' and entry['pti']['steps'] == 3 and entry['pti']['delta_bytes'] > 0
    assert entry['pti']['delta'] == 'pti/p0.safetensors' and 'pti' in entry['seconds']
    assert manifest['pti']['num_steps'] == 3 and manifest['pti']['lpips_weight'] == 0  # LPIPS off with the projection's
    G_a, G_b = load_network(work / 'a.pt')['G_ema'], load_network(work / 'b.pt')['G_ema']
    assert deltas.delta_paths(out / 'latents.npz', ['p0']) == {'p0': out / 'pti' / 'p0.safetensors'}  # generate --pti
    G_tuned = deltas.load_tuned_generator(G_a, out / 'pti' / 'p0.safetensors')  # Tied to A's weights.
    data = np.load(out / 'latents.npz')
    ws = torch.from_numpy(data['w'])
    noise = {k[len('noise/'):]: torch.from_numpy(data[k])[:, None] for k in data.files if k.startswith('noise/')}
    styled = gen.to_uint8(rendering.render(module_swap(G_tuned, G_b, 8), ws, noise))[0]
    assert np.array_equal(load_png(out / 'p0.png'), styled)
    assert np.array_equal(load_png(out / 'projected' / 'p0.png'), gen.to_uint8(rendering.render(G_tuned, ws, noise))[0])
    untuned = gen.to_uint8(rendering.render(module_swap(G_a, G_b, 8), ws, noise))[0]
    assert not np.array_equal(styled, untuned)  # The tuning changed A's share of the picture.


def test_pti_follows_the_preset_unless_told():
    cfg = pipeline.StylizeConfig(styled='b', project_preset='best')
    project_cfg = P.preset_config('best')
    assert pipeline.pti_config(cfg, project_cfg).num_steps == 350
    assert pipeline.pti_config(pipeline.StylizeConfig(styled='b', project_preset='best', pti=False), project_cfg) is None
    assert pipeline.pti_config(pipeline.StylizeConfig(styled='b'), P.preset_config('default')) is None
    on = pipeline.pti_config(pipeline.StylizeConfig(styled='b', pti=True, pti_settings=dict(num_steps=7)), P.preset_config('default'))
    assert on.num_steps == 7 and on.lpips_weight == 1 and on.regularizer_lpips_weight == 0.1
    with pytest.raises(ValueError, match='unknown PTI settings: alpha'):
        pipeline.pti_config(pipeline.StylizeConfig(styled='b', pti=True, pti_settings=dict(alpha=1)), project_cfg)
