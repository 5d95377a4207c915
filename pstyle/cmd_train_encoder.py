"""`pstyle train-encoder`: a thin shell over `training.train_encoder.train_encoder`."""

import click

from pstyle.options import as_click_error
from pstyle.torch_utils import progress
from pstyle.training.train_encoder import ARCHS, EncoderTrainConfig, train_encoder


@click.command('train-encoder')
@click.option('--network', default=None, help='Generator to train the encoder for (file, URL or short name).')
@click.option('--outdir', default='encoder-runs', show_default=True, type=click.Path(file_okay=False), help='Where to make run directories.')
@click.option('--kimg', type=click.FloatRange(min=0, min_open=True), default=None, help='Synthetic pairs to train on, in thousands [50]; with --resume: the new total.')
@click.option('--batch', type=click.IntRange(min=1), default=16, show_default=True, help='Total batch size (over all torchrun ranks).')
@click.option('--lr', type=click.FloatRange(min=0, min_open=True), default=None, help='Adam learning rate [1e-3 small encoder, 1e-4 IR-SE-50].')
@click.option('--seed', type=click.IntRange(min=0), default=0, show_default=True, help='Seed of the weights and of every sample.')
@click.option('--arch', type=click.Choice(ARCHS), default='auto', show_default=True, help='auto: small conv encoder up to 128^2, pSp IR-SE-50 from 256^2.')
@click.option('--lpips-weight', type=click.FloatRange(min=0), default=0.8, show_default=True, help='LPIPS image term (used when its weights are present).')
@click.option('--mse-weight', type=click.FloatRange(min=0), default=1.0, show_default=True, help='Pixel MSE image term.')
@click.option('--latent-weight', type=click.FloatRange(min=0), default=1.0, show_default=True, help='W+ term (normalised by the spread of w).')
@click.option('--photos', type=click.Path(exists=True, file_okay=False), default=None, help='Aligned photos: a domain-adaptation phase after --kimg, half of each batch real, image loss only.')
@click.option('--arcface', type=click.Path(exists=True, dir_okay=False), default=None, help='model_ir_se50.pth: start the IR-SE-50 trunk of --arch psp/e4e from ArcFace, as pSp/e4e do [random].')
@click.option('--photo-kimg', type=click.FloatRange(min=0), default=None, help='Length of the photo phase [kimg / 4]; with --resume: its new total.')
@click.option('--tick', 'tick_kimg', type=click.FloatRange(min=0, min_open=True), default=1.0, show_default=True, help='kimg per log line.')
@click.option('--snap', 'snap_ticks', type=click.IntRange(min=1), default=10, show_default=True, help='Snapshot and validation grid every this many ticks.')
@click.option('--device', default='auto', show_default=True, help='auto, cpu, cuda, ... (torchrun: one GPU per rank).')
@click.option('--desc', default=None, help='Suffix of the run-dir name.')
@click.option('--resume', type=click.Path(exists=True, file_okay=False), default=None, help='An encoder run directory to continue exactly.')
@click.option('--quiet', '-q', is_flag=True, help='No progress bar on stderr.')
def train_encoder_cmd(network, kimg, resume, quiet, **kw):
    """Train an encoder (image -> W+) for a generator on pairs it renders itself; no dataset needed.

    \b
    Examples:
      pstyle train-encoder --network G.pt --kimg 50 --outdir encoder-runs
      pstyle train-encoder --network ffhq256.pkl --photos aligned/ --kimg 200
      pstyle train-encoder --network ffhq256.pkl --arch psp --arcface model_ir_se50.pth
      pstyle train-encoder --resume encoder-runs/00000-encoder-G --kimg 100
      torchrun --nproc_per_node 4 -m pstyle train-encoder --network ffhq --batch 32
      pstyle project --network G.pt -i photos/ --outdir proj/ --invert encoder --encoder encoder-runs/00000-encoder-G/encoder.safetensors
    """
    if (network is None) == (resume is None):
        raise click.UsageError('give exactly one of --network (a new run) and --resume (continue a run)')
    try:
        cfg = EncoderTrainConfig(network=network, **kw) if network is not None else None
        photo_kimg = kw['photo_kimg'] if resume is not None else None
        path = train_encoder(cfg, resume, kimg, log=lambda m: click.echo(m, err=True), progress=progress.reporter(not quiet),
                             photo_kimg=photo_kimg)
    except Exception as e:  # noqa: BLE001 -- as_click_error re-raises what is not a user's error (a bug keeps its traceback)
        raise as_click_error(e) from e
    if path is not None:
        click.echo(str(path))
