"""The schedules of the official recipe: the distillation ramp-up and step learning rates."""

import math

import keras


def sigmoid_rampup(epoch, rampup_epochs):
    """Laine & Aila's ramp-up: exp(-5 (1 - e/R)^2) for e < R, then 1 (e is 0-based)."""
    if rampup_epochs <= 0:
        return 1.0
    progress = min(max(float(epoch), 0.0), float(rampup_epochs)) / rampup_epochs
    return math.exp(-5.0 * (1.0 - progress) ** 2)


def step_learning_rate(initial_rate, milestones, steps_per_epoch, factor=0.1):
    """A learning rate multiplied by `factor` at each epoch in `milestones`.

    Boundaries are in optimizer steps, so the rate follows `optimizer.iterations`
    and resumes exactly from a checkpoint. The paper's CIFAR recipe is
    milestones=(150, 225); ImageNet's is (30, 60).
    """
    milestones = sorted(int(m) for m in milestones)
    if not milestones:
        return float(initial_rate)
    # The schedule sees the 0-based step index and keeps the old value while
    # step <= boundary, so the last step of epoch m - 1 is the boundary.
    boundaries = [m * int(steps_per_epoch) - 1 for m in milestones]
    values = [float(initial_rate) * factor**i for i in range(len(milestones) + 1)]
    return keras.optimizers.schedules.PiecewiseConstantDecay(boundaries, values)
