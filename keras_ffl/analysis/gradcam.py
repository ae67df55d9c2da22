"""Grad-CAM heat maps for any head with a feature map (Selvaraju et al., ICCV 2017).

For an image, a class c and a head whose last feature map is A (h x w x C) and
whose logit for c is y, Grad-CAM weighs each channel k by the spatial mean of
the gradient, alpha_k = mean_ij dy/dA_ijk, and keeps the positive evidence,
L = ReLU(sum_k alpha_k A_k). The map is upsampled to the image's size and
divided by its maximum, so every heat map lies in [0, 1].
"""

import keras
import numpy as np
import tensorflow as tf

from keras_ffl.heads import features_layer, network_heads
from keras_ffl.validation import ArgumentError

#: The feature map's layer in a standalone sub-network from `build_subnetwork`.
STANDALONE_FEATURES = "features"


def cam_heads(network):
    """The heads of a keras_ffl network that have a feature map of their own, in output order."""
    network = getattr(network, "network", network)
    layers = {layer.name for layer in network.layers}
    return [head for head in network_heads(network) if features_layer(head) in layers]


def uniform_heads(network, heads):
    """The heads of `heads` whose feature map is 1x1: their Grad-CAM is one value spread
    over the image (alpha_k A_k has no spatial extent), so it shows the prediction, not
    where the head looks."""
    network = getattr(network, "network", network)
    return [head for head in heads
            if tuple(network.get_layer(features_layer(head)).output.shape[1:3]) == (1, 1)]


def grad_cam(network, head, images, class_index=None):
    """One Grad-CAM heat map per image, at the images' resolution, with values in [0, 1].

    Args:
      network: a keras_ffl network (a functional model with a dict of logits per
        head, or a model holding one as `.network`), or a standalone sub-network
        from `build_subnetwork` (one output, feature map layer "features").
      head: the head to explain, e.g. "sub1" or "fused"; None for a standalone
        sub-network.
      images: (N, H, W, C) network inputs, normalised as in training.
      class_index: the class whose logit is explained: None for each image's
        predicted class, one int for every image, or N ints.

    Returns:
      float32 array (N, H, W). An image whose class has no positive evidence
      anywhere gets a map of zeros.
    """
    network = getattr(network, "network", network)
    features, logits = _head_tensors(network, head)
    images = tf.convert_to_tensor(images, tf.float32)
    if images.shape.rank != 4:
        raise ValueError(f"images must be (N, H, W, C); got shape {tuple(images.shape)}.")
    # The feature map first, then the head's logits from it under the tape: the
    # backward pass runs through the head alone, not the whole network below it.
    feature_map = tf.convert_to_tensor(keras.Model(network.input, features)(images, training=False))
    with tf.GradientTape() as tape:
        tape.watch(feature_map)
        scores = keras.Model(features, logits)(feature_map, training=False)
        classes = _classes(class_index, scores)
        score = tf.gather(tf.cast(scores, tf.float32), classes, axis=1, batch_dims=1)
    # Each image's score depends on its own feature map only, so the gradient of
    # the batch's sum is every image's own gradient.
    gradients = tf.cast(tape.gradient(score, feature_map), tf.float32)
    feature_map = tf.cast(feature_map, tf.float32)
    weights = tf.reduce_mean(gradients, axis=(1, 2))
    cam = tf.nn.relu(tf.einsum("nhwk,nk->nhw", feature_map, weights))
    cam = tf.image.resize(cam[..., tf.newaxis], tf.shape(images)[1:3], method="bilinear")[..., 0]
    peak = tf.reduce_max(cam, axis=(1, 2), keepdims=True)
    return np.asarray(tf.math.divide_no_nan(cam, peak))


def _head_tensors(network, head):
    """The symbolic (feature map, logits) of `head` in `network`."""
    if not isinstance(network, keras.Model) or not hasattr(network, "output"):
        raise ArgumentError(
            "network",
            f"{{arg}} is a {type(network).__name__} — pass a functional Keras model",
        )
    if not isinstance(network.output, dict):
        layers = {layer.name for layer in network.layers}
        if STANDALONE_FEATURES not in layers:
            raise ArgumentError(
                "network",
                f"{{arg}} {network.name!r} has one output but no layer {STANDALONE_FEATURES!r} "
                "— pass a standalone sub-network from build_subnetwork or a keras_ffl network "
                "with '<head>_features' layers",
            )
        if head is not None:
            raise ArgumentError(
                "head",
                f"{{arg}}={head!r} for {network.name!r}, a standalone sub-network with one "
                "output and no heads — pass head=None",
            )
        return network.get_layer(STANDALONE_FEATURES).output, network.output
    with_maps = cam_heads(network)
    if head not in network.output:
        raise ArgumentError(
            "head",
            f"{{arg}}={head!r} is not a head of {network.name!r} — pick one with a feature "
            f"map: {', '.join(with_maps)}",
        )
    if head not in with_maps:
        raise ArgumentError(
            "head",
            f"{{arg}}={head!r} has no feature map of its own in {network.name!r} (no layer "
            f"{features_layer(head)!r}; it combines other heads' logits) — pick a head with "
            f"a feature map: {', '.join(with_maps)}",
        )
    return network.get_layer(features_layer(head)).output, network.output[head]


def _classes(class_index, scores):
    """The class of every image as an int32 vector: predicted, one for all, or one each."""
    count, num_classes = scores.shape
    if class_index is None:
        return tf.argmax(scores, axis=-1, output_type=tf.int32)
    classes = np.asarray(class_index)
    if classes.ndim == 0:
        classes = np.full(count, classes)
    if (
        classes.shape != (count,)
        or not np.issubdtype(classes.dtype, np.integer)
        or classes.min() < 0
        or classes.max() >= num_classes
    ):
        raise ArgumentError(
            "class_index",
            f"{{arg}}={class_index!r} — pass None, one class in [0, {num_classes - 1}], or "
            f"{count} of them (one per image)",
        )
    return tf.constant(classes, tf.int32)
