"""keras_ffl's BatchNorm: the official code's BatchNorm numerics, checked against float64.

PyTorch's BatchNorm2d (which the official code uses) normalises by the biased
batch variance, updates running_var with the unbiased one, and its float32
statistics are accurate to float32; float32 training here must follow float64
as closely as that.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_ffl import build_ffl_network, build_subnetwork, data
from keras_ffl.batch_norm import BatchNorm, staged_sum
from keras_ffl.losses import cross_entropy
from keras_ffl.methods.ffl import ffl_loss_terms

EPSILON = 1e-5


def reference_batch_norm(x, gamma, beta):
    """BatchNorm in training mode, in float64 NumPy: outputs, mean, biased and unbiased variance."""
    x = np.asarray(x, np.float64)
    axes = tuple(range(x.ndim - 1))
    mean = x.mean(axis=axes)
    variance = x.var(axis=axes)
    count = x.size // x.shape[-1]
    outputs = (x - mean) / np.sqrt(variance + EPSILON) * gamma + beta
    return outputs, mean, variance, variance * count / (count - 1)


def make_layer(channels, **kwargs):
    layer = BatchNorm(momentum=0.9, epsilon=EPSILON, **kwargs)
    layer.build((None, 4, 4, channels))
    rng = np.random.default_rng(0)
    layer.gamma.assign(rng.uniform(0.5, 2.0, channels).astype("float32"))
    layer.beta.assign(rng.normal(size=channels).astype("float32"))
    return layer


def test_training_outputs_and_moving_statistics_follow_pytorch():
    rng = np.random.default_rng(1)
    x = (rng.normal(size=(6, 5, 4, 3)) * 3 + 2).astype("float32")
    layer = make_layer(3)
    outputs = layer(x, training=True).numpy()
    expected, mean, _, unbiased = reference_batch_norm(
        x, layer.gamma.numpy(), layer.beta.numpy()
    )
    np.testing.assert_allclose(outputs, expected, atol=2e-6)
    # running = 0.9 * running + 0.1 * batch, from mean 0 and variance 1; the
    # variance is the unbiased one (n / (n - 1) times the biased), as PyTorch's.
    np.testing.assert_allclose(layer.moving_mean.numpy(), 0.1 * mean, rtol=1e-5)
    np.testing.assert_allclose(layer.moving_variance.numpy(), 0.9 + 0.1 * unbiased, rtol=1e-5)


def test_gradients_are_batch_norms_gradients():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(4, 3, 5, 2)) * 2 + 1
    weights = rng.normal(size=x.shape)  # The loss sum(weights * outputs).
    layer = make_layer(2)
    x32 = tf.constant(x, tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(x32)
        loss = tf.reduce_sum(layer(x32, training=True) * tf.constant(weights, tf.float32))
    d_x, d_gamma, d_beta = tape.gradient(loss, [x32, layer.gamma, layer.beta])

    # Float64 automatic differentiation of the plain formula.
    x64 = tf.constant(x)
    gamma = tf.constant(layer.gamma.numpy(), tf.float64)
    beta = tf.constant(layer.beta.numpy(), tf.float64)
    with tf.GradientTape() as tape:
        tape.watch([x64, gamma, beta])
        mean, variance = tf.nn.moments(x64, [0, 1, 2])
        outputs = (x64 - mean) / tf.sqrt(variance + EPSILON) * gamma + beta
        loss = tf.reduce_sum(outputs * weights)
    expected = tape.gradient(loss, [x64, gamma, beta])
    for got, want in zip((d_x, d_gamma, d_beta), expected):
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-4, atol=1e-5)


def test_staged_sum_is_as_accurate_as_float64():
    # A CIFAR-sized channel (128 x 32 x 32 values) with a large mean: a
    # one-pass float32 sum drifts by about 1e-5 relative, staged sums do not.
    rng = np.random.default_rng(3)
    x = (rng.normal(size=(128, 32, 32, 2)) + 3.0).astype("float32")
    exact = x.astype(np.float64).sum(axis=(0, 1, 2))
    np.testing.assert_allclose(staged_sum(tf.constant(x)).numpy(), exact, rtol=2e-7)


def test_inference_and_frozen_layers_use_the_moving_statistics():
    layer = make_layer(3)
    layer.moving_mean.assign([1.0, -1.0, 0.5])
    layer.moving_variance.assign([4.0, 0.25, 1.0])
    x = np.random.default_rng(4).normal(size=(2, 4, 4, 3)).astype("float32")
    expected = (x - layer.moving_mean.numpy()) / np.sqrt(
        layer.moving_variance.numpy() + EPSILON
    ) * layer.gamma.numpy() + layer.beta.numpy()
    np.testing.assert_allclose(layer(x, training=False).numpy(), expected, atol=1e-5)
    layer.trainable = False  # Keras convention: a frozen BatchNorm runs in inference mode.
    np.testing.assert_allclose(layer(x, training=True).numpy(), expected, atol=1e-5)


def test_serialises_and_converts_to_stock_keras():
    layer = make_layer(3, synchronized=True, name="bn")
    restored = keras.layers.deserialize(keras.layers.serialize(layer))
    assert type(restored) is BatchNorm and restored.get_config() == layer.get_config()
    stock = keras.layers.BatchNormalization.from_config(layer.get_config())
    stock.build((None, 4, 4, 3))
    stock.set_weights(layer.get_weights())
    x = np.random.default_rng(5).normal(size=(2, 4, 4, 3)).astype("float32")
    np.testing.assert_array_equal(stock(x, training=False), layer(x, training=False))


# Float32 against float64 on real data -----------------------------------------------------


def fashion_mnist_batch(size=128):
    """The first `size` Fashion-MNIST training images, normalised as keras_ffl.data does."""
    spec = data.get_spec("fashion_mnist")
    images, labels = data.read_idx_split(data.FASHION_MNIST_DIR, "train")
    mean, std = np.float32(spec.mean[0]), np.float32(spec.std[0])
    return (images[:size].astype(np.float32) - mean) / std, labels[:size]


def build_pair(method):
    """The same ResNet-8 network (FFL or vanilla) in float32 and float64, same weights."""
    networks = []
    for dtype in ("float32", "float64"):
        keras.config.set_dtype_policy(dtype)
        try:
            if method == "ffl":
                networks.append(build_ffl_network("resnet8", 10, (28, 28, 1)))
            else:
                networks.append(build_subnetwork("resnet8", 10, (28, 28, 1)))
        finally:
            keras.config.set_dtype_policy("float32")
    networks[1].set_weights([w.astype(np.float64) for w in networks[0].get_weights()])
    return networks


def loss_and_gradients(network, method, x, y):
    with tf.GradientTape() as tape:
        logits = network(x, training=True)
        if method == "ffl":
            subs = [logits[h] for h in logits if h != "fused"]
            per_example = ffl_loss_terms(y, subs, logits["fused"], 3.0, 1.0)["total"]
        else:
            per_example = cross_entropy(y, logits)
        loss = tf.reduce_mean(per_example)
    return tape.gradient(loss, network.trainable_variables)


def batch_norm_outputs(network, x):
    """The training-mode output of every BatchNorm of `network`, the FusionBlock's included."""
    layers = [layer for layer in network.layers if isinstance(layer, BatchNorm)]
    fusion = next((layer for layer in network.layers if layer.name == "fusion"), None)
    probes = [layer.output for layer in layers] + ([fusion.input] if fusion else [])
    values = keras.Model(network.input, probes)(x, training=True)
    outputs = {layer.name: value for layer, value in zip(layers, values)}
    if fusion:
        features = values[-1]
        depthwise = fusion.depthwise_bn(fusion.depthwise(tf.concat(features, -1)), training=True)
        outputs["fusion/depthwise_bn"] = depthwise
        outputs["fusion/pointwise_bn"] = fusion.pointwise_bn(
            fusion.pointwise(tf.nn.relu(depthwise)), training=True
        )
    return outputs


@pytest.mark.slow
@pytest.mark.parametrize("method", ["vanilla", "ffl"])
def test_float32_training_follows_float64_on_fashion_mnist(method):
    x, y = fashion_mnist_batch()
    net32, net64 = build_pair(method)
    x32, x64 = tf.constant(x), tf.constant(x.astype(np.float64))

    activations32 = batch_norm_outputs(net32, x32)
    activations64 = batch_norm_outputs(net64, x64)
    assert len(activations32) == (14 if method == "ffl" else 9)
    for name, a32 in activations32.items():
        error = np.abs(a32.numpy() - activations64[name].numpy()).max()
        assert error < 1e-5, (name, error)

    grads32 = loss_and_gradients(net32, method, x32, y)
    grads64 = loss_and_gradients(net64, method, x64, y)
    for variable, g32, g64 in zip(net32.trainable_variables, grads32, grads64):
        g64 = g64.numpy()
        relative = np.abs(g32.numpy() - g64).max() / np.abs(g64).max()
        assert relative < 1e-3, (variable.path, relative)
