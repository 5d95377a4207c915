"""`pstyle demo`: the README's first command, offline, on the shipped networks and photos."""

import json

from click.testing import CliRunner
from PIL import Image

from pstyle.cli import main
from pstyle.models import demo


def test_demo_command_writes_the_labelled_quickstart_figure_offline(tmp_path):
    out = tmp_path / 'demo_out'
    result = CliRunner().invoke(main, ['demo', '--outdir', str(out), '--steps', '3', '--quiet'])
    assert result.exit_code == 0, result.output
    assert f'saved {out / "quickstart.png"}' in result.output
    assert 'next: pstyle stylize --photos' in result.output
    summary = json.loads((out / 'quickstart.json').read_text())
    names = [p.stem for p in demo.sample_photos()]
    assert summary['rows'] == names
    assert summary['columns'] == ['photo', 'projected', 'swap 4', 'swap 8', 'swap 16', 'swap 32']
    assert sorted(p.name for p in (out / 'photos').iterdir()) == [p.name for p in demo.sample_photos()]
    samples, figure = Image.open(out / 'samples.png'), Image.open(out / 'quickstart.png')
    grid = Image.open(out / 'stylize_grid.png')
    assert figure.height == samples.height + grid.height and figure.width == max(samples.width, grid.width)
    assert grid.height > 64 * len(names) and grid.width > 64 * 6  # Tiles plus the label row and column.
