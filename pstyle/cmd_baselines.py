"""`pstyle nst`, `adain`, `adain-train`, `cyclegan`, `cyclegan-train`, `distill`, `export`: thin click shells over `baselines/`."""

import click

from pstyle.options import USER_ERRORS  # a user error or a typed failure: one line
from pstyle.baselines.adain import AdainOptions, adain_folder
from pstyle.baselines.adain_train import AdainTrainConfig
from pstyle.baselines.adain_train import adain_train as train_decoder
from pstyle.baselines.cyclegan import CycleganOptions, cyclegan_folder
from pstyle.baselines.nst import COLOR_MODES, INITS, OPTIMIZERS, NSTOptions, nst_folder
from pstyle.baselines.published import PUBLISHED
from pstyle.baselines.cyclegan_train import CycleganTrainConfig
from pstyle.baselines.cyclegan_train import cyclegan_train as train_cyclegan
from pstyle.baselines.distill import DistillConfig
from pstyle.baselines.distill import distill as train_distilled
from pstyle.baselines.export import export_onnx
from pstyle.models.render import PRECISIONS
from pstyle.cmd_stylize import spec_from_options, weight_options  # the one per-row weight control of stylize
from pstyle.options import styled_delta_options


def _floats(ctx, param, value):
    if value is None:
        return None
    try:
        return [float(v) for v in value.split(',') if v.strip()]
    except ValueError:
        raise click.BadParameter(f'expected comma-separated numbers, got {value!r}') from None


def _names(ctx, param, value):
    return tuple(v.strip() for v in value.split(',') if v.strip())


def _run(fn, *args, **kwargs):
    try:
        manifest = fn(*args, **kwargs, log=click.echo)
    except USER_ERRORS as e:
        raise click.ClickException(str(e)) from e
    click.echo(f'{manifest["num_ok"]} done, {manifest["num_failed"]} failed; '
               f'manifest.json in {kwargs["outdir"]}')
    for failure in manifest['failures']:
        click.echo(f'  failed: {failure["input"]}: {failure["error"]}')


_content = click.option('--content', required=True, type=click.Path(exists=True), help='A photo or a folder of photos')
_outdir = click.option('--outdir', required=True, type=click.Path(file_okay=False), help='Where to write images and manifest.json')
_device = click.option('--device', type=str, default=None, help='cpu, cuda, cuda:1 (default: cuda when available)')
_precision = click.option('--precision', type=click.Choice(PRECISIONS), default='fp32',
                          help='Network passes under autocast: bf16 (CPUs with AVX-512 BF16/AMX, GPUs), fp16 (CUDA); images stay fp32')
_resume = click.option('--resume', is_flag=True, help='Keep the photos already done in --outdir (same inputs, weights and options)')


@click.command(context_settings=dict(show_default=True))
@_content
@click.option('--style', 'styles', multiple=True, required=True, type=click.Path(exists=True, dir_okay=False),
              help='Style image (repeat for several)')
@click.option('--style-blend-weights', callback=_floats, help='One weight per --style: blend their Gram targets')
@_outdir
@click.option('--vgg-weights', type=click.Path(exists=True, dir_okay=False), default=None,
              help='torchvision vgg19-dcbb9e9d.pth (default: $PSTYLE_VGG19_WEIGHTS, the cache, or a download)')
@click.option('--content-layers', default='relu4_2', callback=_names, help='VGG19 layers of the content loss')
@click.option('--style-layers', default='relu1_1,relu2_1,relu3_1,relu4_1,relu5_1', callback=_names)
@click.option('--content-weight', type=click.FloatRange(min=0), default=1.0)
@click.option('--style-weight', type=click.FloatRange(min=0), default=1e6)
@click.option('--tv-weight', type=click.FloatRange(min=0), default=0.0, help='Total-variation smoothing')
@click.option('--optimizer', type=click.Choice(OPTIMIZERS), default='lbfgs')
@click.option('--lr', 'learning_rate', type=click.FloatRange(min=0, min_open=True), default=1.0,
              help='L-BFGS step or Adam learning rate (Adam: try 0.02)')
@click.option('--steps', type=click.IntRange(min=1), default=500, help='Iterations per scale')
@click.option('--init', type=click.Choice(INITS), default='content')
@click.option('--seed', type=int, default=0, help='Noise for --init noise')
@click.option('--size', type=click.IntRange(min=0), default=512, help='Longest side of the output; 0 keeps the photo size')
@click.option('--style-scale', type=click.FloatRange(min=0, min_open=True), default=1.0)
@click.option('--scales', type=click.IntRange(min=1), default=1, help='Coarse-to-fine: 2 = half size first')
@click.option('--original-colors', type=click.Choice(COLOR_MODES), default='none',
              help="Keep the photo's colours: luminance-only transfer (YIQ) or style histogram matching")
