"""Smoke tests of `pstyle layers|swap|mix|stylize|stylize-grid` through click, and their errors."""

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from pstyle.cli import main
from pstyle.stylize import blend
from pstyle.stylize import layer_weights as lw
from pstyle.models.checkpoint import load_network, save_network

PROJ = ['--steps', '1', '--lpips-weight', '0', '--mse-weight', '1', '--no-metrics', '--device', 'cpu']


@pytest.fixture(scope='module')
def nets(tmp_path_factory, make_G):
    root = tmp_path_factory.mktemp('cli')
    G_a = make_G(seed=5)
    save_network(root / 'a.pt', G_ema=G_a)
    save_network(root / 'b.pt', G_ema=make_G.finetuned(G_a))
    save_network(root / 'c.pt', G_ema=make_G(synthesis_kwargs=dict(channel_max=16)))
    photos = root / 'photos'
    photos.mkdir()
    rng = np.random.RandomState(0)
    for i in range(2):
        Image.fromarray(rng.randint(0, 255, (32, 32, 3), dtype=np.uint8)).save(photos / f'p{i}.png')
    return root


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def test_layers(nets):
    result = invoke('layers', '--resolution', 1024, '--swap-res', 32)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[7].split()[:4] == ['6', '32', '0.000', 'A'] and lines[8].split()[:4] == ['7', '64', '1.000', 'B']
    result = invoke('layers', '--network', nets / 'a.pt', '--preset', 'structure', '--json')
    rows = json.loads(result.output)
    assert [r['weight'] for r in rows] == [1, 1, 1, 0, 0, 0, 0, 0] and rows[1]['layers'] == ['synthesis.b8.conv0', 'synthesis.b4.torgb']
    result = invoke('layers', '--network', nets / 'a.pt', '--rows', 'b16,0', '--json')
    assert [r['weight'] for r in json.loads(result.output)] == [1, 0, 0, 1, 1, 0, 0, 0]
    result = CliRunner().invoke(main, ['layers', '--network', str(nets / 'a.pt'), '--rows', 'res:12'])
    assert result.exit_code == 1 and '"res:12": 12 is not a resolution of this network (4, 8, 16, 32)' in result.output


@pytest.mark.parametrize('args, message', [
    (['--resolution', 64, '--swap-res', 48], 'power of two'),
    (['--resolution', 64, '--swap-res', 128], "above this network's resolution 64"),
    (['--resolution', 16, '--weights', '0,1'], 'exactly 6 values'),
    (['--resolution', 48], '--resolution must be a power of two'),
    ([], 'exactly one of --network and --resolution'),
])
def test_layers_errors(args, message):
    result = invoke('layers', *args)
    assert result.exit_code == 1 and message in result.output


def test_swap(nets):
    out = nets / 'swapped.pt'
    result = invoke('swap', '--base', nets / 'a.pt', '--styled', nets / 'b.pt', '--swap-res', 8, '--out', out)
    assert result.exit_code == 0, result.output
    G = load_network(out)['G_ema']
    G_a, G_b = load_network(nets / 'a.pt')['G_ema'], load_network(nets / 'b.pt')['G_ema']
    ref = blend.blend_generators(G_a, G_b, lw.resolve_weights(G_a, swap_res=8))
    for name, tensor in ref.state_dict().items():
        assert torch.equal(G.state_dict()[name], tensor), name
    record = json.loads((nets / 'swapped.pt.json').read_text())
    assert record['weights'] == [0, 0, 0, 1, 1, 1, 1, 1] and len(record['base']['sha256']) == 64
    assert record['summary']['from_b'] > 0


