"""`pstyle compare` on the shipped demo networks (64x64) with random VGG/AdaIN/CycleGAN/Inception/LPIPS weights
in the published file layouts: layout, figure, table, numbers against the metric functions, failures, errors."""

import csv
import json
import shutil

import numpy as np
import pytest
import torch
import torchvision
from click.testing import CliRunner
from PIL import Image

from pstyle.baselines.compare import METHODS, CompareConfig, Prepared, _stylize_config, compare
from pstyle.baselines.cyclegan import ResnetGenerator
from pstyle.cli import main
from pstyle.metrics.api import compute_metrics
from pstyle.metrics.inception import random_inception_state_dict
from pstyle.models import deltas, demo
from pstyle.models.checkpoint import load_network
from pstyle.projectors.projector import preset_config
from pstyle.stylize.photo_metrics import PhotoMetrics

CLASSIC = ('nst', 'adain', 'cyclegan', 'distilled')


@pytest.fixture(autouse=True)
def _offline(tmp_path, monkeypatch, weights):
    """No download, no user cache; LPIPS-Alex on a random torchvision backbone (found through its variable)."""
    monkeypatch.setenv('PSTYLE_CACHE_DIR', str(tmp_path / 'cache'))
    monkeypatch.setenv('PSTYLE_OFFLINE', '1')
    monkeypatch.setenv('PSTYLE_ALEXNET_WEIGHTS', str(weights['alexnet']))


@pytest.fixture(scope='module')
def weights(published, vgg, tmp_path_factory):
    """Every weight file compare reads, random, in the published layouts."""
    root = tmp_path_factory.mktemp('weights')
    out = dict(published)
    out['vgg19'] = root / 'random-vgg19.pth'
    torch.save({f'features.{k}': v for k, v in vgg.features.state_dict().items()}, out['vgg19'])
    out['inception'] = root / 'random_pt_inception.pth'
    torch.save(random_inception_state_dict(seed=0), out['inception'])
    torch.manual_seed(0)
    out['alexnet'] = root / 'random-alexnet.pth'
    torch.save(torchvision.models.alexnet(weights=None).state_dict(), out['alexnet'])
    out['distilled'] = root / 'distilled_net_G.pth'
    torch.save(ResnetGenerator(ngf=8, n_blocks=1).state_dict(), out['distilled'])  # random, small, as distill saves net_G.pth
    G = load_network('demo')['G_ema']
    torch.manual_seed(1)
    delta = {'synthesis.b64.conv1.weight': 0.05 * torch.randn_like(G.synthesis.b64.conv1.weight)}
    out['fewshot'] = root / 'style.safetensors'
    deltas.save_delta(out['fewshot'], delta, deltas.weights_sha256(G), kind='style')
    out['style_set'] = root / 'style_set'
    out['style_set'].mkdir()
    rng = np.random.RandomState(3)
    for k in range(4):
        Image.fromarray(rng.randint(0, 256, (64, 64, 3), dtype=np.uint8)).save(out['style_set'] / f's{k}.png')
    return out


@pytest.fixture
def photos(tmp_path):
    folder = tmp_path / 'photos'
    folder.mkdir()
    for path in demo.sample_photos()[:2]:
        shutil.copyfile(path, folder / path.name)
    return folder


def config(weights, methods=METHODS, **overrides):
    """Every method's inputs, with few steps: 2 projection steps (pixel loss only), 2 NST iterations."""
    kw = dict(methods=tuple(methods), align=False, base='demo', styled='demo-toon', fewshot_delta=str(weights['fewshot']),
              project_preset='fast', project_steps=2, project_lpips_weight=0.0, project_mse_weight=1.0,
              styles=(str(weights['style']), str(weights['style2'])), nst_steps=2, nst_vgg_weights=str(weights['vgg19']),
              adain_vgg=str(weights['vgg']), adain_decoder=str(weights['decoder']), adain_style_size=0,
              cyclegan=str(weights['cyclegan']), distilled=str(weights['distilled']), style_set=str(weights['style_set']),
              inception_weights=str(weights['inception']), kid_subsets=5, device='cpu')
    kw.update(overrides)
    return CompareConfig(**kw)


