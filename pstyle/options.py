"""Click parameter types shared by several commands."""

import math

import click


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