def test_swap_errors(nets, tmp_path, monkeypatch):
    result = invoke('swap', '--base', nets / 'a.pt', '--styled', nets / 'c.pt', '--out', tmp_path / 'x.pt')
    assert result.exit_code == 1 and 'synthesis.b4.const has shape [32, 4, 4] in A but [16, 4, 4] in B' in result.output
    result = invoke('swap', '--base', nets / 'a.pt', '--styled', nets / 'b.pt', '--out', tmp_path / 'x.pkl')
    assert result.exit_code == 1 and 'use a .pt, .pth or .safetensors' in result.output
    # The official names without network access: a message naming the URL and where to put the file.
    monkeypatch.setenv('PSTYLE_CACHE_DIR', str(tmp_path / 'cache'))
    monkeypatch.delenv('PSTYLE_NETWORK_FFHQ', raising=False)
    result = invoke('swap', '--base', 'ffhq', '--styled', 'metfaces', '--out', tmp_path / 'x.pt')
    assert result.exit_code == 1
    assert 'stylegan2-ada-pytorch/pretrained/ffhq.pkl' in result.output and str(tmp_path / 'cache') in result.output


def test_mix(nets, tmp_path):
    result = invoke('mix', '--network', nets / 'a.pt', '--content', 'seeds:0-1', '--style', 'seeds:7',
                    '--preset', 'fine', '--outdir', tmp_path)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in tmp_path.glob('seed*.png')) == ['seed0000-seed0007.png', 'seed0001-seed0007.png']
    assert Image.open(tmp_path / 'grid.png').size == (2 * 32, 3 * 32)
    data = np.load(tmp_path / 'latents.npz')
    assert data['w'].shape == (2, 8, 16) and list(data['names']) == ['seed0000-seed0007', 'seed0001-seed0007']
    result = invoke('mix', '--network', nets / 'a.pt', '--content', 'seeds:0', '--style', 'images:x', '--outdir', tmp_path)
    assert result.exit_code == 1 and 'x: no such file or folder' in result.output


def test_mix_projects_images_and_selects_latents_by_stem(nets, tmp_path):
    """`pstyle mix --content images:DIR` projects the photos; their latents are then selected by stem."""
    first = tmp_path / 'first'
    result = invoke('mix', '--network', nets / 'a.pt', '--content', f'images:{nets / "photos"}', '--style', 'seeds:7',
                    '--no-align', '--steps', '1', '--lpips-weight', '0', '--mse-weight', '1', '--device', 'cpu', '--outdir', first)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in first.glob('p*.png')) == ['p0-seed0007.png', 'p1-seed0007.png']
    project = tmp_path / 'proj'
    result = invoke('project', '--network', nets / 'a.pt', '-i', nets / 'photos', '--outdir', project, '--steps', '1',
                    '--lpips-weight', '0', '--mse-weight', '1', '--set', 'w_avg_samples=100', '--device', 'cpu')
    assert result.exit_code == 0, result.output
    second = tmp_path / 'second'
    result = invoke('mix', '--network', nets / 'a.pt', '--content', f'latents:{project / "latents.npz"}:p1',
                    '--style', f'latents:{project / "latents.npz"}:p0', '--outdir', second)  # project names latents by the folder-run name (was the file name)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in second.glob('p*.png')) == ['p1-p0.png']
    result = invoke('mix', '--network', nets / 'c.pt', '--content', f'latents:{project / "latents.npz"}:p1',
                    '--style', 'seeds:1', '--outdir', tmp_path / 'third')
    assert result.exit_code == 1 and '--content latents:' in result.output and 'projected into another network' in result.output


def test_stylize(nets, tmp_path):
    result = invoke('stylize', '--photos', nets / 'photos', '--base', nets / 'a.pt', '--styled', nets / 'b.pt',
                    '--swap-res', 16, '--no-align', *PROJ, '--outdir', tmp_path)
    assert result.exit_code == 0, result.output
    assert '2 of 2 photo(s) stylized (swap-res 16)' in result.output
    assert (tmp_path / 'p0.png').is_file() and (tmp_path / 'projected' / 'p1.png').is_file()
    assert json.loads((tmp_path / 'manifest.json').read_text())['weights'] == [0, 0, 0, 0, 0, 1, 1, 1]
    before = (tmp_path / 'p0.png').stat().st_mtime_ns
    (tmp_path / 'p1.png').unlink()                              # as if killed before p1 was finished
    result = invoke('stylize', '--photos', nets / 'photos', '--base', nets / 'a.pt', '--styled', nets / 'b.pt',
                    '--swap-res', 16, '--no-align', *PROJ, '--outdir', tmp_path, '--resume')
    assert result.exit_code == 0 and '2 of 2 photo(s) stylized' in result.output, result.output
    assert 'p1.png -> ' in result.stderr and 'p0.png -> ' not in result.stderr   # only p1 was done again
    assert (tmp_path / 'p1.png').is_file() and (tmp_path / 'p0.png').stat().st_mtime_ns == before


