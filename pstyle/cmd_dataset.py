"""`pstyle dataset`: make a training dataset (NVIDIA's dataset_tool layout) from images."""

import tempfile

import click

from pstyle.datasets import dataset_tool, synthetic, synthetic_portraits
from pstyle.options import as_click_error


@click.command('dataset')
@click.option('--source', default=None, type=click.Path(exists=True), help='Image folder (searched recursively) or zip.')
@click.option('--synthetic', type=click.Choice(['shapes', 'portraits']), default=None,
              help='Instead of --source: generate coloured shapes (smoke tests, FID curves) or drawn portraits (demo networks); --max-images sets the count (default 1000), --resolution the size (default 32 for shapes, 64 for portraits).')
@click.option('--style', type=click.Choice(['photo', 'toon']), default=None,
              help='Rendering of --synthetic portraits: soft-shaded photo or inked toon (same faces for the same --seed) [default: photo].')
@click.option('--seed', type=click.IntRange(min=0), default=0, show_default=True, help='Seed of --synthetic data (image k depends only on seed and k).')
@click.option('--dest', required=True, type=click.Path(), help='Output .zip (uncompressed) or an empty/new folder.')
@click.option('--transform', type=click.Choice(['center-crop', 'center-crop-wide', 'ffhq-align']), default=None,
              help='Crop applied before resizing (default: none, square sources only).')
@click.option('--resolution', type=int, default=None, metavar='INT',
              help='Output size, a power of two (default: the size of the square source images).')
@click.option('--resize-filter', type=click.Choice(['box', 'lanczos']), default='lanczos', show_default=True,
              help='Resampling filter (recorded in dataset.json: it changes FID).')
@click.option('--max-images', type=click.IntRange(min=1), default=None, help='Stop after writing this many images.')
@click.option('--labels', type=click.Path(exists=True, dir_okay=False), default=None,
              help='NVIDIA-style dataset.json with labels for the source (default: dataset.json in the source).')
@click.option('--channels', type=click.Choice(['auto', '1', '3']), default='auto', show_default=True,
              help='Output channels; auto = 1 if every source image is grayscale, else 3.')
@click.option('--min-size', type=click.IntRange(min=0), default=None, metavar='PX',
              help='Skip (and report) images whose shorter side is under PX (default: a quarter of --resolution; 0 keeps all).')
@click.option('--progress/--no-progress', default=True, show_default=True, help='Show a progress bar.')
def dataset(source, synthetic, style, seed, dest, transform, resolution, resize_filter, max_images, labels, channels,
            min_size, progress):
    """Convert an image folder or zip into a training dataset (zip or folder of PNGs + dataset.json).

    \b
    Examples:
      pstyle dataset --source ~/photos --dest data/faces256.zip --transform ffhq-align --resolution 256
      pstyle dataset --source portraits.zip --dest data/art512 --transform center-crop --resolution 512
      pstyle dataset --synthetic shapes --dest data/shapes32.zip --max-images 2000 --resolution 32
      pstyle dataset --synthetic portraits --style toon --dest data/toon64.zip --max-images 5000
    """
    if (source is None) == (synthetic is None):
        raise click.UsageError('give exactly one of --source and --synthetic')
    if style is not None and synthetic != 'portraits':
        raise click.UsageError('--style applies only to --synthetic portraits')
    if seed != 0 and synthetic is None:
        raise click.UsageError('--seed applies only to --synthetic data')
    try:
        if synthetic is not None:
            make = _synthetic_maker(synthetic, style or 'photo', seed)
            default_res = 64 if synthetic == 'portraits' else 32
            return _synthetic(make, dest, resolution or default_res, max_images or 1000, resize_filter, progress)
        dataset_tool.convert_dataset(source, dest, transform=transform, resolution=resolution,
                                     resize_filter=resize_filter, max_images=max_images, labels=labels,
                                     channels=channels, log=click.echo, progress=progress, min_size=min_size)
    except OSError as e:  # disk full, unwritable folder: the file and the cause, in one line
        raise as_click_error(e) from e
    except (ValueError, ImportError) as e:
        raise click.ClickException(str(e)) from e


def _synthetic_maker(kind, style, seed):
    """A function (folder, num_images, resolution) that writes the chosen synthetic set."""
    if kind == 'portraits':
        return lambda dest, n, res: synthetic_portraits.make_portraits_dataset(dest, n, res, seed=seed, style=style)
    return lambda dest, n, res: synthetic.make_shapes_dataset(dest, num_images=n, resolution=res, seed=seed)


def _synthetic(make, dest, resolution, num_images, resize_filter, progress):
    """Generate the set into a temporary folder, then convert it like any source."""
    with tempfile.TemporaryDirectory() as tmp:
        make(tmp, num_images, resolution)
        dataset_tool.convert_dataset(tmp, dest, resolution=resolution, resize_filter=resize_filter,
                                     log=click.echo, progress=progress)