def test_every_method_writes_its_layout_the_figure_and_a_table_of_measured_numbers(weights, photos, tmp_path):
    out = tmp_path / 'cmp'
    record = compare(photos, out, config(weights, inception_weights=None), log=lambda _: None)
    stems = sorted(p.stem for p in photos.iterdir())
    # Layout: each method's folder as its own command writes it.
    for method in METHODS:
        manifest = json.loads((out / method / 'manifest.json').read_text())
        assert manifest['num_ok'] == 2 and manifest['num_failed'] == 0, (method, manifest['failures'])
    for method in ('stylegan-swap', 'fewshot', 'nst', 'cyclegan', 'distilled'):
        assert sorted(p.stem for p in (out / method).glob('*.png')) == stems, method
    assert (out / 'stylegan-swap' / 'latents.npz').is_file() and (out / 'fewshot' / 'projected').is_dir()
    assert sorted(p.name for p in (out / 'adain').glob('*.png')) == sorted(f'{s}-{t}.png' for s in stems for t in ('style', 'style2'))
    # Figure: rows = photos, columns = photo + each method output kind, tiles at the photos' 64x64.
    fig = record['figure']
    labels = ['photo', 'stylegan-swap', 'fewshot', 'nst', 'adain:style', 'adain:style2', 'cyclegan', 'distilled']
    assert fig['rows'] == stems and fig['columns'] == labels and fig['tile'] == 64
    image = np.asarray(Image.open(out / 'compare.png').convert('RGB'))
    left, top = fig['origin']
    assert image.shape == (top + 2 * 64, left + len(labels) * 64, 3) and 0 < left < 200 and 0 < top < 64
    for r, stem in enumerate(stems):
        tile = image[top + r * 64:top + (r + 1) * 64, left + 3 * 64:left + 4 * 64]
        assert np.array_equal(tile, np.asarray(Image.open(out / 'nst' / f'{stem}.png')))
    # Table: the same columns in the three files.
    header = ['method', 'style', 'photos_ok', 'photos_failed', 'kid_mean', 'kid_std', 'kid_subset_size', 'kid_num_outputs',
              'fid', 'lpips_mean', 'lpips_std', 'identity_dlib_distance_mean', 'identity_dlib_distance_std',
              'identity_dlib_same_person_rate', 'identity_scored', 'seconds_per_photo', 'wall_seconds', 'notes']
    with open(out / 'compare.csv') as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == header and record['columns'] == header
    assert [r['method'] for r in rows] == ['photo', 'stylegan-swap', 'fewshot', 'nst', 'adain', 'adain', 'cyclegan', 'distilled']
    md = (out / 'compare.md').read_text()
    assert '| ' + ' | '.join(header) + ' |' in md and '(4 images)' in md
    # No Inception weights here: no KID, and the reason (the file to get) in the stamp and the notes.
    assert 'pt_inception-2015-12-05-6726825d.pth' in record['stamps']['distribution_note']
    assert all(r['kid_mean'] is None and 'KID/FID not measured' in r['notes'] for r in record['table'])
    saved = json.loads((out / 'compare.json').read_text())
    assert saved['num_style_images'] == 4 and saved['table'] == record['table']
    assert saved['stamps']['pairwise']['available']['lpips']['lpips_backbone'] == 'random-alexnet.pth'
    assert saved['stamps']['pairwise']['available']['identity']['identity_model'] == 'dlib_resnet_v1'
    # LPIPS and identity: what PhotoMetrics (`pstyle stylize`'s) computes directly on the written files.
    scorer = PhotoMetrics('cpu')
    for row in record['table'][1:]:
        label = row['method'] if row['style'] is None else f'{row["method"]}:{row["style"]}'
        per, lp = record['per_photo'][label], []
        for stem in stems:
            expected = scorer(np.array(Image.open(photos / f'{stem}.png').convert('RGB')),
                              np.array(Image.open(out / per[stem]['image']))[None])[0]
            assert per[stem]['lpips'] == pytest.approx(expected['lpips'], rel=1e-5)
            assert per[stem]['identity_dlib_distance'] == expected['identity_dlib_distance'], label
            lp.append(expected['lpips'])
        assert row['lpips_mean'] == pytest.approx(np.mean(lp), rel=1e-5) and row['photos_ok'] == 2
        assert row['seconds_per_photo'] > 0 and row['wall_seconds'] >= row['seconds_per_photo']


def test_kid_and_fid_are_those_of_pstyle_metrics_on_the_written_files(weights, photos, tmp_path):
    out = tmp_path / 'cmp'
    record = compare(photos, out, config(weights, methods=('stylegan-swap',)), log=lambda _: None)
    fake = tmp_path / 'fake'
    fake.mkdir()
    for path in photos.iterdir():
        shutil.copyfile(out / 'stylegan-swap' / path.name, fake / path.name)
    direct = compute_metrics('kid,fid', real=str(weights['style_set']), fake=str(fake), kid_subsets=5, kid_subset_size=2,
                             inception_weights=str(weights['inception']), use_cache=False, device='cpu')
    row = record['table'][1]
    assert row['method'] == 'stylegan-swap' and row['kid_subset_size'] == 2 and row['kid_num_outputs'] == 2
    assert row['kid_mean'] == pytest.approx(direct['kid_mean'], rel=1e-6) and row['kid_std'] == pytest.approx(direct['kid_std'], rel=1e-6)
    assert row['fid'] == pytest.approx(direct['fid'], rel=1e-6)
    stamp = record['stamps']['distribution']
    assert stamp['protocol'] == 'legacy_tf' and stamp['extractor_sha256'] == direct['meta']['extractor_sha256']
    assert f'({record["num_style_images"]} images)' in (out / 'compare.md').read_text()


