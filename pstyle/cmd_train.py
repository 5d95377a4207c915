"""`pstyle train`: a thin shell over `training.launch.train` (options as NVIDIA's `train.py`)."""

import json

import click

from pstyle.training.train_config import AUG_MODES, DEFAULT_AUGPIPE, PRESETS, ConfigError, TrainOptions
from pstyle.metrics.api import parse_metric
from pstyle.training import launch
from pstyle.training.phases import NonFiniteError
from pstyle.torch_utils.fileio import describe_os_error


def _metric_list(ctx, param, value):
    names = [v.strip() for v in (value or '').split(',') if v.strip()]
    if names in ([], ['none']):
        return ()
    for name in names:
        try:
            parse_metric(name)
        except ValueError as e:
            raise click.BadParameter(str(e)) from None
    return tuple(names)


def _grid(ctx, param, value):
    if value is None:
        return None
    try:
        w, h = (int(v) for v in value.lower().split('x'))
        if w < 1 or h < 1:
            raise ValueError
    except ValueError:
        raise click.BadParameter(f'expected WxH with positive integers, e.g. 8x4; got {value!r}') from None
    return (w, h)


NUM = dict(type=float, default=None)
OPTIONS = [
    # General.
    click.option('--outdir', default='training-runs', show_default=True, type=click.Path(file_okay=False), help='Where to make run directories.'),
    click.option('--data', type=click.Path(exists=True), help='Dataset folder or zip (from `pstyle dataset`).'),
    click.option('--gpus', type=click.IntRange(min=1), default=1, show_default=True, help='Processes to spawn (under torchrun: taken from torchrun).'),
    click.option('--cfg', type=click.Choice(sorted(PRESETS)), default='auto', show_default=True, help='Preset (NVIDIA\'s configs; tiny = CPU-sized).'),
    click.option('--kimg', type=click.FloatRange(min=0, min_open=True), default=None, help='Training length in thousands of images [default: preset].'),
    click.option('--tick', 'kimg_per_tick', type=click.FloatRange(min=0, min_open=True), default=4, show_default=True, help='kimg per progress line.'),
    click.option('--snap', type=click.IntRange(min=1), default=50, show_default=True, help='Snapshot interval in ticks.'),
    click.option('--image-snap', type=click.IntRange(min=1), default=None, help='Image-grid interval in ticks [default: --snap].'),
    click.option('--metrics', callback=_metric_list, default='none', show_default=True, help='Comma-separated metrics on snapshots (fid50k_full, kid50k_full, pr50k3_full, is50k, proxyfid2k_full) or none.'),
    click.option('--seed', type=click.IntRange(min=0), default=0, show_default=True, help='Random seed.'),
    click.option('--desc', default=None, help='Suffix of the run-dir name.'),
    click.option('--dry-run', is_flag=True, help='Print the configuration and exit.'),
    # Hyper-parameters (override the preset).
    click.option('--batch', type=click.IntRange(min=1), default=None, help='Total batch size.'),
    click.option('--batch-gpu', type=click.IntRange(min=1), default=None, help='Samples per GPU per round (gradient accumulation).'),
    click.option('--gamma', **NUM, help='R1 weight.'),
    click.option('--ema', **NUM, help='G_ema half-life in kimg.'),
    click.option('--ema-rampup', **NUM, help='G_ema ramp-up (0 = off).'),
    click.option('--lrate', **NUM, help='Learning rate of G and D.'),
    click.option('--glr', **NUM, help='G learning rate.'),
    click.option('--dlr', **NUM, help='D learning rate.'),
    click.option('--mbstd', type=click.IntRange(min=1), default=None, help='Minibatch-std group size.'),
    click.option('--style-mixing', **NUM, help='Style-mixing probability.'),
    click.option('--pl-weight', **NUM, help='Path-length regularization weight.'),
    click.option('--g-reg-interval', type=click.IntRange(min=0), default=4, show_default=True, help='Lazy path-length interval (0 = every step).'),
    click.option('--d-reg-interval', type=click.IntRange(min=0), default=16, show_default=True, help='Lazy R1 interval (0 = every step).'),
    # Architecture (taken from --resume's network unless given).
    click.option('--map', type=click.IntRange(min=1), default=None, help='Mapping layers.'),
    click.option('--fmaps', **NUM, help='channel_base / 32768.'),
    click.option('--cmax', type=click.IntRange(min=1), default=None, help='channel_max.'),
    click.option('--zdim', type=click.IntRange(min=1), default=None, help='z_dim = w_dim.'),
    # Dataset.
    click.option('--cond', is_flag=True, help='Conditional training on dataset.json labels.'),
    click.option('--subset', type=click.IntRange(min=1), default=None, help='Train on this many images.'),
    click.option('--mirror', is_flag=True, help='Add x-flipped copies of the images.'),
    # Augmentation.
    click.option('--aug', type=click.Choice(AUG_MODES), default='ada', show_default=True, help='ADA, no augmentation, or fixed p.'),
    click.option('--p', **NUM, help='Augmentation probability (--aug=fixed; start value with ada).'),
    click.option('--target', **NUM, help='ADA target [default: 0.6].'),
    click.option('--ada-kimg', **NUM, help='ADA speed: kimg for p to go 0 -> 1 [default: 500, 100 when fine-tuning].'),
    click.option('--augpipe', default=DEFAULT_AUGPIPE, show_default=True, help='Augmentation pipeline (blit, geom, color, bg, bgc, bgcf, bgcfn, bgcfnc, ...).'),
    # Transfer learning.
    click.option('--resume', default=None, help='A run dir / snapshot to continue exactly, or any network (file, URL, short name) to fine-tune.'),
    click.option('--freezed', type=click.IntRange(min=0), default=0, show_default=True, help='FreezeD: freeze the first k D layers.'),
    click.option('--freezeg', type=click.IntRange(min=0), default=0, show_default=True, help='FreezeG: freeze G blocks up to this resolution.'),
    click.option('--freezeg-mapping', is_flag=True, help='FreezeG: also freeze the mapping network (and w_avg).'),
    # Performance.
    click.option('--fp32', is_flag=True, help='Disable mixed precision.'),
    click.option('--nhwc', is_flag=True, help='channels_last for the FP16 layers.'),
    click.option('--allow-tf32', is_flag=True, help='Allow TF32 (faster on Ampere+, less reproducible).'),
    click.option('--nobench', is_flag=True, help='Disable cudnn.benchmark.'),
    click.option('--workers', type=click.IntRange(min=0), default=2, show_default=True, help='DataLoader worker processes.'),
    click.option('--grid', callback=_grid, default=None, help='Image-grid size WxH [default: NVIDIA\'s, ~7680x4320 pixels].'),
    click.option('--device', default=None, help='cpu or cuda [default: cuda when available].'),
]


