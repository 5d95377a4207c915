"""`pstyle metrics --results` that cannot be written: the values computed are printed first, then one clear error."""

import errno

import pytest
from click.testing import CliRunner

from pstyle.cli import main
from pstyle.metrics import api


def metrics_cli(tmp_path, imgtools, results):
    real = imgtools.write_folder(tmp_path / 'r', imgtools.make_images(3, seed=1))
    fake = imgtools.write_folder(tmp_path / 'f', imgtools.make_images(3, offset=60, seed=2))
    args = ['metrics', '--metrics', 'fid', '--real', real, '--fake', fake, '--workers', '0', '--device', 'cpu',
            '--results', str(results)]
    return CliRunner().invoke(main, args, catch_exceptions=False)  # A traceback fails the test.


def printed_lines(output):
    """The output's lines without the progress bars (redrawn in place after '\\r')."""
    return [line for line in (part.rsplit('\r', 1)[-1].strip() for part in output.split('\n')) if line]


@pytest.fixture(autouse=True)
def _cheap_inception(monkeypatch, counting_extractor):
    monkeypatch.setattr(api, 'build_inception', lambda *args, **kwargs: counting_extractor)


def test_results_under_a_regular_file_print_the_metric_then_the_error(tmp_path, imgtools):
    (tmp_path / 'notes.txt').write_text('a file, not a folder')
    result = metrics_cli(tmp_path, imgtools, tmp_path / 'notes.txt' / 'res.jsonl')
    assert result.exit_code == 1
    assert printed_lines(result.output)[0].startswith('fid ')
    assert f'Error: the results were not appended to --results {tmp_path / "notes.txt"}: File exists (EEXIST)' in result.output
    assert 'results appended to' not in result.output


class FullDisk:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def write(self, text):
        raise OSError(errno.ENOSPC, 'No space left on device')


def test_a_full_disk_while_appending_results_prints_the_metric_then_the_error(tmp_path, imgtools, monkeypatch):
    monkeypatch.setattr(api, 'open', lambda *a, **k: FullDisk(), raising=False)
    results = tmp_path / 'res.jsonl'
    result = metrics_cli(tmp_path, imgtools, results)
    assert result.exit_code == 1
    fid_line, protocol_line, error = printed_lines(result.output)
    assert fid_line.startswith('fid ') and float(fid_line.split()[1]) > 0 and protocol_line == 'protocol legacy_tf'
    assert error == f'Error: the results were not appended to --results {results}: No space left on device (ENOSPC)'