def test_a_bad_photo_is_recorded_and_the_others_go_on_and_resume_keeps_the_done_ones(weights, photos, tmp_path):
    (photos / 'broken.png').write_text('not an image')
    Image.open(demo.sample_photos()[3]).resize((64, 48)).save(photos / 'wide.png')  # stylize refuses it (not square)
    out = tmp_path / 'cmp'
    cfg = config(weights, methods=('stylegan-swap', 'cyclegan'), inception_weights=None)
    record = compare(photos, out, cfg, log=lambda _: None)
    swap, cyc = record['methods']['stylegan-swap'], record['methods']['cyclegan']
    assert (swap['num_ok'], swap['num_failed'], cyc['num_ok'], cyc['num_failed']) == (2, 2, 3, 1)
    assert {f['name'] for f in swap['failures']} == {'broken', 'wide'} and cyc['failures'][0]['name'] == 'broken'
    assert 'is not square' in next(f['error'] for f in swap['failures'] if f['name'] == 'wide')
    assert [u['name'] for u in record['unreadable_photos']] == ['broken']
    assert record['figure']['rows'] == ['img00000000', 'img00000001', 'wide']   # wide: a grey stylegan-swap tile
    image = np.asarray(Image.open(out / 'compare.png').convert('RGB'))
    left, top = record['figure']['origin']
    assert (image[top + 2 * 64:, left + 64:left + 128] == 200).all()
    assert not (image[top + 2 * 64:, left + 128:left + 192] == 200).all()
    rows = {r['method']: r for r in record['table']}
    assert (rows['cyclegan']['photos_ok'], rows['cyclegan']['photos_failed']) == (3, 1)
    assert (rows['stylegan-swap']['photos_ok'], rows['stylegan-swap']['photos_failed']) == (2, 2)
    done = (out / 'cyclegan' / 'wide.png').stat().st_mtime_ns
    again = compare(photos, out, cfg, log=lambda _: None, resume=True)
    assert again['methods']['cyclegan']['num_ok'] == 3 and (out / 'cyclegan' / 'wide.png').stat().st_mtime_ns == done


@pytest.mark.parametrize('methods, missing, message', [
    (('stylegan-swap',), dict(styled=None), 'stylegan-swap needs --styled'),
    (('fewshot', 'nst'), dict(fewshot_delta=None, styles=()), 'fewshot needs --fewshot-delta; nst needs --style'),
    (('adain', 'cyclegan', 'distilled'), dict(styles=(), cyclegan=None, distilled=None),
     'adain needs --style; cyclegan needs --cyclegan; distilled needs --distilled'),
    (('toonify',), {}, 'unknown method(s) toonify: choose from stylegan-swap, fewshot, nst, adain, cyclegan, distilled'),
])
def test_a_method_without_its_inputs_is_refused_before_any_work(weights, photos, tmp_path, methods, missing, message):
    with pytest.raises(ValueError, match='missing inputs' if 'needs' in message else 'unknown') as e:
        compare(photos, tmp_path / 'cmp', config(weights, methods=methods, **missing), log=lambda _: None)
    assert message in str(e.value)
    assert not (tmp_path / 'cmp').exists()


def test_a_fewshot_delta_of_another_network_is_refused_before_any_work(weights, photos, tmp_path):
    with pytest.raises(ValueError, match='this delta was made for the network with weights sha256') as e:
        compare(photos, tmp_path / 'cmp', config(weights, methods=('fewshot',), base='demo-toon'), log=lambda _: None)
    assert not (tmp_path / 'cmp').exists(), e.value


def test_cli_runs_cyclegan_and_reports_missing_inputs(weights, photos, tmp_path):
    args = ['compare', '--photos', photos, '--outdir', tmp_path / 'cmp', '--no-align', '--device', 'cpu',
            '--style-set', weights['style_set']]
    result = CliRunner().invoke(main, [str(a) for a in args + ['--methods', 'cyclegan,distilled', '--cyclegan', weights['cyclegan']]])
    assert result.exit_code == 1 and 'missing inputs: distilled needs --distilled' in result.output
    result = CliRunner().invoke(main, [str(a) for a in args + ['--methods', 'cyclegan', '--cyclegan', weights['cyclegan']]])
    assert result.exit_code == 0, result.output
    assert 'cyclegan: 2 done, 0 failed' in result.output and (tmp_path / 'cmp' / 'compare.md').is_file()


