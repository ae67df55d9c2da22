"""Checks of argument values at the library's boundary, refusing them by name.

A refused value raises `ArgumentError`, whose message names the Python argument
("learning_rate=nan is not ..."); a command shows the same message with its flag
("--learning_rate=nan is not ...") through `ArgumentError.with_flag`. The checks
of a recipe's values live here; a method's options carry their own (see
`keras_ffl.methods.Option`), built from `positive`, `non_negative` and `epochs`.
"""

import math

import numpy as np

from keras_ffl.arguments import NamesArguments

#: Recipe fields that must be finite numbers above (strictly) or at least zero.
POSITIVE = ("learning_rate", "lr_factor")
NON_NEGATIVE = ("weight_decay", "fusion_weight_decay")
#: Recipe fields that are whole numbers of epochs, and their least value.
EPOCH_COUNTS = {"rampup_epochs": 0}
#: Counts of at least one (None allowed: a default applies).
AT_LEAST_ONE = ("epochs", "batch_size", "eval_batch_size", "steps_per_epoch", "validation_steps")


class ArgumentError(NamesArguments, ValueError):
    """A refused argument value; the message says "<what> — <how to fix it>".

    `argument` is the Python argument's name. The message template writes it as
    "{arg}" and any other argument it names as "{arg:<name>}": `str()` shows the
    arguments' names, `with_flag` the command-line flags of the same names.
    """

    def __init__(self, argument, template):
        self.argument = argument
        super().__init__(template.replace("{arg}", f"{{arg:{argument}}}"))


def positive(name, value):
    """Refuses `value` of argument `name` unless it is a finite number > 0."""
    _check_number(name, value, "a finite number > 0", lambda v: v > 0)


def non_negative(name, value):
    """Refuses `value` of argument `name` unless it is a finite number >= 0."""
    _check_number(name, value, "a finite number >= 0", lambda v: v >= 0)


def epochs(minimum):
    """A check refusing anything but a whole number of epochs >= `minimum`."""

    def check(name, value):
        _check_count(name, value, minimum, "a number of epochs")

    return check


def check_hyperparameters(values):
    """Raises ArgumentError for the first value of a run's recipe (`values`) that cannot train.

    Learning rates and factors must be finite and > 0, weight decays finite and
    >= 0, the ramp-up a whole number of epochs >= 0, the milestones epochs >= 0:
    a NaN, an infinity or a sign error would otherwise train silently into a
    useless model or be stored in the run's config.json.
    """
    for name in POSITIVE:
        positive(name, values[name])
    for name in NON_NEGATIVE:
        non_negative(name, values[name])
    for name, minimum in EPOCH_COUNTS.items():
        epochs(minimum)(name, values[name])
    for milestone in values["lr_milestones"]:
        _check_count("lr_milestones", milestone, 0, "epochs such as 150,225")
    for name in AT_LEAST_ONE:
        if values[name] is not None:
            _check_count(name, values[name], 1, "leave it out for the default")


def _check_number(name, value, requirement, accept):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ArgumentError(name, f"{{arg}}={value!r} is not a number — pass {requirement}")
    if not (math.isfinite(value) and accept(value)):
        raise ArgumentError(name, f"{{arg}}={value!r} is not {requirement} — pass {requirement}")
    if not _fits_float32(value):
        raise ArgumentError(
            name,
            f"{{arg}}={value!r} does not fit in float32, in which the run computes "
            f"(magnitudes {_FLOAT32_RANGE[0]:.3g} to {_FLOAT32_RANGE[1]:.4g}) — pass "
            f"{requirement} in that range",
        )


#: The least and greatest magnitudes of a float32 other than 0.
_FLOAT32_RANGE = (float(np.finfo(np.float32).smallest_subnormal), float(np.finfo(np.float32).max))


def _fits_float32(value):
    """Whether `value` is 0 or a float32 of its magnitude: neither overflows to an
    infinity nor underflows to 0 (a learning rate of 1e308 or 1e-50)."""
    smallest, largest = _FLOAT32_RANGE
    return value == 0 or smallest <= abs(value) <= largest


def _check_count(name, value, minimum, hint):
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ArgumentError(
            name,
            f"{{arg}}={value!r} is not a whole number >= {minimum} — pass one ({hint})",
        )
