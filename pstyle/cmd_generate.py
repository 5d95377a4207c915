"""`pstyle generate` and `pstyle style-mix`: thin shells over `training.generate`."""

from pathlib import Path

import click
import numpy as np

from pstyle.options import FINITE_FLOAT, as_click_error, styled_delta_options
from pstyle.models import render as gen
from pstyle.models.checkpoint import load_network
from pstyle.metrics.weights import file_sha256
from pstyle.stylize.fewshot import styled_generator


def _load_G(network, device, with_sha256=False):
    device = gen.pick_device(device)
    nets = load_network(network, device=device)
    G = nets['G_ema'].eval().requires_grad_(False).to(device)
    return (G, file_sha256(nets['path'])) if with_sha256 else G


def _common_options(f):
    options = [
        click.option('--network', 'network', required=True, help='Network file, URL or official name (ffhq, metfaces, ...).'),
        click.option('--trunc', 'truncation_psi', type=FINITE_FLOAT, default=1.0, show_default=True, help='Truncation psi.'),
        click.option('--trunc-cutoff', 'truncation_cutoff', type=click.IntRange(min=0), default=None, help='Truncate only W+ rows below this index.'),
        click.option('--class', 'class_idx', type=click.IntRange(min=0), default=None, help='Class label (conditional networks).'),
        click.option('--noise-mode', type=click.Choice(['const', 'random', 'none']), default='const', show_default=True, help='Noise inputs.'),
        click.option('--precision', type=click.Choice(gen.PRECISIONS), default='fp32', show_default=True, help='fp32, bf16 (fast on CPUs with AMX) or fp16 (CUDA).'),
        click.option('--batch', 'batch_size', type=click.IntRange(min=1), default=8, show_default=True, help='Images per forward pass (results do not depend on it).'),
        click.option('--device', default='auto', show_default=True, help='auto, cpu, cuda, cuda:1, ...'),
        click.option('--outdir', type=click.Path(file_okay=False, path_type=Path), required=True, help='Where to save the images.'),
    ]
    for option in reversed(options):
        f = option(f)
    return f


MAX_GRID = 4096  # A grid is one image in memory: beyond this, use the per-seed files.


@click.command()
@_common_options
@click.option('--seeds', type=str, default=None, help='Seeds, e.g. 0-7,42.')
@click.option('--projected-w', type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None, help='Render saved latents (.npz from `pstyle project`, with its noise maps when --noise-mode const, or NVIDIA\'s projector).')
@click.option('--pti', is_flag=True, help='With --projected-w: render each image with its pivotal-tuning delta (pti/ beside the latents).')
@click.option('--force', is_flag=True, help='With --projected-w: render latents recorded for another network anyway.')
@click.option('--grid', is_flag=True, help='Also save all images as one grid.png.')
@styled_delta_options
def generate(network, truncation_psi, truncation_cutoff, class_idx, noise_mode, precision, batch_size, device, outdir, seeds, projected_w, pti, force, grid,
             styled_delta, delta_alpha):
    """Generate images from seeds or from saved W / W+ latents."""
    if (seeds is None) == (projected_w is None):
        raise click.UsageError('give exactly one of --seeds and --projected-w')
    if pti and projected_w is None:
        raise click.UsageError('--pti goes with --projected-w')
    if pti and styled_delta is not None:
        raise click.UsageError('--pti and --styled-delta cannot be combined: PTI deltas are tied to the base network')
    saved, tiles = 0, []
    try:
        G, network_sha256 = _load_G(network, device, with_sha256=True)
        if styled_delta is not None:
            G = styled_generator(G, styled_delta, delta_alpha)
        if seeds is not None:
            seed_list = gen.parse_range(seeds)
            if grid and len(seed_list) > MAX_GRID:
                raise ValueError(f'--grid holds at most {MAX_GRID} images; got {len(seed_list)} seeds')
        outdir.mkdir(parents=True, exist_ok=True)
        if projected_w is not None:
            names, images = gen.render_projected(G, projected_w, noise_mode, precision, batch_size, pti, network_sha256, force)
            named = zip(names, images)
        else:
            stream = gen.generate_images(G, seed_list, truncation_psi, truncation_cutoff, class_idx, noise_mode,
                                         precision, batch_size, progress=True)
            named = ((f'seed{seed:04d}', image) for seed, image in stream)
        for name, image in named:  # Each image reaches the disk as soon as it is made.
            gen.save_image(image, outdir / f'{name}.png')
            saved += 1
            if grid:
                tiles.append(image)
    except Exception as exc:  # noqa: BLE001 -- as_click_error re-raises what is not a user's error
        kept = f' ({saved} images saved to {outdir} before it)' if saved else ''
        raise as_click_error(exc, kept) from exc
    if grid:
        cols = int(np.ceil(np.sqrt(len(tiles))))
        rows = int(np.ceil(len(tiles) / cols))
        tiles += [np.zeros_like(tiles[0])] * (rows * cols - len(tiles))
        try:
            gen.save_image(gen.image_grid(np.stack(tiles), rows, cols), outdir / 'grid.png')
        except OSError as exc:  # Disk full, unwritable --outdir.
            raise as_click_error(exc) from exc
    click.echo(f'saved {saved} images to {outdir}')


@click.command('style-mix')
@_common_options
@click.option('--rows', 'row_seeds', required=True, help='Row seeds (content), e.g. 85,100,75.')
@click.option('--cols', 'col_seeds', required=True, help='Column seeds (style), e.g. 55,821,1789.')
@click.option('--styles', 'col_styles', default='0-6', show_default=True, help='W+ rows taken from the column seeds: indices (0-6), res:4-8, b16, coarse, middle, fine or layer names (see `pstyle layers`).')
def style_mix(network, truncation_psi, truncation_cutoff, class_idx, noise_mode, precision, batch_size, device, outdir, row_seeds, col_seeds, col_styles):
    """Style-mixing grid: row seeds x column seeds, chosen W+ indices from the columns."""
    try:
        G = _load_G(network, device)
        grid = gen.style_mix_grid(G, gen.parse_range(row_seeds), gen.parse_range(col_seeds), col_styles,
                                  truncation_psi, class_idx, noise_mode, precision, batch_size)
    except Exception as exc:  # noqa: BLE001 -- as_click_error re-raises what is not a user's error
        raise as_click_error(exc) from exc
    try:
        outdir.mkdir(parents=True, exist_ok=True)
        gen.save_image(grid, outdir / 'grid.png')
    except OSError as exc:  # Disk full, unwritable --outdir.
        raise as_click_error(exc) from exc
    click.echo(f'saved {outdir / "grid.png"}')
