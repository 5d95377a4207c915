"""`pstyle nst`, `pstyle adain`, `pstyle cyclegan` through the real CLI group."""

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from pstyle.cli import main


@pytest.fixture(scope='module')
def vgg_file(vgg, tmp_path_factory):
    """The random VGG19 saved as torchvision's file is laid out (features.<i>.weight)."""
    path = tmp_path_factory.mktemp('vgg') / 'random-vgg19.pth'
    torch.save({f'features.{k}': v for k, v in vgg.features.state_dict().items()}, path)
    return path


def _invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_help_lists_the_baselines():
    result = _invoke('--help')
    assert result.exit_code == 0
    for name in ('nst', 'adain', 'adain-train', 'cyclegan', 'cyclegan-train', 'distill', 'export'):
        assert name in result.output


def test_adain_interpolates_styles_into_one_image(published, ref, tmp_path, assert_parity):
    result = _invoke('adain', '--content', published['content'], '--style', published['style'], '--style', published['style2'],
                     '--style-weights', '3,7', '--vgg', published['vgg'], '--decoder', published['decoder'],
                     '--content-size', 0, '--style-size', 0, '--outdir', tmp_path)
    assert result.exit_code == 0, result.output
    assert '1 done, 0 failed' in result.output
    assert_parity(np.asarray(Image.open(tmp_path / 'content.png')), ref['adain_interp_3_7'][0])
    manifest = json.loads((tmp_path / 'manifest.json').read_text())
    assert manifest['options']['style_weights'] == [0.3, 0.7] and manifest['options']['alpha'] == 1.0


def test_adain_errors_are_one_line(published, tmp_path):
    result = _invoke('adain', '--content', published['content'], '--style', published['style'], '--style-weights', '1,x',
                     '--vgg', published['vgg'], '--decoder', published['decoder'], '--outdir', tmp_path)
    assert result.exit_code == 2 and 'expected comma-separated numbers' in result.output
    result = _invoke('adain', '--content', published['content'], '--style', published['style'],
                     '--vgg', published['decoder'], '--decoder', published['decoder'], '--outdir', tmp_path)
    assert result.exit_code == 1 and 'not an AdaIN vgg_normalised.pth state_dict' in result.output
    result = _invoke('adain', '--content', published['content'], '--style', published['style'], '--alpha', 2,
                     '--vgg', published['vgg'], '--decoder', published['decoder'], '--outdir', tmp_path)
    assert result.exit_code == 2 and '--alpha' in result.output


def test_cyclegan_translates_a_folder_and_reports_failures(published, ref, tmp_path, assert_parity):
    folder = tmp_path / 'in'
    folder.mkdir()
    Image.open(published['content']).save(folder / 'photo.png')
    (folder / 'zz.png').write_text('not an image')
    result = _invoke('cyclegan', '--checkpoint', published['cyclegan'], '--input', folder, '--outdir', tmp_path / 'out')
    assert result.exit_code == 0, result.output
    assert '1 done, 1 failed' in result.output and 'failed: ' in result.output and 'zz.png' in result.output
    assert_parity(np.asarray(Image.open(tmp_path / 'out' / 'photo.png')), ref['cyclegan_out'][0])


def test_nst_runs_on_given_vgg_weights(published, vgg_file, tmp_path):
    result = _invoke('nst', '--content', published['content'], '--style', published['style'], '--style', published['style2'],
                     '--style-blend-weights', '1,1', '--vgg-weights', vgg_file, '--steps', 2, '--size', 24, '--scales', 1,
                     '--original-colors', 'luminance', '--outdir', tmp_path)
    assert result.exit_code == 0, result.output
    assert Image.open(tmp_path / 'content.png').size == (24, 24)
    manifest = json.loads((tmp_path / 'manifest.json').read_text())
    assert manifest['inputs']['vgg']['path'] == str(vgg_file) and manifest['options']['original_colors'] == 'luminance'


def test_nst_without_weights_says_which_file_to_get(published, tmp_path, monkeypatch):
    monkeypatch.setenv('PSTYLE_CACHE_DIR', str(tmp_path / 'cache'))
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch'))
    monkeypatch.setenv('PSTYLE_OFFLINE', '1')
    monkeypatch.delenv('PSTYLE_VGG19_WEIGHTS', raising=False)
    result = _invoke('nst', '--content', published['content'], '--style', published['style'], '--outdir', tmp_path / 'out')
    assert result.exit_code == 1
    assert 'vgg19-dcbb9e9d.pth not found' in result.output and '--vgg-weights' in result.output


def test_an_unreadable_style_image_stops_the_run_with_its_name(published, tmp_path):
    (tmp_path / 'style.jpg').write_bytes(b'not a jpeg')
    result = _invoke('adain', '--content', published['content'], '--style', tmp_path / 'style.jpg',
                     '--vgg', published['vgg'], '--decoder', published['decoder'], '--outdir', tmp_path / 'out')
    assert result.exit_code == 1 and 'style.jpg: cannot read image' in result.output


def test_precision_reaches_the_manifest_and_fp16_on_the_cpu_is_one_line(published, tmp_path):
    adain = ['adain', '--content', published['content'], '--style', published['style'], '--vgg', published['vgg'],
             '--decoder', published['decoder'], '--content-size', 0, '--style-size', 0, '--device', 'cpu']
    cyclegan = ['cyclegan', '--checkpoint', published['cyclegan'], '--input', published['content'], '--device', 'cpu']
    result = _invoke(*cyclegan, '--outdir', tmp_path / 'bf16', '--precision', 'bf16')   # adain's is the same option
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / 'bf16' / 'manifest.json').read_text())['options']['precision'] == 'bf16'
    for args in (adain, cyclegan):
        result = _invoke(*args, '--outdir', tmp_path / 'fp16', '--precision', 'fp16')
        assert result.exit_code == 1 and 'Error: fp16 needs a CUDA device; on the CPU use --precision bf16' in result.output
        result = _invoke(*args, '--outdir', tmp_path / 'int8', '--precision', 'int8')
        assert result.exit_code == 2 and "'int8' is not one of 'fp32', 'bf16', 'fp16'" in result.output
    assert not (tmp_path / 'fp16').exists()
