"""CIFAR ResNet-(6n+2) of He et al. as the official FFL and ONE code define it."""

from keras_ffl.models.architecture import Architecture
from keras_ffl.models.layers import basic_block, conv_bn


class CifarResNet(Architecture):
    """3x3 conv 16 -> three stages of n BasicBlocks at 16/32/64 channels, strides 1/2/2.

    Stages: 0 = stem, 1..3 = the residual stages; case 1 shares stages 0..2 and
    branches the last one, as the paper does on CIFAR.
    """

    num_stages = 4
    default_shared_stages = 3
    feature_channels = 64
    widths = (16, 32, 64)

    def __init__(self, depth, sync_bn=False):
        if depth < 8 or (depth - 2) % 6:
            raise ValueError(
                f"CIFAR ResNet depth must be 6n+2 with n >= 1 (8, 20, 32, 56, 110, ...); "
                f"got {depth}."
            )
        super().__init__(f"resnet{depth}", sync_bn)
        self.depth = depth
        self.blocks_per_stage = (depth - 2) // 6

    def stage(self, x, index, prefix):
        if index == 0:
            return conv_bn(x, 16, 3, 1, f"{prefix}stem", self.sync_bn)
        filters = self.widths[index - 1]
        for block in range(self.blocks_per_stage):
            strides = 2 if index > 1 and block == 0 else 1
            x = basic_block(
                x, filters, strides, f"{prefix}stage{index}_block{block + 1}", self.sync_bn
            )
        return x