def test_aligning_photos_without_a_face_stops_before_the_methods_naming_each_photo(weights, photos, tmp_path):
    with pytest.raises(ValueError, match='no photo could be aligned: ') as e:
        compare(photos, tmp_path / 'cmp', config(weights, methods=('cyclegan',), align=True, size=64), log=lambda _: None)
    assert all(f'{p}:' in str(e.value) for p in photos.iterdir())
    assert json.loads((tmp_path / 'cmp' / 'photos' / 'manifest.json').read_text())['num_failed'] == 2
    assert not (tmp_path / 'cmp' / 'cyclegan').exists()


def test_identity_and_lpips_columns_aggregate_photo_metrics_and_leave_out_non_faces(weights):
    import skimage.data
    from pstyle.baselines.compare_report import Pairwise
    photo = np.array(Image.fromarray(skimage.data.astronaut()).resize((256, 256)))
    shifted = np.roll(photo, 3, axis=1)
    noise = np.random.RandomState(0).randint(0, 256, photo.shape, dtype=np.uint8)
    small = np.array(Image.fromarray(shifted).resize((128, 128)))    # another size: resized to the photo's first
    pairwise = Pairwise(config(weights), 'cpu')
    summary, per, notes = pairwise([(photo, shifted), (photo, noise), (photo, small)])
    scorer = PhotoMetrics('cpu')
    expected = [scorer(photo, shifted[None])[0], scorer(photo, noise[None])[0],
                scorer(photo, np.array(Image.fromarray(small).resize((256, 256), Image.LANCZOS))[None])[0]]
    assert per == expected and expected[1]['identity_dlib_distance'] is None and 'output' in expected[1]['identity_note']
    distances = [expected[0]['identity_dlib_distance'], expected[2]['identity_dlib_distance']]
    assert summary['identity_scored'] == 2 and summary['identity_dlib_distance_mean'] == pytest.approx(np.mean(distances))
    assert summary['identity_dlib_same_person_rate'] == 1.0 and max(distances) < 0.6
    assert summary['lpips_mean'] == pytest.approx(np.mean([e['lpips'] for e in expected]))
    assert notes == ["1 output(s) resized to the photo's size for LPIPS/identity"]


def test_precision_reaches_every_method_and_the_table(weights, photos, tmp_path):
    for path in sorted(photos.iterdir())[1:]:
        path.unlink()                                   # one photo: bf16 is emulated (slow) on most test CPUs
    out = tmp_path / 'cmp'
    cfg = config(weights, methods=CLASSIC, precision='bf16', styles=(str(weights['style']),), inception_weights=None)
    record = compare(photos, out, cfg, log=lambda _: None)
    assert record['config']['precision'] == 'bf16'
    for method in CLASSIC:
        manifest = json.loads((out / method / 'manifest.json').read_text())
        assert manifest['num_ok'] == 1 and manifest['options']['precision'] == 'bf16', method
    assert '- precision of the network passes (and of the seconds per photo): bf16' in (out / 'compare.md').read_text()
    # The StyleGAN methods: the projection's precision, as `pstyle stylize --precision` sets it.
    scfg = _stylize_config(cfg, Prepared(torch.device('cpu')), styled=cfg.styled, spec=cfg.spec)
    assert preset_config(scfg.project_preset, **scfg.project).precision == 'bf16'


@pytest.mark.parametrize('methods, precision, message', [
    (('adain', 'cyclegan'), 'fp16', 'fp16 needs a CUDA device; on the CPU use --precision bf16'),
    (('nst', 'cyclegan'), 'fp16', 'nst has no fp16 path (fp32 or bf16 only): use --precision bf16 or fp32, or leave nst out of --methods'),
    (('cyclegan',), 'fp64', "precision must be one of ('fp32', 'bf16', 'fp16'), got 'fp64'"),
])
def test_a_precision_the_methods_cannot_run_is_refused_before_any_work(weights, photos, tmp_path, methods, precision, message):
    with pytest.raises(ValueError) as e:
        compare(photos, tmp_path / 'cmp', config(weights, methods=methods, precision=precision), log=lambda _: None)
    assert message in str(e.value)
    assert not (tmp_path / 'cmp').exists()


def test_cli_precision_fp16_on_the_cpu_is_one_line_before_any_work(weights, photos, tmp_path):
    args = ['compare', '--photos', photos, '--outdir', tmp_path / 'cmp', '--no-align', '--device', 'cpu', '--methods', 'cyclegan',
            '--cyclegan', weights['cyclegan'], '--precision', 'fp16']
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == 1 and 'fp16 needs a CUDA device; on the CPU use --precision bf16' in result.output, result.output
    assert not (tmp_path / 'cmp').exists()
