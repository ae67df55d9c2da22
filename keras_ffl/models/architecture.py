"""The `Architecture` interface: a sub-network as a stem and stages that can be split.

FFL's case 1 shares the low-level stages of one architecture between branches and
duplicates the high-level ones; describing every backbone as an ordered list of
stages lets one builder cut any of them at any stage.
"""

import abc
import typing


def scaled_widths(width, base=(16, 32, 64)):
    """The stage widths `base` times `width`, or None when one is not a whole number."""
    channels = [b * width for b in base]
    if width <= 0 or any(c != int(c) for c in channels):
        return None
    return tuple(int(c) for c in channels)


class InputConvention(typing.NamedTuple):
    """The input a backbone expects: (pixels - mean) / std per channel, pixels in 0..255 RGB.

    It is declared once, by the architecture; the run's normalisation (the data
    pipeline and every export) is taken from it, so a backbone is never given
    input normalised for another.
    """

    mean: tuple
    std: tuple

    def for_channels(self, channels):
        """The convention over `channels` channels: one value repeats, three average to one."""
        if len(self.mean) == channels:
            return self
        if len(self.mean) == 1:
            return InputConvention(self.mean * channels, self.std * channels)
        if channels == 1:
            return InputConvention(
                (sum(self.mean) / len(self.mean),), (sum(self.std) / len(self.std),)
            )
        raise ValueError(
            f"An input convention over {len(self.mean)} channels does not fit {channels}."
        )


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
    #: The input the backbone expects, or None: the dataset's own normalisation.
    input_convention: InputConvention | None = None

    def __init__(self, name, sync_bn=False):
        self.name = name
        self.sync_bn = sync_bn

    @abc.abstractmethod
    def stage(self, x, index, prefix):
        """Applies stage `index` to the Keras tensor `x`."""

    def apply(self, x, start=0, stop=None, prefix="", incoming=None):
        """Applies stages [start, stop) to `x` and returns the resulting tensor.

        `incoming` is the `InputConvention` the network's input follows; an
        architecture with a convention of its own converts it in its stem.
        """
        stop = self.num_stages if stop is None else stop
        if not 0 <= start <= stop <= self.num_stages:
            raise ValueError(
                f"{self.name} has stages 0..{self.num_stages - 1}; cannot apply "
                f"stages [{start}, {stop})."
            )
        for index in range(start, stop):
            x = self.stage(x, index, prefix)
        return x

    @property
    def layer_name(self):
        """The name as a Keras layer or model name (no "/", no "?")."""
        return self.name

    def __repr__(self):
        return f"{type(self).__name__}({self.name!r}, sync_bn={self.sync_bn})"


def network_input_convention(architectures):
    """The input convention of a network of `architectures`: the first one's that declares
    one, or None (the dataset's own normalisation) when none does.

    The other architectures convert it to theirs in their stem; the built-in ones,
    trained from scratch, take it as it is.
    """
    return next(
        (a.input_convention for a in architectures if a.input_convention is not None), None
    )
