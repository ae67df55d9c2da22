"""Building blocks shared by the sub-network architectures.

They reproduce the official PyTorch implementation's numerics: symmetric padding,
He-normal (fan-out) kernels, PyTorch's BatchNorm momentum and epsilon, and
PyTorch's default initialisation of the linear classifier.
"""

import math

import keras

from keras_ffl.batch_norm import BatchNorm
from keras_ffl.heads import logits_layer

# PyTorch's BatchNorm2d(momentum=0.1, eps=1e-5) expressed in Keras's convention.
BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5


def he_normal_fan_out(fan_out):
    """Normal(0, sqrt(2 / fan_out)), fan_out = k*k*out: the official conv initialisation.

    PyTorch counts a depthwise conv's out_channels as its number of channels, where
    Keras's fan computation would count its depth multiplier, so the standard
    deviation is computed here explicitly rather than with VarianceScaling.
    """
    return keras.initializers.RandomNormal(
        stddev=math.sqrt(2.0 / fan_out)
    )


def torch_linear_initializers(fan_in, zero_bias=False):
    """(kernel, bias) initialisers of PyTorch's nn.Linear: U(+-1/sqrt(fan_in))."""
    bound = 1.0 / math.sqrt(fan_in)
    kernel = keras.initializers.RandomUniform(-bound, bound)
    bias = "zeros" if zero_bias else keras.initializers.RandomUniform(-bound, bound)
    return kernel, bias


def batch_norm(name, synchronized=False):
    """BatchNorm with PyTorch's defaults and numerics; `synchronized` syncs statistics across replicas."""
    return BatchNorm(
        momentum=BN_MOMENTUM,
        epsilon=BN_EPSILON,
        synchronized=synchronized,
        name=name,
    )


def conv(x, filters, kernel_size, strides, name):
    """Bias-free conv with the official symmetric padding of (kernel_size - 1) // 2.

    Keras's "same" padding equals it at stride 1; at stride 2 it would pad only
    after, shifting the sampling grid, so strided convs pad explicitly.
    """
    pad = (kernel_size - 1) // 2
    padding = "same"
    if strides > 1 and pad > 0:
        x = keras.layers.ZeroPadding2D(pad, name=f"{name}_pad")(x)
        padding = "valid"
    return keras.layers.Conv2D(
        filters,
        kernel_size,
        strides=strides,
        padding=padding,
        use_bias=False,
        kernel_initializer=he_normal_fan_out(kernel_size * kernel_size * filters),
        name=name,
    )(x)


def conv_bn(x, filters, kernel_size, strides, name, sync_bn, relu=True):
    """conv -> BN (-> ReLU)."""
    x = conv(x, filters, kernel_size, strides, name=f"{name}_conv")
    x = batch_norm(f"{name}_bn", sync_bn)(x)
    if relu:
        x = keras.layers.ReLU(name=f"{name}_relu")(x)
    return x


def basic_block(x, filters, strides, name, sync_bn):
    """ResNet BasicBlock (post-activation) with a 1x1 conv + BN projection shortcut."""
    in_channels = x.shape[-1]
    shortcut = x
    if strides != 1 or in_channels != filters:
        shortcut = conv_bn(x, filters, 1, strides, f"{name}_proj", sync_bn, relu=False)
    y = conv_bn(x, filters, 3, strides, f"{name}_1", sync_bn)
    y = conv_bn(y, filters, 3, 1, f"{name}_2", sync_bn, relu=False)
    y = keras.layers.Add(name=f"{name}_add")([shortcut, y])
    return keras.layers.ReLU(name=f"{name}_out")(y)


def classifier(features, num_classes, head, zero_bias=False):
    """Global average pooling + Dense logits for `head`, initialised as PyTorch's nn.Linear.

    The layers are "<head>_pool" and "<head>_logits" ("pool" and "logits" when
    `head` is empty, as in a standalone sub-network). Logits are float32 under
    mixed precision, for a stable softmax and KL.
    """
    prefix = f"{head}_" if head else ""
    x = keras.layers.GlobalAveragePooling2D(name=f"{prefix}pool")(features)
    kernel_init, bias_init = torch_linear_initializers(features.shape[-1], zero_bias)
    return keras.layers.Dense(
        num_classes,
        kernel_initializer=kernel_init,
        bias_initializer=bias_init,
        dtype="float32",
        name=logits_layer(head) if head else "logits",
    )(x)
