"""`pstyle generate` / `pstyle style-mix` through the real CLI group, on a network file."""

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from pstyle.cli import main
from pstyle.models.checkpoint import save_network


@pytest.fixture(scope='module')
def network(tmp_path_factory, tiny_network_factory):
    G = tiny_network_factory(seed=3)
    path = tmp_path_factory.mktemp('net') / 'tiny.pt'
    save_network(path, G_ema=G)
    return path


def test_help_lists_every_subcommand():
    result = CliRunner().invoke(main, ['--help'])
    assert result.exit_code == 0, result.output
    for name in ['generate', 'style-mix', 'convert', 'info', 'align', 'paste-back', 'project', 'swap', 'stylize',
                 'metrics', 'dataset', 'train', 'bench', 'layers', 'mix']:
        assert name in result.output


def test_generate_seeds_grid_and_projected_w(network, tmp_path):
    out = tmp_path / 'out'
    result = CliRunner().invoke(main, ['generate', '--network', str(network), '--seeds', '0-2', '--outdir', str(out), '--grid', '--batch', '2'])
    assert result.exit_code == 0, result.output
    names = sorted(p.name for p in out.iterdir())
    assert names == ['grid.png', 'seed0000.png', 'seed0001.png', 'seed0002.png']
    img = np.asarray(Image.open(out / 'seed0001.png'))
    assert img.shape == (16, 16, 3) and img.std() > 0
    # Batch size must not change the pixels.
    out1 = tmp_path / 'out1'
    assert CliRunner().invoke(main, ['generate', '--network', str(network), '--seeds', '1', '--outdir', str(out1)]).exit_code == 0
    assert np.abs(np.asarray(Image.open(out1 / 'seed0001.png')).astype(int) - img).max() <= 1

    from pstyle.models.checkpoint import load_network
    from pstyle.models.render import seeds_to_ws
    G = load_network(network)['G_ema']
    np.savez(tmp_path / 'proj.npz', ws=seeds_to_ws(G, [1]).numpy(), names=np.array(['face.jpg']))
    out2 = tmp_path / 'out2'
    result = CliRunner().invoke(main, ['generate', '--network', str(network), '--projected-w', str(tmp_path / 'proj.npz'), '--outdir', str(out2)])
    assert result.exit_code == 0, result.output
    assert np.abs(np.asarray(Image.open(out2 / 'face.png')).astype(int) - img).max() <= 1


def test_generate_errors(network, tmp_path):
    runner = CliRunner()
    result = runner.invoke(main, ['generate', '--network', str(network), '--outdir', str(tmp_path)])
    assert result.exit_code == 2 and 'exactly one of --seeds and --projected-w' in result.output
    result = runner.invoke(main, ['generate', '--network', str(network), '--seeds', '0', '--class', '1', '--outdir', str(tmp_path)])
    assert result.exit_code == 1 and 'unconditional' in result.output
    result = runner.invoke(main, ['generate', '--network', str(tmp_path / 'missing.pkl'), '--seeds', '0', '--outdir', str(tmp_path)])
    assert result.exit_code == 1 and 'missing.pkl' in result.output
    result = runner.invoke(main, ['generate', '--network', str(network), '--seeds', '0', '--precision', 'fp16', '--device', 'cpu', '--outdir', str(tmp_path)])
    assert result.exit_code == 1 and 'fp16 needs a CUDA device' in result.output


def test_style_mix_command(network, tmp_path):
    result = CliRunner().invoke(main, ['style-mix', '--network', str(network), '--rows', '1,2', '--cols', '3,4,5', '--styles', '0-1', '--outdir', str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert Image.open(tmp_path / 'grid.png').size == (4 * 16, 3 * 16)
    result = CliRunner().invoke(main, ['style-mix', '--network', str(network), '--rows', '1', '--cols', '3', '--styles', '0-40', '--outdir', str(tmp_path)])
    assert result.exit_code == 1 and 'out of range' in result.output


def test_projected_w_of_another_network_is_refused_unless_forced(network, tmp_path):
    from pstyle.models import deltas, latents
    from pstyle.models.checkpoint import load_network
    from pstyle.models.render import seeds_to_ws
    G = load_network(network)['G_ema']
    path = tmp_path / 'latents.npz'
    latents.save_latents(path, ['alice.png'], seeds_to_ws(G, [1]).numpy(), meta=dict(weights_sha256='e' * 64))
    run = lambda *extra: CliRunner().invoke(main, ['generate', '--network', str(network), '--projected-w', str(path),
                                                   '--outdir', str(tmp_path / 'out'), *extra])
    result = run()
    assert result.exit_code == 1
    assert f'weights_sha256 {"e" * 64}' in result.output and f'weights_sha256 {deltas.weights_sha256(G)}' in result.output
    assert '--force' in result.output and not (tmp_path / 'out' / 'alice.png').exists()
    result = run('--force')
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / 'out').iterdir()) == ['alice.png']


