"""The `Architecture` interface: a sub-network as a stem and stages that can be split.

FFL's case 1 shares the low-level stages of one architecture between branches and
duplicates the high-level ones; describing every backbone as an ordered list of
stages lets one builder cut any of them at any stage.
"""

import abc


def scaled_widths(width, base=(16, 32, 64)):
    """The stage widths `base` times `width`, or None when one is not a whole number."""
    channels = [b * width for b in base]
    if width <= 0 or any(c != int(c) for c in channels):
        return None
    return tuple(int(c) for c in channels)


class Architecture(abc.ABC):
    """A backbone as `num_stages` stages (stage 0 is the stem) ending in a feature map.

    Subclasses define the stages; `apply` runs a contiguous range of them on a
    Keras tensor, naming every layer with `prefix` so that several copies of the
    same stages can live in one functional model.
    """

    #: Number of stages, the stem included.
    num_stages: int
    #: Stages shared between branches in FFL's case 1 unless told otherwise.
    default_shared_stages: int
    #: Channels of the last feature map.
    feature_channels: int
    #: The official classifier of this family initialises its bias to zero.
    zero_classifier_bias: bool = False

    def __init__(self, name, sync_bn=False):
        self.name = name
        self.sync_bn = sync_bn

    @abc.abstractmethod
    def stage(self, x, index, prefix):
        """Applies stage `index` to the Keras tensor `x`."""

    def apply(self, x, start=0, stop=None, prefix=""):
        """Applies stages [start, stop) to `x` and returns the resulting tensor."""
        stop = self.num_stages if stop is None else stop
        if not 0 <= start <= stop <= self.num_stages:
            raise ValueError(
                f"{self.name} has stages 0..{self.num_stages - 1}; cannot apply "
                f"stages [{start}, {stop})."
            )
        for index in range(start, stop):
            x = self.stage(x, index, prefix)
        return x

    def __repr__(self):
        return f"{type(self).__name__}({self.name!r}, sync_bn={self.sync_bn})"