def test_stylize_errors(nets, tmp_path):
    result = invoke('stylize', '--photos', nets / 'photos', '--base', nets / 'a.pt', '--no-align', *PROJ, '--outdir', tmp_path)
    assert result.exit_code == 1 and 'give --styled (layer swapping) and/or --mix-style' in result.output
    bad = tmp_path / 'bad'
    bad.mkdir()
    Image.new('RGB', (40, 30)).save(bad / 'wide.png')
    result = invoke('stylize', '--photos', bad, '--base', nets / 'a.pt', '--styled', nets / 'b.pt', '--no-align', *PROJ,
                    '--outdir', tmp_path / 'out')
    assert result.exit_code == 1 and 'every photo failed' in result.output and '40x30 is not square' in result.output
    result = invoke('stylize', '--photos', nets / 'photos', '--base', nets / 'a.pt', '--styled', nets / 'b.pt',
                    '--swap-res', 8, '--preset', 'fine', '--outdir', tmp_path)
    assert result.exit_code == 1 and 'give only one of --weights, --swap-res and --preset' in result.output


def tiles(path, cols, size=32):
    image = np.asarray(Image.open(path))
    rows = image.shape[0] // size
    assert image.shape == (rows * size, cols * size, 3)
    return image.reshape(rows, size, cols, size, 3).transpose(0, 2, 1, 3, 4)


def test_stylize_grid_swap_columns(nets, tmp_path):
    out = tmp_path / 'fig.png'
    result = invoke('stylize-grid', '--photos', nets / 'photos', '--base', nets / 'a.pt', '--styled', nets / 'b.pt',
                    '--swap-res', '4,32', '--no-align', '--no-labels', *PROJ, '--out', out)
    assert result.exit_code == 0, result.output
    t = tiles(out, cols=4)  # photo, projected, swap 4, swap 32
    assert t.shape[0] == 2
    assert np.array_equal(t[:, 3], t[:, 1])           # Swap at the output resolution = A = the projection.
    assert not np.array_equal(t[:, 2], t[:, 1])
    record = json.loads((tmp_path / 'fig.png.json').read_text())
    assert record['columns'] == ['photo', 'projected', 'swap 4', 'swap 32'] and record['rows'] == ['p0', 'p1']
    labelled = tmp_path / 'labelled.png'
    invoke('stylize-grid', '--photos', nets / 'photos' / 'p0.png', '--base', nets / 'a.pt', '--styled', nets / 'b.pt',
           '--swap-res', '4,32', '--no-align', *PROJ, '--out', labelled)
    w, h = Image.open(labelled).size
    assert w > 4 * 32 and h > 32  # Room for the labels.


def test_stylize_grid_strength_columns(nets, tmp_path):
    out = tmp_path / 'fig.png'
    result = invoke('stylize-grid', '--photos', nets / 'photos' / 'p1.png', '--base', nets / 'a.pt', '--mix-style', 'seeds:3',
                    '--strengths', '0,1', '--preset', 'fine', '--no-align', '--no-labels', *PROJ, '--out', out)
    assert result.exit_code == 0, result.output
    t = tiles(out, cols=4)
    assert np.array_equal(t[0, 2], t[0, 1]) and not np.array_equal(t[0, 3], t[0, 1])  # Strength 0 = the content.


