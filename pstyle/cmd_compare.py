"""`pstyle compare`: a thin click shell over `baselines.compare.compare`."""

import click

from pstyle.baselines.compare import METHODS, CompareConfig, compare
from pstyle.models.render import PRECISIONS
from pstyle.cmd_stylize import click_errors, spec_from_options, weight_options


def _methods(ctx, param, value):
    return tuple(v.strip() for v in value.split(',') if v.strip())


@click.command()
@click.option('--photos', type=click.Path(exists=True), required=True, help='A photo or a folder of photos.')
@click.option('--outdir', type=click.Path(file_okay=False), required=True, help='<method>/ folders, compare.png, compare.md/.csv/.json.')
@click.option('--methods', required=True, callback=_methods, help=f'Comma-separated: {",".join(METHODS)}.')
@click.option('--align/--no-align', default=True, show_default=True, help='FFHQ-align once for all methods; --no-align: the photos are aligned squares.')
@click.option('--size', type=click.IntRange(min=16), default=None, help='Aligned photo size [the base network\'s resolution, else 512].')
@click.option('--landmarks', type=click.Path(dir_okay=False), default=None, help='dlib 68-point landmark model.')
@click.option('--base', default=None, help='stylegan-swap, fewshot: model A, the photos are projected into it.')
@click.option('--styled', default=None, help='stylegan-swap: model B, fine-tuned from A.')
@weight_options
@click.option('--mapping', type=click.Choice(['from-a', 'from-b', 'blend']), default='from-a', show_default=True, help='stylegan-swap: mapping network and w_avg of the blend.')
@click.option('--fewshot-delta', type=click.Path(exists=True, dir_okay=False), default=None, help='fewshot: style.safetensors from `pstyle fewshot` (a delta of --base).')
@click.option('--delta-alpha', type=click.FloatRange(0, 1), default=1.0, show_default=True, help='fewshot: strength of the delta.')
@click.option('--project-preset', type=click.Choice(['fast', 'default', 'best']), default='default', show_default=True, help='StyleGAN methods: projection preset.')
@click.option('--project-steps', type=click.IntRange(min=1), default=None, help='StyleGAN methods: projection steps (overrides the preset).')
@click.option('--project-lpips-weight', type=click.FloatRange(min=0), default=None, help='StyleGAN methods: projection LPIPS weight (0 = no VGG16, e.g. offline).')
@click.option('--project-mse-weight', type=click.FloatRange(min=0), default=None, help='StyleGAN methods: projection pixel MSE weight.')
@click.option('--batch', 'batch_size', type=click.IntRange(min=1), default=4, show_default=True, help='Photos projected (nst: optimised) together.')
@click.option('--precision', type=click.Choice(PRECISIONS), default='fp32', show_default=True, help='Every method\'s network passes: projection (StyleGAN methods), autocast (nst: fp32/bf16; adain, cyclegan, distilled); fp16 on CUDA only.')
@click.option('--style', 'styles', multiple=True, type=click.Path(exists=True, dir_okay=False), help='nst, adain: style image (repeat for several).')
@click.option('--nst-steps', type=click.IntRange(min=1), default=500, show_default=True, help='nst: L-BFGS iterations.')
@click.option('--nst-size', type=click.IntRange(min=0), default=0, show_default=True, help='nst: longest side; 0 = the photo\'s size.')
@click.option('--nst-vgg-weights', type=click.Path(exists=True, dir_okay=False), default=None, help='nst: torchvision vgg19-dcbb9e9d.pth.')
@click.option('--vgg', 'adain_vgg', default='adain_vgg', show_default=True, help='adain: vgg_normalised.pth (file, URL or short name).')
@click.option('--decoder', 'adain_decoder', default='adain_decoder', show_default=True, help='adain: decoder.pth (file, URL or short name).')
@click.option('--adain-alpha', type=click.FloatRange(0, 1), default=1.0, show_default=True, help='adain: style strength.')
@click.option('--adain-style-size', type=click.IntRange(min=0), default=512, show_default=True, help='adain: shorter side of the styles; 0 keeps it.')
@click.option('--cyclegan', default=None, help='cyclegan: latest_net_G.pth, URL or short name (style_monet, ...).')
@click.option('--distilled', default=None, help='distilled: the distilled network (a ResnetGenerator checkpoint).')
@click.option('--style-set', type=click.Path(exists=True), default=None, help='Folder or zip of style images for KID/FID.')
@click.option('--inception-weights', type=click.Path(exists=True, dir_okay=False), default=None, help='pt_inception-2015-12-05-6726825d.pth (KID/FID).')
@click.option('--protocol', type=click.Choice(['legacy_tf', 'clean', 'legacy_pytorch']), default='legacy_tf', show_default=True)
@click.option('--kid-subsets', type=click.IntRange(min=1), default=100, show_default=True)
@click.option('--kid-subset-size', type=click.IntRange(min=2), default=None, help='[min(1000, outputs, style set)]')
@click.option('--id-model', 'identity_model', type=click.Choice(['dlib', 'arcface']), default='dlib', show_default=True)
@click.option('--arcface-weights', type=click.Path(exists=True, dir_okay=False), default=None, help='model_ir_se50.pth for --id-model arcface.')
@click.option('--seed', type=int, default=2020, show_default=True, help='KID subsets.')
@click.option('--device', default=None, help='cpu, cuda, cuda:1 (default: cuda when available).')
@click.option('--resume', is_flag=True, help='Keep what every method already finished in --outdir (same inputs and settings).')
@click_errors
def compare_command(photos, outdir, resume, **kw):
    """Every method on the same (aligned) photos: outputs in `pstyle stylize`'s layout, one figure and
    one table (KID/FID to a style set, LPIPS and identity to the photo, seconds per photo).

    \b
    Example:
      pstyle compare --photos photos/ --outdir out/cmp --methods stylegan-swap,nst,adain,cyclegan \\
        --base ffhq --styled metfaces --style starry.jpg --cyclegan style_monet --style-set metfaces/
    """
    spec = spec_from_options(kw)
    cfg = CompareConfig(spec=spec, styles=tuple(kw.pop('styles')), **kw)
    record = compare(photos, outdir, cfg, log=lambda m: click.echo(m, err=True), resume=resume)
    for method, info in record['methods'].items():
        click.echo(f'{method}: {info["num_ok"]} done, {info["num_failed"]} failed')
        for failure in info['failures']:
            click.echo(f'  failed: {failure["input"]}: {failure["error"]}')
    click.echo(f'figure {outdir}/compare.png; table {outdir}/compare.md, .csv, .json')
