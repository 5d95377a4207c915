"""`pstyle convert` and `pstyle info`: thin shells over training.checkpoint."""

import json
from pathlib import Path

import click

from pstyle.models import checkpoint as C
from pstyle.options import as_click_error


@click.command()
@click.argument('src')
@click.argument('dst', type=click.Path(dir_okay=False, path_type=Path))
@click.option('--format', 'fmt', type=click.Choice(['native', 'rosinality', 'nvidia']), default='native',
              show_default=True,
              help='native: tensors + JSON config (.pt/.pth/.safetensors); rosinality: {g_ema, latent_avg, g, d}; '
                   'nvidia: a network snapshot (.pkl) for NVIDIA\'s legacy.load_network_pkl, whose embedded '
                   'module source (ours) runs when NVIDIA\'s code opens it')
@click.option('--skip-d', is_flag=True, help='Leave the discriminator out (not with --format nvidia)')
@click.option('--skip-g', is_flag=True, help='Leave the training generator G out; G_ema is what renders (nvidia: its G slot gets a copy of G_ema)')
@click.option('--fp16', is_flag=True, help='native: store the tensors in half precision (half the size; they load as float32)')
@click.option('--cache-dir', type=click.Path(file_okay=False, path_type=Path), default=None,
              help='Download cache for URLs and short names [default: $PSTYLE_CACHE_DIR or ~/.cache/portrait-stylegan/networks]')
def convert(src, dst, fmt, skip_d, skip_g, fp16, cache_dir):
    """Convert SRC (NVIDIA/TF/rosinality/our file, URL or short name such as ffhq) to DST.

    \b
    Examples:
      pstyle convert network-snapshot-001000.pkl ffhq-ft.safetensors
      pstyle convert stylegan2-ffhq-config-f.pkl ffhq.pt
      pstyle convert ffhq-ft.pt ffhq-ft-rosinality.pt --format rosinality
      pstyle convert ffhq-ft.pt ffhq-ft.pkl --format nvidia
      pstyle convert network-snapshot-000300.pt demo.safetensors --skip-g --fp16
    """
    try:
        summary = C.convert_network(src, dst, format=fmt, skip_d=skip_d, skip_g=skip_g, fp16=fp16, cache_dir=cache_dir)
    except C.CheckpointError as e:
        raise click.ClickException(str(e)) from e
    except OSError as e:  # disk full, unwritable folder: the file and the cause, in one line
        raise as_click_error(e) from e
    click.echo(f'{summary["source"]} ({summary["input_format"]}) -> {summary["output"]} '
               f'({summary["output_format"]}): {", ".join(summary["networks"])}')


@click.command()
@click.argument('file')
@click.option('--json', 'as_json', is_flag=True, help='Print the summary as JSON')
@click.option('--cache-dir', type=click.Path(file_okay=False, path_type=Path), default=None,
              help='Download cache for URLs and short names')
def info(file, as_json, cache_dir):
    """Describe the networks in FILE: format, resolution, mapping depth, w_dim, num_ws, channels, sizes.

    \b
    Examples:
      pstyle info network-snapshot-001000.pkl
      pstyle info ffhq --json
    """
    try:
        summary = C.network_info(C.load_network(file, cache_dir=cache_dir))
    except C.CheckpointError as e:
        raise click.ClickException(str(e)) from e
    if as_json:
        click.echo(json.dumps(summary, indent=1))
        return
    click.echo(f'source: {summary["source"]}\nformat: {summary["format"]}')
    for name, net in summary['networks'].items():
        click.echo(f'{name}: {net["class_name"]} {net["img_resolution"]}x{net["img_resolution"]}x{net["img_channels"]}'
                   f', c_dim {net["c_dim"]}')
        if 'w_dim' in net:
            click.echo(f'  z_dim {net["z_dim"]}, w_dim {net["w_dim"]}, num_ws {net["num_ws"]}, '
                       f'mapping layers {net["mapping_layers"]}')
        click.echo('  channels: ' + ' '.join(f'{res}:{ch}' for res, ch in net['channels'].items()))
        click.echo(f'  parameters: {net["num_params"]:,} (+ {net["num_buffers"]:,} buffer values)')