@pytest.mark.parametrize('args, message', [
    (['--swap-res', '8', '--strengths', '1'], 'exactly one of --swap-res (list) and --strengths (list)'),
    (['--swap-res', '8,x'], 'must be integers'),
    (['--swap-res', '12'], 'power of two'),
    (['--swap-res', '8,64'], "above this network's resolution 32"),
    (['--strengths', '0,2'], r'--style-strength must be in [0, 1]'),
    (['--swap-res', '8', '--preset', 'fine'], 'replace --weights/--preset'),
    (['--strengths', '0,1', '--blend-width', '1'], '--blend-width goes with --swap-res columns'),
    (['--swap-res', '8', '--mix-style', 'seeds:1-2'], 'takes one style latent, got 2 (seed0001, seed0002)'),
])
def test_stylize_grid_errors(nets, tmp_path, args, message):
    result = invoke('stylize-grid', '--photos', nets / 'photos', '--base', nets / 'a.pt', '--styled', nets / 'b.pt',
                    '--no-align', *PROJ, *args, '--out', tmp_path / 'g.png')
    assert result.exit_code != 0 and message in result.output


def test_stylize_and_grid_with_pivotal_tuning(nets, tmp_path):
    result = invoke('stylize', '--photos', nets / 'photos' / 'p0.png', '--base', nets / 'a.pt', '--styled', nets / 'b.pt',
                    '--swap-res', 8, '--no-align', *PROJ, '--pti', '--pti-steps', 2, '--precision', 'bf16',
                    '--outdir', tmp_path / 'out')
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / 'out' / 'manifest.json').read_text())
    assert manifest['pti']['num_steps'] == 2 and manifest['items'][0]['pti']['steps'] == 2
    assert manifest['projection']['precision'] == manifest['pti']['precision'] == 'bf16'
    assert (tmp_path / 'out' / 'pti' / 'p0.safetensors').is_file()
    out = tmp_path / 'fig.png'
    result = invoke('stylize-grid', '--photos', nets / 'photos', '--base', nets / 'a.pt', '--styled', nets / 'b.pt',
                    '--swap-res', '4,32', '--no-align', '--no-labels', *PROJ, '--project-preset', 'best', '--pti-steps', 2, '--out', out)
    assert result.exit_code == 0, result.output
    t = tiles(out, cols=4)
    assert np.array_equal(t[:, 3], t[:, 1])  # Swap at the output resolution = the tuned A = its projection.
    record = json.loads((tmp_path / 'fig.png.json').read_text())
    assert sorted(record['pti']['photos']) == ['p0', 'p1'] and record['pti']['config']['num_steps'] == 2
    assert (tmp_path / 'fig_pti' / 'p1.safetensors').is_file()


def test_stylize_progress_on_stderr_results_on_stdout(nets, tmp_path):
    args = ['stylize', '--photos', nets / 'photos' / 'p0.png', '--base', nets / 'a.pt', '--styled', nets / 'b.pt',
            '--no-align', *PROJ, '--steps', '2']
    result = CliRunner().invoke(main, [str(a) for a in [*args, '--outdir', tmp_path / 'o']])
    assert result.exit_code == 0, result.output
    assert len(result.stdout.splitlines()) == 1 and result.stdout.startswith('1 of 1 photo(s) stylized')
    err = result.stderr.splitlines()
    assert any(line.startswith('project 1 photo(s): step 1/2 loss ') and 'ETA' in line for line in err)
    assert any(line.startswith('project 1 photo(s): step 2/2 loss ') and 'done in' in line for line in err)
    quiet = CliRunner().invoke(main, [str(a) for a in [*args, '--outdir', tmp_path / 'q', '--quiet']])
    assert quiet.exit_code == 0 and 'step 1/2' not in quiet.stderr


def test_stylize_grid_progress_on_stderr_results_on_stdout(nets, tmp_path):
    args = ['stylize-grid', '--photos', nets / 'photos' / 'p0.png', '--base', nets / 'a.pt', '--styled', nets / 'b.pt',
            '--no-align', *PROJ, '--steps', '2', '--swap-res', '8,16']
    result = CliRunner().invoke(main, [str(a) for a in [*args, '--out', tmp_path / 'g.png']])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [f'saved {tmp_path / "g.png"}: 1 photo(s) x 4 columns']  # photo, projected, 2 swaps
    assert any(line.startswith('project 1 photo(s): step 2/2 loss ') and 'done in' in line for line in result.stderr.splitlines())
    quiet = CliRunner().invoke(main, [str(a) for a in [*args, '--out', tmp_path / 'q.png', '--quiet']])
    assert quiet.exit_code == 0 and 'step 1/2' not in quiet.stderr