def test_seed_ranges_are_lazy():
    """`--seeds 0-1000000000` must not build a billion-element list (an uncapped run was killed at 22.8 GB)."""
    from pstyle.models.render import parse_range
    seeds = parse_range('0-1000000000,7')
    assert len(seeds) == 1_000_000_002 and seeds[5] == 5 and seeds[-1] == 7 and seeds[-2] == 1_000_000_000
    assert all(isinstance(r, range) for r in seeds.ranges)


def test_images_reach_the_disk_as_they_are_made(network, tmp_path, monkeypatch):
    """A run that fails (or is killed) midway keeps every image made before: nothing waits for the end."""
    from pstyle.models import render
    real, calls = render.synthesize, {'n': 0}

    def failing_third_batch(*args, **kwargs):
        calls['n'] += 1
        if calls['n'] == 3:
            raise torch.OutOfMemoryError('simulated failure in batch 3')
        return real(*args, **kwargs)
    monkeypatch.setattr(render, 'synthesize', failing_third_batch)
    out = tmp_path / 'out'
    result = CliRunner().invoke(main, ['generate', '--network', str(network), '--seeds', '0-9', '--outdir', str(out),
                                       '--batch', '2'])
    assert result.exit_code == 1 and 'out of memory (simulated failure in batch 3)' in result.output
    assert '(4 images saved to' in result.output
    assert sorted(p.name for p in out.iterdir()) == [f'seed000{k}.png' for k in range(4)]


def test_grid_size_is_bounded(network, tmp_path):
    result = CliRunner().invoke(main, ['generate', '--network', str(network), '--seeds', '0-100000', '--grid',
                                       '--outdir', str(tmp_path)])
    assert result.exit_code == 1 and '--grid holds at most 4096 images; got 100001 seeds' in result.output


@pytest.mark.parametrize('args', [['generate', '--trunc', 'nan'], ['mix', '--trunc', 'inf'], ['metrics', '--trunc', 'nan'],
                                  ['stylize', '--style-trunc', 'nan']])
def test_non_finite_truncation_is_refused(args):
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2 and f"{args[-1]!r} is not a finite number" in result.output


def test_non_finite_latents_are_refused_not_rendered_black(tiny_network_factory):
    from pstyle.models import render
    G = tiny_network_factory(resolution=8)
    ws = torch.zeros(2, G.num_ws, G.w_dim)
    ws[1, 0, 0] = float('nan')
    with pytest.raises(ValueError, match='the latents contain NaN or Inf'):
        render.synthesize(G, ws)


def _fail_with(monkeypatch, exc):
    from pstyle.models import render as gen

    def broken(*args, **kwargs):
        raise exc

    def broken_stream(*args, **kwargs):
        raise exc
        yield  # a generator, as generate_images
    monkeypatch.setattr(gen, 'generate_images', broken_stream)
    monkeypatch.setattr(gen, 'style_mix_grid', broken)


@pytest.mark.parametrize('command', [['generate', '--seeds', '0-1'], ['style-mix', '--rows', '1', '--cols', '2']])
def test_out_of_memory_is_one_line_and_a_bug_keeps_its_traceback(network, tmp_path, monkeypatch, command):
    args = [*command, '--network', str(network), '--outdir', str(tmp_path / 'out')]
    _fail_with(monkeypatch, torch.OutOfMemoryError('CUDA out of memory. Tried to allocate 9.00 GiB\n(details)'))
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1 and 'Error: out of memory (CUDA out of memory. Tried to allocate 9.00 GiB); lower --batch' in result.output
    assert 'Traceback' not in result.output
    _fail_with(monkeypatch, RuntimeError('mat1 and mat2 shapes cannot be multiplied'))
    result = CliRunner().invoke(main, args)
    assert isinstance(result.exception, RuntimeError) and 'mat1 and mat2' in str(result.exception)  # not hidden as a user error


def test_a_bad_device_is_one_line(network, tmp_path):
    result = CliRunner().invoke(main, ['generate', '--network', str(network), '--seeds', '0', '--device', 'gpu0',
                                       '--outdir', str(tmp_path / 'out')])
    assert result.exit_code == 1 and "--device 'gpu0': not a device (auto, cpu, cuda, cuda:1, ...)" in result.output
    if not torch.cuda.is_available():
        result = CliRunner().invoke(main, ['generate', '--network', str(network), '--seeds', '0', '--device', 'cuda',
                                           '--outdir', str(tmp_path / 'out')])
        assert result.exit_code == 1 and '--device cuda: no CUDA device is available here' in result.output


def test_projected_w_with_colliding_names_writes_every_image(network, tmp_path):
    from pstyle.models import latents
    from pstyle.models.checkpoint import load_network
    G = load_network(network)['G_ema']
    ws = torch.randn(3, G.num_ws, G.w_dim) * 0.1
    latents.save_latents(tmp_path / 'l.npz', ['x.jpg', 'x.png', 'x_png.png'], ws)
    result = CliRunner().invoke(main, ['generate', '--network', str(network), '--projected-w', str(tmp_path / 'l.npz'),
                                       '--device', 'cpu', '--force', '--outdir', str(tmp_path / 'out')])
    assert result.exit_code == 0, result.output
    assert 'saved 3 images' in result.output
    assert sorted(p.name for p in (tmp_path / 'out').iterdir()) == ['x.png', 'x_png.png', 'x_png_2.png']