def _with_options(f):
    for option in reversed(OPTIONS):
        f = option(f)
    return f


@click.command('train')
@_with_options
def train(dry_run, **kwargs):
    """Train or fine-tune a StyleGAN2 (NVIDIA's training recipe, ADA, FreezeD/FreezeG, exact resume).

    \b
    Examples:
      pstyle train --data data/metfaces1024.zip --resume ffhq --cfg paper1024 --mirror --freezed 10 --kimg 500
      pstyle train --data data/toons256.zip --resume ffhq256.pkl --freezeg 16 --freezeg-mapping --snap 10
      pstyle train --resume training-runs/00003-metfaces-paper1024-gpus1-batch32    # continue exactly
      torchrun --nproc_per_node 8 -m pstyle train --data data/art.zip --cfg paper256
    """
    options = TrainOptions(**kwargs)
    try:
        if dry_run:
            cfg, run_dir, cont, _ = launch.prepare_training(options)
            click.echo(json.dumps(dict(run_dir=str(run_dir), continue_from=[str(p) for p in cont] if cont else None,
                                       **cfg), indent=2, sort_keys=True))
            return
        launch.train(options)
    except OSError as e:  # Disk full, unwritable --outdir: the file and the cause, no traceback.
        raise click.ClickException(describe_os_error(e)) from e
    except (ConfigError, ValueError, NonFiniteError) as e:
        raise click.ClickException(str(e)) from e
