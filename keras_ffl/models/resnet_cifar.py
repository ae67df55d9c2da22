"""CIFAR ResNet-(6n+2) of He et al. as the official FFL and ONE code define it."""

from keras_ffl.models.architecture import Architecture, scaled_widths
from keras_ffl.models.layers import basic_block, conv_bn


class CifarResNet(Architecture):
    """3x3 conv 16 -> three stages of n BasicBlocks at 16/32/64 channels, strides 1/2/2.

    `width` multiplies every convolution's channels, the stem's included
    ("resnet8x0.5": 8 -> 8/16/32), for networks smaller or wider than the
    paper's; 1 is the paper's network. Stages: 0 = stem, 1..3 = the residual
    stages; case 1 shares stages 0..2 and branches the last one, as the paper
    does on CIFAR.
    """

    num_stages = 4
    default_shared_stages = 3

    def __init__(self, depth, sync_bn=False, width=1):
        if depth < 8 or (depth - 2) % 6:
            raise ValueError(
                f"CIFAR ResNet depth must be 6n+2 with n >= 1 (8, 20, 32, 56, 110, ...); "
                f"got {depth}."
            )
        widths = scaled_widths(width)
        if widths is None:
            raise ValueError(
                f"CIFAR ResNet width must make 16 x width a whole number of channels "
                f"(e.g. 0.5, 1, 2); got {width}."
            )
        suffix = "" if width == 1 else f"x{width:g}"
        super().__init__(f"resnet{depth}{suffix}", sync_bn)
        self.depth, self.width = depth, width
        self.blocks_per_stage = (depth - 2) // 6
        self.widths = widths
        self.feature_channels = self.widths[-1]

    def stage(self, x, index, prefix):
        if index == 0:
            return conv_bn(x, self.widths[0], 3, 1, f"{prefix}stem", self.sync_bn)
        filters = self.widths[index - 1]
        for block in range(self.blocks_per_stage):
            strides = 2 if index > 1 and block == 0 else 1
            x = basic_block(
                x, filters, strides, f"{prefix}stage{index}_block{block + 1}", self.sync_bn
            )
        return x
