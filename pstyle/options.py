"""Click parameter types and error reporting shared by several commands."""

import math

import click

from pstyle.torch_utils.errors import PstyleError, typed_error
from pstyle.torch_utils.fileio import describe_os_error

# What a user can cause (a bad option, a missing file, an unreadable input, no dlib): one line, exit 1.
USER_ERRORS = (ValueError, FileNotFoundError, PstyleError)


def as_click_error(exc, suffix=''):
    """A one-line click error for a user's error, a typed failure (out of memory included, named as such) or
    a failed read/write (disk full, unwritable folder: the file and the cause); anything else (a bug: shape
    mismatches, internal RuntimeErrors) is raised again with its traceback."""
    if isinstance(exc, click.ClickException):
        return exc
    if isinstance(exc, OSError) and not isinstance(exc, FileNotFoundError):
        return click.ClickException(f'{describe_os_error(exc)}{suffix}')
    typed = typed_error(exc)
    if typed is None and not isinstance(exc, USER_ERRORS):
        raise exc
    return click.ClickException(f'{typed if typed is not None else exc}{suffix}')


class FiniteFloat(click.ParamType):
    """A float that is a number: 'nan' and 'inf' are refused here, before they become black images."""
    name = 'float'

    def convert(self, value, param, ctx):
        number = click.FLOAT.convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f'{value!r} is not a finite number', param, ctx)
        return number


FINITE_FLOAT = FiniteFloat()


def styled_delta_options(f):
    """--styled-delta FILE and --delta-alpha A: render with the base network plus a weight delta (a
    `pstyle fewshot` style, or a PTI delta), shared by stylize, generate and mix."""
    f = click.option('--delta-alpha', type=click.FloatRange(0, 1), default=1.0, show_default=True,
                     help='With --styled-delta: strength, a lerp of the weights (0 = base, 1 = tuned).')(f)
    return click.option('--styled-delta', type=click.Path(exists=True, dir_okay=False), default=None,
                        help='A weight delta of this network (style.safetensors from `pstyle fewshot`); '
                             'refused when made for another network.')(f)