@click.option('--pooling', type=click.Choice(['max', 'avg']), default='max')
@click.option('--precision', type=click.Choice(['fp32', 'bf16']), default='fp32', help='bf16 autocast of the VGG passes')
@click.option('--batch', 'batch_size', type=click.IntRange(min=1), default=4, help='Photos of one size optimised together')
@_device
@_resume
def nst(content, styles, outdir, vgg_weights, resume, **kwargs):
    """Gatys et al. neural style transfer by optimisation (VGG19, L-BFGS).

    \b
    Example:
      pstyle nst --content photos/ --style starry.jpg --outdir out/nst --size 512 --scales 2
    """
    _run(nst_folder, content, list(styles), outdir=outdir, opts=NSTOptions(**kwargs), vgg_weights=vgg_weights, resume=resume)


@click.command(context_settings=dict(show_default=True))
@_content
@click.option('--style', 'styles', multiple=True, required=True, type=click.Path(exists=True, dir_okay=False),
              help='Style image (repeat: one output per style, or one interpolated image with --style-weights)')
@click.option('--style-weights', callback=_floats, help='Interpolation weights, one per --style (e.g. 3,7)')
@click.option('--vgg', default='adain_vgg', help='vgg_normalised.pth: a file, URL or short name')
@click.option('--decoder', 'decoder_file', default='adain_decoder', help='decoder.pth: a file, URL or short name')
@click.option('--alpha', type=click.FloatRange(0, 1), default=1.0, help='Style strength')
@click.option('--preserve-color', is_flag=True, help="Recolour each style to the photo's colours first")
@click.option('--content-size', type=click.IntRange(min=0), default=512, help='Shorter side; 0 keeps the size')
@click.option('--style-size', type=click.IntRange(min=0), default=512, help='Shorter side; 0 keeps the size')
@_outdir
@_precision
@_device
@_resume
def adain(content, styles, outdir, vgg, decoder_file, style_weights, resume, **kwargs):
    """AdaIN arbitrary style transfer with the published weights (naoto0804/pytorch-AdaIN).

    \b
    Example:
      pstyle adain --content photos/ --style a.jpg --style b.jpg --style-weights 3,7 --outdir out/adain
    """
    opts = AdainOptions(style_weights=style_weights, **kwargs)
    _run(adain_folder, content, list(styles), outdir=outdir, vgg=vgg, decoder_file=decoder_file, opts=opts, resume=resume)


@click.command(context_settings=dict(show_default=True))
@click.option('--checkpoint', required=True,
              help=f'latest_net_G.pth: a file, URL or one of {", ".join(n for n in PUBLISHED if n.startswith("style_"))}')
@click.option('--input', 'inputs', required=True, type=click.Path(exists=True), help='A photo or a folder of photos')
@_outdir
@click.option('--size', type=click.IntRange(min=0), default=0, help='Resize the shorter side first (bicubic); 0 keeps the size')
@_precision
@_device
@_resume
def cyclegan(checkpoint, inputs, outdir, resume, **kwargs):
    """CycleGAN photo -> painting generators (junyanz/pytorch-CycleGAN-and-pix2pix weights).

    \b
    Example:
      pstyle cyclegan --checkpoint style_monet --input photos/ --outdir out/monet
    """
    _run(cyclegan_folder, checkpoint, inputs, outdir=outdir, opts=CycleganOptions(**kwargs), resume=resume)


