"""Progress lines of long loops: plain lines off a terminal (first, periodic, last), nothing on stdout."""

import io

from pstyle.torch_utils import progress


def test_plain_lines_give_the_first_and_last_step_with_loss_rate_and_eta():
    stream = io.StringIO()
    with progress.Progress(5, 'project a.png', stream=stream, every_s=3600) as bar:
        for k in range(5):
            bar.update(loss=1.0 / (k + 1))
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith('project a.png: step 1/5 loss 1.0000, ') and 'step/s, ETA ' in lines[0]
    assert lines[1].startswith('project a.png: step 5/5 loss 0.2000, ') and ', done in ' in lines[1]


def test_a_loop_stopped_early_still_gets_its_last_line():
    stream = io.StringIO()
    with progress.Progress(350, 'pti a', stream=stream, every_s=3600) as bar:
        for _ in range(3):
            bar.update(loss=0.5)
    lines = stream.getvalue().splitlines()
    assert [line.split(' loss')[0] for line in lines] == ['pti a: step 1/350', 'pti a: step 3/350']
    assert 'done in' in lines[-1]


def test_disabled_reporter_is_none():
    assert progress.reporter(False) is None
    stream = io.StringIO()
    with progress.reporter(True, stream=stream)(2, 'x') as bar:
        bar.update(loss=1.0)
        bar.update(loss=1.0)
    assert stream.getvalue().count('x: step') == 2
