"""The ramp-up weight and the step learning rate of the paper's recipes."""

import math

import numpy as np
import pytest

from keras_ffl import sigmoid_rampup, step_learning_rate


@pytest.mark.parametrize(
    "epoch,expected",
    [
        (0, math.exp(-5.0)),
        (40, math.exp(-5.0 * 0.25)),
        (79, math.exp(-5.0 * (1 / 80) ** 2)),
        (80, 1.0),
        (200, 1.0),
    ],
)
def test_rampup_cifar(epoch, expected):
    assert sigmoid_rampup(epoch, 80) == pytest.approx(expected, rel=1e-12)


def test_rampup_disabled():
    assert sigmoid_rampup(0, 0) == 1.0


def test_step_learning_rate_changes_at_epoch_boundaries():
    steps = 391  # CIFAR train set at batch 128
    schedule = step_learning_rate(0.1, (150, 225), steps)
    rate = lambda step: float(np.asarray(schedule(step)))  # noqa: E731
    # The optimizer evaluates the schedule at the 0-based step index of the update.
    assert rate(0) == pytest.approx(0.1)
    assert rate(150 * steps - 1) == pytest.approx(0.1)
    assert rate(150 * steps) == pytest.approx(0.01)
    assert rate(225 * steps - 1) == pytest.approx(0.01)
    assert rate(225 * steps) == pytest.approx(0.001)
    assert rate(300 * steps) == pytest.approx(0.001)


def test_step_learning_rate_without_milestones_is_constant():
    assert step_learning_rate(0.05, (), 10) == 0.05
