"""ImageNet ResNet-18/34 (BasicBlock) in torchvision's layout."""

import keras

from keras_ffl.models.architecture import Architecture
from keras_ffl.models.layers import basic_block, conv_bn

_BLOCKS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3)}


class ImageNetResNet(Architecture):
    """7x7/2 conv 64 + 3x3/2 max-pool -> four stages at 64/128/256/512 channels.

    Stages: 0 = stem, 1..4 = residual stages. For case 1 the paper separates "the
    last 2 blocks" on ImageNet, read here as the last two stages (as ONE does for
    more branch capacity); `shared_stages` in the FFL builder changes it.
    """

    num_stages = 5
    default_shared_stages = 3
    feature_channels = 512
    widths = (64, 128, 256, 512)

    def __init__(self, depth, sync_bn=False):
        if depth not in _BLOCKS:
            raise ValueError(f"ImageNet ResNet depth must be one of {sorted(_BLOCKS)}; got {depth}.")
        super().__init__(f"resnet{depth}", sync_bn)
        self.depth = depth
        self.blocks = _BLOCKS[depth]

    def stage(self, x, index, prefix):
        if index == 0:
            x = conv_bn(x, 64, 7, 2, f"{prefix}stem", self.sync_bn)
            # PyTorch pads the max-pool with -inf; after a ReLU zeros are equivalent.
            x = keras.layers.ZeroPadding2D(1, name=f"{prefix}stem_pool_pad")(x)
            return keras.layers.MaxPooling2D(3, 2, name=f"{prefix}stem_pool")(x)
        filters = self.widths[index - 1]
        for block in range(self.blocks[index - 1]):
            strides = 2 if index > 1 and block == 0 else 1
            x = basic_block(
                x, filters, strides, f"{prefix}stage{index}_block{block + 1}", self.sync_bn
            )
        return x
