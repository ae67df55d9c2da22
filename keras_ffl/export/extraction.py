"""Cut one head out of a trained network of any method as a standalone functional model.

A sub-network extracted this way is built only of stock Keras layers, with the
layer names `build_subnetwork` gives the same architecture ("features", "pool",
"logits", no "shared_"/"sub<k>_" prefixes), so its `.keras` file loads in any
Keras app without keras_ffl. A combined head (FFL's fused classifier, ONE's
gated teacher, an ensemble) needs every sub-network it combines, so its models
keep the network's layer names.
"""

import keras

from keras_ffl.batch_norm import BatchNorm
from keras_ffl.heads import (
    FUSED,
    features_layer,
    logits_layer,
    network_heads,
    sub_heads,
    sub_index,
    sub_name,
)

SHARED_PREFIX = "shared_"


def as_network(model_or_network):
    """The functional network of a trained model (any method), or the network itself.

    Raises ValueError unless the network's outputs are a dict of heads with
    sub-networks "sub1".."subn".
    """
    network = getattr(model_or_network, "network", model_or_network)
    outputs = network.output if isinstance(network, keras.Model) else None
    if not isinstance(outputs, dict) or sub_name(1) not in outputs:
        raise ValueError(
            f"Expected a keras_ffl model or its network (a functional model with outputs "
            f"sub1..subn and the method's heads); got {type(model_or_network).__name__}. "
            "Load the trained model with keras.saving.load_model and pass it (or its .network)."
        )
    return network


def num_subnetworks(model_or_network):
    """n, the number of sub-networks of a model or network."""
    return len(sub_heads(network_heads(as_network(model_or_network))))


def has_features(model_or_network, head):
    """Whether `head` has its own last feature map (a layer "<head>_features")."""
    network = as_network(model_or_network)
    return any(layer.name == features_layer(head) for layer in network.layers)


def extract_head(model_or_network, head, include_top=True, name=None):
    """Head `head` as a standalone functional model: `extract_subnetwork` for a
    sub-network, else the graph from the images to the head's logits (or, without
    `include_top`, its feature map)."""
    network = as_network(model_or_network)
    heads = network_heads(network)
    if head not in heads:
        raise ValueError(f"head must be one of {heads}; got {head!r}.")
    if sub_index(head) is not None:
        return extract_subnetwork(network, sub_index(head), include_top, name)
    if not include_top and not has_features(network, head):
        raise ValueError(f"The {head!r} head has no feature map of its own; use include_top.")
    output_layer = logits_layer(head) if include_top else features_layer(head)
    default_name = f"{network.name}_{head}" + ("" if include_top else "_backbone")
    return _clone_head(network, output_layer, lambda layer_name: layer_name, name or default_name)


def extract_subnetwork(model_or_network, k, include_top=True, name=None):
    """Sub-network k (1-based) as a standalone functional model with its own weights.

    With `include_top` it maps the network's (normalised) images to the logits of
    sub-network k, else to its last feature map (a backbone for a new head). The
    model shares no variables with the network, so fine-tuning it leaves the FFL
    model untouched.
    """
    network = as_network(model_or_network)
    n = num_subnetworks(network)
    if not (isinstance(k, int) and 1 <= k <= n):
        raise ValueError(f"k must be a sub-network number in 1..{n}; got {k!r}.")
    head = sub_name(k)
    prefixes = (SHARED_PREFIX, f"{head}_")

    def rename(layer_name):
        for prefix in prefixes:
            if layer_name.startswith(prefix):
                return layer_name[len(prefix) :]
        return layer_name

    output_layer = f"{head}_logits" if include_top else f"{head}_features"
    default_name = f"{network.name}_{head}" + ("" if include_top else "_backbone")
    return _clone_head(network, output_layer, rename, name or default_name)


def extract_fused(model_or_network, include_top=True, name=None):
    """FFL's fused classifier as a standalone functional model (see `extract_head`).

    It is the whole graph from the images through every sub-network and the
    fusion block to the fused logits. It contains a `FusionBlock`, so loading it
    needs keras_ffl.
    """
    return extract_head(model_or_network, FUSED, include_top, name)


def _clone_head(network, output_layer, rename, name):
    """Clones the graph from the network's input to `output_layer`, renaming layers."""
    head = keras.Model(network.input, network.get_layer(output_layer).output, name=name)

    def clone_layer(layer):
        config = layer.get_config()
        config["name"] = rename(layer.name)
        return _stock_class(layer).from_config(config)

    clone = keras.models.clone_model(head, clone_function=clone_layer)
    for layer in head.layers:
        clone.get_layer(rename(layer.name)).set_weights(layer.get_weights())
    return clone


def _stock_class(layer):
    """The stock Keras class that stands in for `layer`'s in an extracted model.

    keras_ffl's `BatchNorm` differs from `keras.layers.BatchNormalization` only
    in training numerics, with the same config and weights, so extracted
    models hold the stock layer and load in plain Keras.
    """
    if type(layer) is BatchNorm:
        return keras.layers.BatchNormalization
    return layer.__class__
