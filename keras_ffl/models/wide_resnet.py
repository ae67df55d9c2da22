"""Wide ResNet WRN-d-k (Zagoruyko & Komodakis) in the layout of the common PyTorch port."""

import keras

from keras_ffl.models.architecture import Architecture, scaled_widths
from keras_ffl.models.layers import batch_norm, conv


class WideResNet(Architecture):
    """3x3 conv 16 -> three stages of (d-4)/6 pre-activation blocks at 16k/32k/64k.

    k may be fractional (wrn10_0.5: 8/16/32 channels) for networks smaller than
    the paper's; the stem keeps its 16 channels, as in every WRN.

    The last stage ends with BN + ReLU, so every architecture's feature map is
    post-activation. Stages: 0 = stem, 1..3 = the residual stages.
    """

    num_stages = 4
    default_shared_stages = 3
    zero_classifier_bias = True

    def __init__(self, depth, width, sync_bn=False):
        widths = scaled_widths(width)
        if depth < 10 or (depth - 4) % 6 or widths is None:
            raise ValueError(
                f"WRN depth must be 6n+4 with n >= 1 (10, 16, 22, 28, 40, ...) and width k "
                f"must make 16k a whole number of channels (0.5, 1, 2, ...); "
                f"got WRN-{depth}-{width:g}."
            )
        super().__init__(f"wrn{depth}_{width:g}", sync_bn)
        self.depth, self.width = depth, width
        self.blocks_per_stage = (depth - 4) // 6
        self.widths = widths
        self.feature_channels = self.widths[-1]

    def _block(self, x, filters, strides, name):
        equal_in_out = x.shape[-1] == filters
        pre = batch_norm(f"{name}_bn1", self.sync_bn)(x)
        pre = keras.layers.ReLU(name=f"{name}_relu1")(pre)
        # The port projects the pre-activated input when the shape changes, and
        # adds the raw input otherwise.
        shortcut = x if equal_in_out else conv(pre, filters, 1, strides, f"{name}_proj")
        y = conv(pre, filters, 3, strides, f"{name}_conv1")
        y = batch_norm(f"{name}_bn2", self.sync_bn)(y)
        y = keras.layers.ReLU(name=f"{name}_relu2")(y)
        y = conv(y, filters, 3, 1, f"{name}_conv2")
        return keras.layers.Add(name=f"{name}_add")([shortcut, y])

    def stage(self, x, index, prefix):
        if index == 0:
            return conv(x, 16, 3, 1, f"{prefix}stem_conv")
        filters = self.widths[index - 1]
        for block in range(self.blocks_per_stage):
            strides = 2 if index > 1 and block == 0 else 1
            x = self._block(x, filters, strides, f"{prefix}stage{index}_block{block + 1}")
        if index == self.num_stages - 1:
            x = batch_norm(f"{prefix}final_bn", self.sync_bn)(x)
            x = keras.layers.ReLU(name=f"{prefix}final_relu")(x)
        return x
