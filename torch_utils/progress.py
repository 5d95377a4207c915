"""Progress of long loops (projection, PTI, stylization) on stderr, never stdout (stdout carries results).

On a terminal: a tqdm bar. Otherwise (logs, pipes, CI): plain lines, the first step, one line every
`every_s` seconds and the last step, each with step, loss, rate and ETA.
"""

import sys
import time


def _duration(seconds):
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f'{seconds // 3600}h{seconds % 3600 // 60:02d}m'
    return f'{seconds // 60}m{seconds % 60:02d}s' if seconds >= 60 else f'{seconds}s'


class Progress:
    """`update(loss=...)` once per step; `close()` (or a `with` block) at the end."""

    def __init__(self, total, desc, unit='step', stream=None, every_s=10.0):
        self.total, self.desc, self.unit, self.every_s = int(total), desc, unit, every_s
        self.stream = stream if stream is not None else sys.stderr  # Looked up now: CliRunner swaps sys.stderr.
        self.step, self.loss, self.start, self.last_line, self.printed = 0, None, time.time(), None, 0
        self.bar = None
        if getattr(self.stream, 'isatty', lambda: False)():
            from tqdm import tqdm
            self.bar = tqdm(total=self.total, desc=desc, unit=unit, file=self.stream, leave=False)

    def update(self, n=1, loss=None):
        self.step += n
        self.loss = loss if loss is not None else self.loss
        if self.bar is not None:
            self.bar.update(n)
            if loss is not None:
                self.bar.set_postfix(loss=f'{loss:.4f}', refresh=False)
            return
        now = time.time()
        if self.step in (1, self.total) or self.last_line is None or now - self.last_line >= self.every_s:
            self._write(now)

    def _write(self, now):
        self.last_line, self.printed = now, self.step
        self.stream.write(self.line(now) + '\n')
        self.stream.flush()

    def line(self, now=None):
        """'pti p0: step 12/350 loss 0.0412, 3.1 step/s, ETA 1m49s' (the last: 'done in ...')."""
        elapsed = max((now or time.time()) - self.start, 1e-9)
        rate = self.step / elapsed
        loss = f' loss {self.loss:.4f}' if self.loss is not None else ''
        tail = f'done in {_duration(elapsed)}' if self.step >= self.total or self.closing else \
            f'ETA {_duration((self.total - self.step) / rate) if rate > 0 else "?"}'
        return f'{self.desc}: {self.unit} {self.step}/{self.total}{loss}, {rate:.3g} {self.unit}/s, {tail}'

    closing = False

    def close(self):
        """Ends the bar; in plain mode a loop that stopped early (PTI's early stop) still gets its last line."""
        self.closing = True
        if self.bar is not None:
            self.bar.close()
        elif self.step and self.printed != self.step:
            self._write(time.time())

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def reporter(enabled=True, stream=None, every_s=10.0):
    """`factory(total, desc) -> Progress` for callers that open one per batch or image; None when disabled."""
    if not enabled:
        return None
    return lambda total, desc, unit='step': Progress(total, desc, unit, stream, every_s)