@click.command(context_settings=dict(show_default=True))
@click.option('--content-dir', required=True, type=click.Path(exists=True, file_okay=False), help='Content images (e.g. MS-COCO)')
@click.option('--style-dir', required=True, type=click.Path(exists=True, file_okay=False), help='Style images (e.g. WikiArt)')
@click.option('--outdir', required=True, type=click.Path(file_okay=False), help='Run directory; an existing one is resumed')
@click.option('--vgg', default='adain_vgg', help='vgg_normalised.pth: a file, URL or short name (frozen encoder)')
@click.option('--decoder-init', default=None, help='Start from this decoder.pth instead of a random one')
@click.option('--lr', type=click.FloatRange(min=0, min_open=True), default=1e-4)
@click.option('--lr-decay', type=click.FloatRange(min=0), default=5e-5, help='lr / (1 + decay * iteration)')
@click.option('--max-iter', type=click.IntRange(min=1), default=160000)
@click.option('--batch', 'batch_size', type=click.IntRange(min=1), default=8)
@click.option('--content-weight', type=click.FloatRange(min=0), default=1.0)
@click.option('--style-weight', type=click.FloatRange(min=0), default=10.0)
@click.option('--load-size', type=click.IntRange(min=16), default=512, help='Images are resized to this square')
@click.option('--crop-size', type=click.IntRange(min=16), default=256, help='then randomly cropped to this')
@click.option('--snapshot-every', type=click.IntRange(min=1), default=10000)
@click.option('--log-every', type=click.IntRange(min=1), default=100)
@click.option('--seed', type=int, default=0)
@_device
def adain_train(outdir, device, **kwargs):
    """Train an AdaIN decoder (train.py of pytorch-AdaIN); resumable, exact.

    \b
    Example:
      pstyle adain-train --content-dir coco/ --style-dir wikiart/ --outdir runs/adain
    """
    try:
        result = train_decoder(AdainTrainConfig(**kwargs), outdir, device=device, log=click.echo)
    except USER_ERRORS as e:
        raise click.ClickException(str(e)) from e
    click.echo(f'iteration {result["iteration"]}; decoder: {result["decoder"]}')
    for path in result['skipped']:
        click.echo(f'  skipped unreadable image: {path}')


# ----------------------------------------------------------------------------
# Training translators and exporting them: `pstyle cyclegan-train`, `pstyle distill`, `pstyle export`.

def _train(fn, cfg, outdir, device):
    try:
        result = fn(cfg, outdir, device=device, log=click.echo)
    except USER_ERRORS as e:
        raise click.ClickException(str(e)) from e
    if result['networks']:                                   # rank 0 of a torchrun run, or a single process
        click.echo(f'iteration {result["iteration"]}; networks: {", ".join(result["networks"])}')
    return result


_iters = click.option('--iters', type=click.IntRange(min=1), default=None, help='Total iterations; the same line resumes [cyclegan-train 200000, distill 20000]')
_decay = click.option('--decay-iters', type=click.IntRange(min=0), default=None, help='The last this many decay linearly to 0 [iters / 2]')
_gen = [click.option('--ngf', type=click.IntRange(min=1), default=None, help='Generator width [cyclegan-train 64, distill 32]'),
        click.option('--n-blocks', type=click.IntRange(min=0), default=None, help='Generator residual blocks [cyclegan-train 9, distill 6]')]
_train_common = [
    click.option('--outdir', required=True, type=click.Path(file_okay=False), help='Run directory; an existing one is resumed'),
    click.option('--batch', 'batch_size', type=click.IntRange(min=1), default=None, help='Total batch, over all torchrun ranks [cyclegan-train 1, distill 4]'),
    click.option('--lr', type=click.FloatRange(min=0, min_open=True), default=None, help='Adam learning rate [2e-4]'),
    click.option('--ndf', type=click.IntRange(min=1), default=None, help='PatchGAN width [64]'),
    click.option('--n-layers-d', type=click.IntRange(min=1), default=None, help='PatchGAN stride-2 layers (3: 70x70 patches)'),
    click.option('--snapshot-every', type=click.IntRange(min=1), default=None, help='Iterations between snapshots [cyclegan-train 5000, distill 2000]'),
    click.option('--log-every', type=click.IntRange(min=1), default=None, help='Iterations between log lines [100]'),
    click.option('--seed', type=int, default=None, help='Initial weights and every random draw [0]'),
    click.option('--device', type=str, default=None, help='cpu, cuda, cuda:1 (default: cuda:LOCAL_RANK when available)'),
]


def _options(options):
    def decorate(f):
        for option in reversed(options):
            f = option(f)
        return f
    return decorate


def _given(kwargs):
    """Options left at None take the config's defaults."""
    return {k: v for k, v in kwargs.items() if v is not None}


@click.command('cyclegan-train', context_settings=dict(show_default=True))
@click.option('--a', 'a_dir', required=True, type=click.Path(file_okay=False), help='Images of domain A (e.g. photos)')
@click.option('--b', 'b_dir', required=True, type=click.Path(file_okay=False), help='Images of domain B (e.g. paintings)')
@_iters
@_decay
@click.option('--size', 'crop_size', type=click.IntRange(min=4), default=None, help='Training crop size [256]')
@click.option('--load-size', type=click.IntRange(min=4), default=None, help='Images are resized to this square first [size * 286/256]')
@click.option('--no-flip', 'flip', flag_value=False, default=None, help='No random horizontal flips')
@_options(_gen)
@click.option('--lambda-cycle', type=click.FloatRange(min=0), default=None, help='Cycle loss weight [10]')
@click.option('--lambda-identity', type=click.FloatRange(min=0), default=None, help='Identity loss weight, times lambda-cycle [0.5]')
@click.option('--pool-size', type=click.IntRange(min=0), default=None, help='Generated images D is shown from [50]')
@_options(_train_common)
def cyclegan_train(outdir, device, **kwargs):
    """Train a CycleGAN on two unpaired folders (exact resume, torchrun).

    Writes latest_net_G_A.pth (A -> B) and latest_net_G_B.pth (B -> A), which `pstyle cyclegan --checkpoint` runs.

    \b
    Example:
      pstyle cyclegan-train --a photos/ --b monet/ --outdir runs/monet --size 256 --iters 200000
      torchrun --nproc_per_node 2 -m pstyle cyclegan-train --a photos/ --b monet/ --outdir runs/monet --batch 2
    """
    _train(train_cyclegan, CycleganTrainConfig(**_given(kwargs)), outdir, device)


