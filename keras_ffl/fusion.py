"""`FusionBlock`: FFL's fusion module, which fuses the sub-networks' last feature maps."""

import keras

from keras_ffl.models.layers import batch_norm, he_normal_fan_out

MODES = ("fusion", "average")


@keras.saving.register_keras_serializable(package="keras_ffl")
class FusionBlock(keras.layers.Layer):
    """Fuses n >= 2 feature maps into one (paper Fig. 2 and App. A).

    mode="fusion": concat(F_1..F_n) (M channels) -> depthwise 3x3 -> BN -> ReLU ->
    pointwise 1x1 to `channels` -> BN -> ReLU. Feature maps larger than the smallest
    are first brought to its spatial size by a learned strided conv + BN + ReLU
    (the FitNets-style regressor the paper mentions).

    mode="average": the element-wise mean of the feature maps, as DualNet does and as
    the paper's ablation (Table II, case B) uses; it has no weights and needs
    inputs of one shape.

    Args:
      channels: N, the output channels in "fusion" mode: an int, "min" (the
        smallest input channel count; the paper's CIFAR case 1) or "sum" (M; the
        paper's ImageNet setting).
      mode: "fusion" or "average".
      sync_bn: synchronise BatchNorm statistics across replicas.
    """

    def __init__(self, channels="min", mode="fusion", sync_bn=False, **kwargs):
        super().__init__(**kwargs)
        if mode not in MODES:
            raise ValueError(f"FusionBlock mode must be one of {MODES}; got {mode!r}.")
        if not (channels in ("min", "sum") or (isinstance(channels, int) and channels > 0)):
            raise ValueError(
                f'FusionBlock channels must be a positive int, "min" or "sum"; got {channels!r}.'
            )
        self.channels = channels
        self.mode = mode
        self.sync_bn = sync_bn

    def _check_shapes(self, shapes):
        if not isinstance(shapes, (list, tuple)) or len(shapes) < 2:
            raise ValueError("FusionBlock takes a list of at least 2 feature maps.")
        if any(len(s) != 4 for s in shapes):
            raise ValueError(
                f"FusionBlock takes [batch, height, width, channels] feature maps; got {shapes}."
            )
        if self.mode == "average" and len({tuple(s[1:]) for s in shapes}) > 1:
            raise ValueError(
                "FusionBlock(mode='average') needs feature maps of one shape, got "
                f"{[tuple(s[1:]) for s in shapes]}; use mode='fusion', which concatenates "
                "any channel counts and resizes differing spatial sizes."
            )

    @staticmethod
    def _fused_size(shapes):
        """The smallest spatial size, to which larger feature maps are resized."""
        sizes = {(s[1], s[2]) for s in shapes}
        if len(sizes) == 1:
            return sizes.pop()
        if any(None in size for size in sizes):
            raise ValueError(
                f"FusionBlock can only resize feature maps of known spatial size; got {shapes}. "
                "Build the sub-networks with a fixed input shape."
            )
        return min(s[1] for s in shapes), min(s[2] for s in shapes)

    def _out_channels(self, channel_counts):
        if self.channels == "min":
            return min(channel_counts)
        if self.channels == "sum":
            return sum(channel_counts)
        return self.channels

    def build(self, input_shape):
        shapes = [tuple(s) for s in input_shape]
        self._check_shapes(shapes)
        if self.mode == "average":
            return
        height, width = self._fused_size(shapes)
        self.resizers = []
        for k, shape in enumerate(shapes):
            self.resizers.append(self._make_resizer(k, shape, height, width))
        channel_counts = [s[3] for s in shapes]
        total = sum(channel_counts)
        fused_shape = (shapes[0][0], height, width, total)
        self.depthwise = keras.layers.DepthwiseConv2D(
            3,
            padding="same",
            use_bias=False,
            depthwise_initializer=he_normal_fan_out(3 * 3 * total),
            name="depthwise",
        )
        self.depthwise_bn = batch_norm("depthwise_bn", self.sync_bn)
        self.pointwise = keras.layers.Conv2D(
            self._out_channels(channel_counts),
            1,
            use_bias=False,
            kernel_initializer=he_normal_fan_out(self._out_channels(channel_counts)),
            name="pointwise",
        )
        self.pointwise_bn = batch_norm("pointwise_bn", self.sync_bn)
        self.depthwise.build(fused_shape)
        self.depthwise_bn.build(fused_shape)
        self.pointwise.build(fused_shape)
        self.pointwise_bn.build(self.pointwise.compute_output_shape(fused_shape))

    def _make_resizer(self, k, shape, height, width):
        """A valid conv mapping `shape`'s spatial size onto (height, width), or None."""
        if shape[1] == height and shape[2] == width:
            return None
        # Stride s = floor ratio and kernel size so that (size - kernel) / s + 1 = target.
        strides = (shape[1] // height, shape[2] // width)
        kernel = (shape[1] - strides[0] * (height - 1), shape[2] - strides[1] * (width - 1))
        channels = shape[3]
        conv = keras.layers.Conv2D(
            channels,
            kernel,
            strides=strides,
            padding="valid",
            use_bias=False,
            kernel_initializer=he_normal_fan_out(kernel[0] * kernel[1] * channels),
            name=f"resize{k + 1}",
        )
        bn = batch_norm(f"resize{k + 1}_bn", self.sync_bn)
        conv.build(shape)
        bn.build(conv.compute_output_shape(shape))
        return conv, bn

    def call(self, inputs, training=None):
        if self.mode == "average":
            return keras.ops.mean(keras.ops.stack(inputs, axis=0), axis=0)
        aligned = []
        for x, resizer in zip(inputs, self.resizers):
            if resizer is not None:
                conv, bn = resizer
                x = keras.ops.relu(bn(conv(x), training=training))
            aligned.append(x)
        x = keras.ops.concatenate(aligned, axis=-1)
        x = keras.ops.relu(self.depthwise_bn(self.depthwise(x), training=training))
        return keras.ops.relu(self.pointwise_bn(self.pointwise(x), training=training))

    def compute_output_shape(self, input_shape):
        shapes = [tuple(s) for s in input_shape]
        self._check_shapes(shapes)
        if self.mode == "average":
            return shapes[0]
        height, width = self._fused_size(shapes)
        return (shapes[0][0], height, width, self._out_channels([s[3] for s in shapes]))

    def get_config(self):
        config = super().get_config()
        config.update({"channels": self.channels, "mode": self.mode, "sync_bn": self.sync_bn})
        return config
