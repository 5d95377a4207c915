"""The project's typed errors: one line for the user, and what one item of a folder run may fail with
while the run goes on.

    PstyleError                                    reported in one line, never as a traceback
     +- InputError          (also ValueError)      an input that cannot be used: unreadable, too small, no face
     +- DivergenceError     (also FloatingPointError) a projection whose loss or latent is not finite
     +- OutOfMemoryError    (also MemoryError)     the device or the host ran out of memory for this item

The last three are ITEM_ERRORS. `typed_error` turns an exception into one of them, or None for anything
else (a bug, a missing dependency): folder runs record the typed ones per item and let the others propagate.
"""

import math

import torch


class PstyleError(Exception):
    """Base of the project's errors: a user's mistake or a failed item, reported in one line."""

    kind = 'error'


class InputError(PstyleError, ValueError):
    """An input item that cannot be processed as it is; the message names the file."""

    kind = 'input'


class DivergenceError(PstyleError, FloatingPointError):
    """An optimisation (projection, tuning) whose loss or result is NaN or infinite."""

    kind = 'divergence'


class OutOfMemoryError(PstyleError, MemoryError):
    """Out of memory on the device or the host; the message says what to lower."""

    kind = 'out-of-memory'


ITEM_ERRORS = (InputError, DivergenceError, OutOfMemoryError)


def is_out_of_memory(exc) -> bool:
    """torch's OutOfMemoryError, MemoryError, or a RuntimeError from an allocator that ran out."""
    if isinstance(exc, (torch.OutOfMemoryError, MemoryError)):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and ('out of memory' in text or 'failed to allocate' in text
                                              or 'defaultcpuallocator: can\'t allocate memory' in text)


def typed_error(exc):
    """exc as one of ITEM_ERRORS (OOM converted, its first line kept), or None when it is not an item's failure."""
    if isinstance(exc, ITEM_ERRORS):
        return exc
    if is_out_of_memory(exc):
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return OutOfMemoryError(f'out of memory ({first}); lower --batch or the resolution, or free the device')
    return None


def one_line(exc) -> str:
    """The first line of an error's message (its class name when empty), for logs and manifests."""
    text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return text


def check_finite(what, *values):
    """Raise DivergenceError naming `what` if any tensor or number among `values` is NaN or infinite."""
    for v in values:
        if v is None:
            continue
        if isinstance(v, torch.Tensor):
            finite = bool(torch.isfinite(v.detach()).all())
        else:
            finite = math.isfinite(float(v))
        if not finite:
            raise DivergenceError(f'{what}: diverged (the loss or the latent is not finite); '
                                  'lower the learning rate or use fp32')
