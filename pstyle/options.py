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