@click.command(context_settings=dict(show_default=True))
@click.option('--base', required=True, help='Model A (file, URL or short name, e.g. demo): the input side')
@click.option('--styled', default=None, help='Model B, fine-tuned from A (e.g. demo-toon): the teacher is their blend')
@styled_delta_options
@weight_options
@click.option('--mapping', type=click.Choice(['from-a', 'from-b', 'blend']), default='from-a', help='Mapping network of the blend')
@click.option('--trunc', 'truncation_psi', type=click.FloatRange(0, 1), default=None, help='Truncation psi of the training latents [1]')
@_iters
@_decay
@_options(_gen)
@click.option('--l1-weight', type=click.FloatRange(min=0), default=None, help='[1]')
@click.option('--lpips-weight', type=click.FloatRange(min=0), default=None, help='Used when the LPIPS weights are present [1]')
@click.option('--gan-weight', type=click.FloatRange(min=0), default=None, help='Conditional PatchGAN term; 0 = no discriminator [0]')
@click.option('--val-samples', type=click.IntRange(min=1), default=None, help='Held-out latents scored in the log [16]')
@_options(_train_common)
def distill(outdir, device, base, styled, styled_delta, delta_alpha, mapping, **kwargs):
    """Distil a blended StyleGAN into a feed-forward network (aligned photo -> portrait in one pass).

    Pairs are rendered from shared latents: input = base, target = what `pstyle stylize` renders with the same
    --styled/--styled-delta and weight options. Writes net_G.pth (run it with `pstyle cyclegan --checkpoint`)
    and net_G.pth.json (networks, sha256, spec).

    \b
    Example:
      pstyle distill --base demo --styled demo-toon --preset all --outdir runs/toon --iters 20000
    """
    if styled_delta is not None and all(kwargs[k] is None for k in ('weights', 'swap_res', 'preset', 'rows')):
        kwargs['preset'] = 'all'  # As `pstyle stylize`: a few-shot style is the whole tuned network unless rows are chosen.
    try:
        spec = spec_from_options(kwargs).as_dict()
    except USER_ERRORS as e:
        raise click.ClickException(str(e)) from e
    cfg = DistillConfig(base=base, styled=styled, styled_delta=styled_delta, delta_alpha=delta_alpha, mapping=mapping,
                        spec=spec, **_given(kwargs))
    result = _train(train_distilled, cfg, outdir, device)
    if result['validation']:
        v = result['validation']
        click.echo(f'held-out L1 to the teacher {v["val_l1"]:.4f} (identity mapping {v["val_identity_l1"]:.4f}, '
                   f'ratio {v["val_ratio"]:.3f})')


@click.command(context_settings=dict(show_default=True))
@click.option('--onnx', 'out', required=True, type=click.Path(dir_okay=False), help='Output .onnx file')
@click.option('--checkpoint', required=True, help='A translator: latest_net_G_A.pth, net_G.pth (distill), a published name')
@click.option('--size', type=click.IntRange(min=4), default=256, help='Side of the traced example (batch and size stay dynamic)')
@click.option('--check/--no-check', default=True, help='Compare onnxruntime with torch on a random input')
def export(out, checkpoint, size, check):
    """Export a translator to ONNX: input [N,3,H,W] RGB in [0,1], output in [-1,1], any batch and size.

    \b
    Example:
      pstyle export --onnx toon.onnx --checkpoint runs/toon/net_G.pth
    """
    try:
        result = export_onnx(checkpoint, out, size=size, check=check)
    except (*USER_ERRORS, ImportError) as e:
        raise click.ClickException(str(e)) from e
    diff = result['max_abs_diff']
    click.echo(f'wrote {out}' + (f' (onnxruntime vs torch: max difference {diff:.2e})' if diff is not None else ''))
