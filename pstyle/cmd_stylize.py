"""`pstyle layers|swap|mix|stylize|stylize-grid`: thin shells over `stylize/`."""

import functools
import json
from pathlib import Path

import click
import numpy as np

from pstyle.options import FINITE_FLOAT, as_click_error, styled_delta_options
from pstyle.stylize import layer_weights as lw
from pstyle.models.render import pick_device
from pstyle.stylize.files import table_generator
from pstyle.models import wplus
from pstyle.stylize.files import swap_networks
from pstyle.stylize import mix as mixing
from pstyle.stylize.files import load_generator
from pstyle.stylize.pipeline import StylizeConfig
from pstyle.stylize.pipeline import stylize_photos
from pstyle.stylize.pipeline import image_projector
from pstyle.stylize import grid
from pstyle.stylize.fewshot import styled_generator
from pstyle.torch_utils import progress



def weight_options(f):
    """The one per-layer control, shared by every stylization command."""
    options = [
        click.option('--weights', default=None, help='Per W+ row weights, num_ws floats in [0, 1]: 0 = A (base/content), 1 = B (styled/style).'),
        click.option('--swap-res', type=int, default=None, help='Rows read at resolution <= this from A, the rest from B (e.g. 32).'),
        click.option('--blend-width', type=float, default=None, help='Smooth transition around --swap-res, in octaves (0 = hard).'),
        click.option('--preset', type=click.Choice(list(lw.PRESETS)), default=None, help=f'Named band of rows from B (default {lw.DEFAULT_PRESET} when nothing else is given).'),
        click.option('--rows', default=None, help='W+ rows from B, the rest from A: fine, res:64-1024, b16, 7-17 (see `pstyle layers`).'),
        click.option('--style-strength', type=float, default=1.0, show_default=True, help='Multiplies every weight, in [0, 1].'),
        click.option('--preserve-color', is_flag=True, help='Take the colour rows (the `color` preset) from A / the content.'),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def spec_from_options(kw):
    return lw.make_spec(weights=kw.pop('weights'), swap_res=kw.pop('swap_res'), blend_width=kw.pop('blend_width'),
                        preset=kw.pop('preset'), style_strength=kw.pop('style_strength'),
                        preserve_color=kw.pop('preserve_color'), rows=kw.pop('rows'))


def click_errors(f):
    """User errors (bad specs, missing files, offline downloads) and out of memory -> a one-line click error."""
    @functools.wraps(f)
    def wrapper(*args, **kwargs):
        try:
            return f(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 -- as_click_error re-raises what is not a user's error
            raise as_click_error(exc) from exc
    return wrapper


def _device(device):
    return pick_device(device)


@click.command()
@click.option('--network', default=None, help='Network file, URL or name (ffhq, metfaces, ...).')
@click.option('--resolution', type=click.IntRange(min=4), default=None, help='Instead of --network: the table of a StyleGAN2 at this resolution.')
@click.option('--architecture', type=click.Choice(['skip', 'orig', 'resnet']), default='skip', show_default=True, help='With --resolution.')
@weight_options
@click.option('--json', 'as_json', is_flag=True, help='Print the rows as JSON.')
@click_errors
def layers(network, resolution, architecture, as_json, **kw):
    """Print the W+ table (index, resolution, layers) and the resolved per-row weights."""
    G = table_generator(network, resolution, architecture)
    weights = lw.resolve(G, spec_from_options(kw))
    if as_json:
        rows = [dict(index=r.index, resolution=r.resolution, layers=list(r.layers), weight=float(w))
                for r, w in zip(wplus.layer_table(G), weights)]
        click.echo(json.dumps(rows, indent=1))
    else:
        click.echo(lw.format_weights(G, weights))


@click.command()
@click.option('--base', required=True, help='Model A (e.g. ffhq): structure, the latent space photos are projected into.')
@click.option('--styled', required=True, help='Model B (e.g. metfaces), fine-tuned from A.')
@weight_options
@click.option('--mapping', type=click.Choice(['from-a', 'from-b', 'blend']), default='from-a', show_default=True, help='Where the mapping network and w_avg come from.')
@click.option('--out', type=click.Path(dir_okay=False, path_type=Path), required=True, help='Output network (.pt, .pth or .safetensors); a .json record is written beside it.')
@click.option('--device', default='cpu', show_default=True)
@click_errors
def swap(base, styled, mapping, out, device, **kw):
    """Blend two generators per W+ row (Toonify layer swapping) into a new network file."""
    spec = spec_from_options(kw)
    G, record = swap_networks(base, styled, spec, out, mapping=mapping, device=_device(device))
    click.echo(lw.format_weights(G, np.array(record["weights"])))
    click.echo(f'saved {out} ({record["seconds"]["blend"]:.2f} s to blend)')


_SOURCES = 'seeds:LIST, latents:FILE[:NAMES|INDICES] (names are file stems) or images:DIR|FILE (projected first)'


@click.command()
@click.option('--network', required=True, help='Network file, URL or name.')
@click.option('--content', required=True, help=_SOURCES + '.')
@click.option('--style', required=True, help=_SOURCES + '.')
@weight_options
@click.option('--trunc', 'truncation_psi', type=FINITE_FLOAT, default=1.0, show_default=True, help='Truncation psi for seeds.')
@click.option('--noise-mode', type=click.Choice(['const', 'random', 'none']), default='const', show_default=True)
@click.option('--align/--no-align', default=True, show_default=True, help='images: FFHQ-align them with dlib first; --no-align: aligned squares.')
@click.option('--project-preset', type=click.Choice(['fast', 'default', 'best']), default='default', show_default=True, help='images: projection preset (without PTI).')
@click.option('--steps', 'num_steps', type=click.IntRange(min=1), default=None, help='images: projection steps (overrides the preset).')
@click.option('--lpips-weight', type=click.FloatRange(min=0), default=None, help='images: projection LPIPS weight (0 = no LPIPS/VGG, e.g. offline).')
@click.option('--mse-weight', type=click.FloatRange(min=0), default=None, help='images: projection pixel MSE weight.')
@click.option('--force', is_flag=True, help='Use latents recorded for another network anyway.')
@click.option('--device', default='auto', show_default=True)
@click.option('--outdir', type=click.Path(file_okay=False, path_type=Path), required=True)
@styled_delta_options
@click_errors
def mix(network, content, style, truncation_psi, noise_mode, align, project_preset, num_steps, lpips_weight, mse_weight,
        force, device, outdir, styled_delta, delta_alpha, **kw):
    """Latent mixing: W+ rows of style latents into content latents, per-row weights."""
    device = _device(device)
    G, info = load_generator(network, device)
    project = dict(num_steps=num_steps, lpips_weight=lpips_weight, mse_weight=mse_weight)
    cfg = StylizeConfig(base=network, mix_style='images', align=align, project_preset=project_preset, pti=False,
                        project={k: v for k, v in project.items() if v is not None}, device=device)
    G_render = G if styled_delta is None else styled_generator(G, styled_delta, delta_alpha)  # Images project into G.
    if styled_delta is not None:
        info = dict(info, styled_delta=str(styled_delta), delta_alpha=delta_alpha)
    manifest = mixing.mix_to_folder(G_render, content, style, spec_from_options(kw), outdir, truncation_psi, noise_mode,
                                    project_fn=image_projector(G, cfg, device), network_info=info, force=force)
    click.echo(lw.format_weights(G, np.array(manifest['weights'])))
    click.echo(f'saved {len(manifest["images"])} mixes, grid.png and latents.npz to {outdir}')


def _pipeline_options(f):
    options = [
        click.option('--photos', type=click.Path(exists=True, path_type=Path), required=True, help='A photo or a folder of photos.'),
        click.option('--base', default='ffhq', show_default=True, help='Model A: photos are projected into it (file, URL or name).'),
        click.option('--styled', default=None, help='Model B, fine-tuned from A (e.g. metfaces): enables layer swapping.'),
        click.option('--mapping', type=click.Choice(['from-a', 'from-b', 'blend']), default='from-a', show_default=True, help='Mapping network and w_avg of the blended generator.'),
        click.option('--align/--no-align', default=True, show_default=True, help='FFHQ-align with dlib; --no-align: photos are already aligned squares.'),
        click.option('--landmarks', type=click.Path(dir_okay=False), default=None, help='dlib 68-point landmark model.'),
        click.option('--project-preset', type=click.Choice(['fast', 'default', 'best']), default='default', show_default=True, help='Projection preset (projectors/projector.py); `best` adds pivotal tuning.'),
        click.option('--invert', type=click.Choice(['optimize', 'encoder', 'encoder+optimize']), default='optimize', show_default=True, help='Inversion into --base: optimize from the mean w, one forward pass of --encoder, or optimize from its latent.'),
        click.option('--encoder', default=None, help='Encoder of --base for --invert encoder / encoder+optimize (pstyle train-encoder file, e4e/pSp checkpoint).'),
        click.option('--pti/--no-pti', 'pti', default=None, help='Pivotal tuning of the base per photo, blended with --styled [preset: best only].'),
        click.option('--pti-steps', type=click.IntRange(min=1), default=None, help='PTI steps [350].'),
        click.option('--pti-rank', type=click.IntRange(min=0), default=None, help='Tune each PTI delta as rank-R factors per weight, W0 + U V (compact; 0 = full) [0].'),
        click.option('--steps', 'num_steps', type=click.IntRange(min=1), default=None, help='Projection steps (overrides the preset).'),
        click.option('--space', type=click.Choice(['w', 'w+']), default=None, help='Projection space (overrides the preset).'),
        click.option('--lpips-weight', type=click.FloatRange(min=0), default=None, help='Projection LPIPS weight (0 = no LPIPS, e.g. offline).'),
        click.option('--mse-weight', type=click.FloatRange(min=0), default=None, help='Projection pixel MSE weight.'),
        click.option('--precision', type=click.Choice(['fp32', 'bf16', 'fp16']), default=None, help='Projection and PTI precision: bf16 (CPUs with AVX-512 BF16/AMX, GPUs), fp16 (CUDA) [fp32].'),
        click.option('--batch', 'batch_size', type=click.IntRange(min=1), default=4, show_default=True, help='Photos projected together.'),
        click.option('--metrics/--no-metrics', default=True, show_default=True, help='Identity and LPIPS to the photo (when their weights are available).'),
        click.option('--device', default='auto', show_default=True),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def _pipeline_config(kw, **extra):
    project = {k: kw.pop(k) for k in ('num_steps', 'space', 'lpips_weight', 'mse_weight', 'precision')}
    return StylizeConfig(base=kw.pop('base'), styled=kw.pop('styled'), mapping=kw.pop('mapping'),
                         align=kw.pop('align'), landmarks=kw.pop('landmarks'), project_preset=kw.pop('project_preset'),
                         project={k: v for k, v in project.items() if v is not None}, batch_size=kw.pop('batch_size'),
                         metrics=kw.pop('metrics'), device=kw.pop('device'), pti=kw.pop('pti'),
                         invert=kw.pop('invert'), encoder=kw.pop('encoder'),
                         pti_settings=_pti_settings(kw.pop('pti_steps'), kw.pop('pti_rank')), **extra)


def _pti_settings(num_steps, rank=None):
    return {k: v for k, v in dict(num_steps=num_steps, rank=rank).items() if v is not None}


@click.command()
@_pipeline_options
@weight_options
@click.option('--mix-style', default=None, help='Latent mixing with seeds:LIST, latents:FILE.npz[:NAMES] or images:DIR|FILE.')
@click.option('--style-trunc', type=FINITE_FLOAT, default=1.0, show_default=True, help='Truncation psi of style seeds.')
@click.option('--paste-back', is_flag=True, help='Also paste each portrait back into the original photo.')
@click.option('--feather', type=click.FloatRange(0, 0.5), default=0.1, show_default=True, help='Paste-back soft edge.')
@click.option('--outdir', type=click.Path(file_okay=False, path_type=Path), required=True)
@click.option('--resume', is_flag=True, help='Keep the photos already finished in --outdir (same networks and settings) and do only the rest.')
@click.option('--quiet', '-q', is_flag=True, help='No progress on stderr (step, loss, rate, ETA of projection and PTI).')
@styled_delta_options
@click_errors
def stylize(photos, mix_style, style_trunc, paste_back, feather, outdir, resume, quiet, styled_delta, delta_alpha, **kw):
    """Photos -> portraits: align, project into --base, render with the blended generator and/or
    mixed latents, optionally paste back. Writes images, latents.npz and manifest.json."""
    if styled_delta is not None and all(kw[k] is None for k in ('weights', 'swap_res', 'preset', 'rows')):
        kw['preset'] = 'all'  # A few-shot style is the whole tuned network unless rows are chosen.
    spec = spec_from_options(kw)
    cfg = _pipeline_config(kw, spec=spec, mix_style=mix_style, style_trunc=style_trunc, paste_back=paste_back, feather=feather,
                           styled_delta=styled_delta, delta_alpha=delta_alpha)
    manifest = stylize_photos(photos, outdir, cfg, log=lambda m: click.echo(m, err=True), progress=progress.reporter(not quiet),
                              resume=resume)
    click.echo(f'{manifest["num_ok"]} of {manifest["num_items"]} photo(s) stylized ({spec.describe()}); manifest: {outdir / "manifest.json"}')
    for note in manifest['notes']:
        click.echo(f'note: {note}', err=True)
    if manifest['num_ok'] == 0:
        raise click.ClickException(f'every photo failed; see {outdir / "manifest.json"}')


@click.command('stylize-grid')
@_pipeline_options
@click.option('--swap-res', 'swap_res_list', default=None, help='Columns: swap resolutions, e.g. 8,16,32,64.')
@click.option('--strengths', default=None, help='Columns: style strengths, e.g. 0,0.25,0.5,0.75,1 (of --weights/--preset).')
@click.option('--weights', default=None, help='With --strengths: per-row weights to scale.')
@click.option('--preset', type=click.Choice(list(lw.PRESETS)), default=None, help='With --strengths: the preset to scale.')
@click.option('--blend-width', type=float, default=None, help='With --swap-res: smooth transition, in octaves.')
@click.option('--preserve-color', is_flag=True, help='Colour rows from A / the content in every column.')
@click.option('--mix-style', default=None, help='One style latent: seeds:N, latents:FILE.npz:NAME or images:FILE.')
@click.option('--style-trunc', type=FINITE_FLOAT, default=1.0, show_default=True)
@click.option('--labels/--no-labels', default=True, show_default=True, help='Column and row labels.')
@click.option('--out', type=click.Path(dir_okay=False, path_type=Path), required=True, help='Figure file (.png, .jpg); a .json record is written beside it.')
@click.option('--quiet', '-q', is_flag=True, help='No progress on stderr (step, loss, rate, ETA of projection and PTI).')
@click_errors
def stylize_grid(photos, swap_res_list, strengths, weights, preset, blend_width, preserve_color, mix_style, style_trunc, labels, out, quiet,
                 **kw):
    """Paper figure: rows = photos, columns = swap resolutions or style strengths."""
    if (swap_res_list is None) == (strengths is None):
        raise click.UsageError('give exactly one of --swap-res (list) and --strengths (list)')
    if swap_res_list is not None:
        if weights is not None or preset is not None:
            raise click.UsageError('--swap-res columns replace --weights/--preset; use those with --strengths')
        kind, values = 'swap-res', grid.parse_columns(swap_res_list, 'swap-res')
        spec = lw.make_spec(blend_width=blend_width, swap_res=values[0], preserve_color=preserve_color)
    else:
        if blend_width is not None:
            raise click.UsageError('--blend-width goes with --swap-res columns')
        kind, values = 'strength', grid.parse_columns(strengths, 'strength')
        spec = lw.make_spec(weights, None, None, preset, 1.0, preserve_color)
    cfg = _pipeline_config(kw, spec=spec, mix_style=mix_style, style_trunc=style_trunc)
    record = grid.stylize_grid(photos, out, cfg, kind, values, labels=labels, log=lambda m: click.echo(m, err=True),
                               progress=progress.reporter(not quiet))
    click.echo(f'saved {out}: {len(record["rows"])} photo(s) x {len(record["columns"])} columns')
    for failure in record['failures']:
        click.echo(f'failed: {failure["input"]} ({failure.get("stage", "?")}: {failure["error"]})', err=True)
