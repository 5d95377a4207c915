"""`pstyle demo`: the offline quickstart on the shipped demo networks (stylize/quickstart.py)."""

from pathlib import Path

import click

from pstyle.options import as_click_error
from pstyle.stylize import quickstart
from pstyle.torch_utils import progress


@click.command()
@click.option('--outdir', type=click.Path(file_okay=False, path_type=Path), default=Path('demo_out'), show_default=True)
@click.option('--steps', 'num_steps', type=click.IntRange(min=1), default=500, show_default=True, help='Projection steps per photo.')
@click.option('--device', default='cpu', show_default=True)
@click.option('--quiet', '-q', is_flag=True, help='No progress on stderr.')
def demo(outdir, num_steps, device, quiet):
    """Offline quickstart: samples of the shipped `demo` / `demo-toon` networks, projection of the shipped
    sample photos, layer swapping at 4, 8, 16 and 32, in one labelled figure (about a minute on 2 CPU cores).

    The demo networks are toys trained by this project on synthetic drawings (docs/demo_networks.md),
    for trying the pipeline and for tests; they are not face models.
    """
    try:
        summary = quickstart.run_quickstart(outdir, num_steps=num_steps, device=device,
                                            log=lambda m: click.echo(m, err=True), progress=progress.reporter(not quiet))
    except OSError as e:  # disk full, unwritable folder: the file and the cause, in one line
        raise as_click_error(e) from e
    click.echo(f'saved {summary["figure"]} in {summary["seconds"]:.0f} s: samples (demo, demo-toon), then rows = sample '
               f'photos, columns = photo, projected, swap 4/8/16/32 (rows above the resolution from demo-toon)')
    click.echo(f'next: pstyle stylize --photos {summary["photos"]} --base demo --styled demo-toon --no-align '
               f'--lpips-weight 0 --mse-weight 1 --outdir {Path(outdir) / "stylized"}')
