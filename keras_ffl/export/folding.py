"""Folding BatchNorm into the convolution before it, for inference.

In inference a BatchNorm is the per-channel affine map y = x * s + (beta - mean * s)
with s = gamma / sqrt(variance + epsilon). When x is a convolution's output and
nothing else reads it, the map folds into the convolution: kernel * s (per output
channel) and bias * s + (beta - mean * s). The folded model computes the same
function in one pass over each feature map instead of three (convolution,
multiply, add), and TensorFlow's graph optimiser then fuses the convolution with
its bias and the following ReLU. Served SavedModels are built from it.
"""

import keras
import numpy as np

_FOLDABLE = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D)


def _producer(layer):
    """The layer whose output `layer` reads (layers called once with one input), else None."""
    if len(layer._inbound_nodes) != 1:
        return None
    inputs = layer._inbound_nodes[0].input_tensors
    if len(inputs) != 1:
        return None
    return inputs[0]._keras_history.operation


def foldable_pairs(model):
    """{convolution name: BatchNormalization name} of the pairs `fold_batch_norms` folds."""
    readers = {}
    for layer in model.layers:
        for node in layer._inbound_nodes:
            for tensor in node.input_tensors:
                producer = tensor._keras_history.operation
                readers[producer.name] = readers.get(producer.name, 0) + 1
    pairs = {}
    for layer in model.layers:
        if not isinstance(layer, keras.layers.BatchNormalization) or layer.axis not in (-1, 3):
            continue
        conv = _producer(layer)
        if (
            isinstance(conv, _FOLDABLE)
            and len(conv._inbound_nodes) == 1
            and readers.get(conv.name) == 1
            and conv.activation is keras.activations.linear
        ):
            pairs[conv.name] = layer.name
    return pairs


def fold_batch_norms(model):
    """An inference-only copy of functional `model` with BatchNorms folded into convolutions.

    Layer names are kept: a folded BatchNorm becomes an identity layer of the same
    name (a Lambda, which takes BatchNorm's call arguments), so `get_layer` finds
    every layer of the original. Layers nested inside
    other layers (such as FusionBlock's) are copied as they are.
    """
    pairs = foldable_pairs(model)
    folded_bns = set(pairs.values())

    def clone_layer(layer):
        config = layer.get_config()
        if layer.name in folded_bns:
            return keras.layers.Lambda(lambda x: x, name=layer.name)
        if layer.name in pairs:
            config["use_bias"] = True
            config["bias_initializer"] = "zeros"
        return layer.__class__.from_config(config)

    clone = keras.models.clone_model(model, clone_function=clone_layer)
    for layer in model.layers:
        if layer.name in folded_bns or not layer.weights:
            continue
        weights = layer.get_weights()
        if layer.name in pairs:
            weights = _folded_weights(layer, model.get_layer(pairs[layer.name]))
        clone.get_layer(layer.name).set_weights(weights)
    return clone


def _folded_weights(conv, bn):
    """[kernel, bias] of `conv` followed by inference-mode `bn`, computed in float64."""
    gamma, beta, mean, variance = (np.asarray(w, np.float64) for w in bn.get_weights())
    scale = gamma / np.sqrt(variance + bn.epsilon)
    weights = [np.asarray(w, np.float64) for w in conv.get_weights()]
    kernel = weights[0]
    bias = weights[1] if conv.use_bias else np.zeros_like(mean)
    if isinstance(conv, keras.layers.DepthwiseConv2D):
        # [kh, kw, in, multiplier]; output channel c * multiplier + m.
        kernel = kernel * scale.reshape(kernel.shape[2], kernel.shape[3])
    else:
        kernel = kernel * scale
    bias = bias * scale + beta - mean * scale
    dtype = conv.get_weights()[0].dtype
    return [kernel.astype(dtype), bias.astype(dtype)]
