"""Head names, and the classifier every head ends in, defined once for every method.

A method's network maps images to a dict of logits, one entry per head:
sub-networks are "sub1".."subn"; a method may add one combined head (FFL's and
DualNet's "fused" classifier, ONE's "gated" teacher, the "ensemble" of the
2-net and DML peers, DualNet's "avg"). A head with its own feature map has a
layer "<head>_features"; every head's logits come out of a layer "<head>_logits".
"""

import keras

from keras_ffl.models.layers import torch_linear_initializers

#: Prefix of the sub-networks' heads: "sub1".."subn".
SUB_PREFIX = "sub"
#: The fused classifier on the fusion module's (FFL) or averaged (DualNet) feature map.
FUSED = "fused"
#: The mean of the sub-networks' logits.
ENSEMBLE = "ensemble"
#: ONE's teacher: the gate-weighted sum of the branches' logits (ONE-E).
GATED = "gated"
#: DualNet's reported classifier Z_avg = 0.3 z_1 + 0.3 z_2 + z_f.
DUALNET_AVG = "avg"
#: Not a head but a metric: the mean of the sub-networks' accuracies (the paper's "-S").
SUB_MEAN = "sub_mean"
#: Name of every network's input.
INPUT_NAME = "images"
FEATURES_SUFFIX = "_features"
LOGITS_SUFFIX = "_logits"


def sub_name(k):
    """The head name of sub-network k (1-based)."""
    return f"{SUB_PREFIX}{k}"


def sub_index(head):
    """k for the head "sub<k>", else None."""
    suffix = head[len(SUB_PREFIX) :] if head.startswith(SUB_PREFIX) else ""
    return int(suffix) if suffix.isdigit() and int(suffix) >= 1 else None


def sub_heads(heads):
    """The sub-network heads among `heads`, in order sub1..subn."""
    return sorted((h for h in heads if sub_index(h) is not None), key=sub_index)


def features_layer(head):
    """Name of the layer whose output is `head`'s last feature map."""
    return f"{head}{FEATURES_SUFFIX}"


def logits_layer(head):
    """Name of the layer whose output is `head`'s logits."""
    return f"{head}{LOGITS_SUFFIX}"


def network_heads(network):
    """The head names of a method's network (the keys of its dict of outputs)."""
    outputs = network.output if isinstance(network, keras.Model) else None
    if not isinstance(outputs, dict):
        raise ValueError(
            f"Expected a keras_ffl network (a functional model with a dict of logits per "
            f"head); got {type(network).__name__}."
        )
    return list(outputs)


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
        name=f"{prefix}logits",
    )(x)
