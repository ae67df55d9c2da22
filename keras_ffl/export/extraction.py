"""Cut one head out of a trained FFL network as a standalone functional model.

A sub-network extracted this way is built only of stock Keras layers, with the
layer names `build_subnetwork` gives the same architecture ("features", "pool",
"logits", no "shared_"/"sub<k>_" prefixes), so its `.keras` file loads in any
Keras app without keras_ffl. The fused classifier needs every sub-network and
the `FusionBlock`, so its models keep the network's layer names.
"""

import keras

from keras_ffl.batch_norm import BatchNorm
from keras_ffl.heads import FUSED, sub_name

SHARED_PREFIX = "shared_"


def as_network(model_or_network):
    """The functional network of an `FFLModel`, or the network itself.

    Raises ValueError unless the network's outputs are {"sub1".."subn", "fused"}.
    """
    network = getattr(model_or_network, "network", model_or_network)
    outputs = network.output if isinstance(network, keras.Model) else None
    if not isinstance(outputs, dict) or FUSED not in outputs or sub_name(1) not in outputs:
        raise ValueError(
            f"Expected an FFLModel or a network from build_ffl_network (a functional model "
            f"with outputs sub1..subn and fused); got {type(model_or_network).__name__}. "
            "Load the trained model with keras.saving.load_model and pass it (or its .network)."
        )
    return network


def num_subnetworks(model_or_network):
    """n, the number of sub-networks of an FFL model or network."""
    outputs = as_network(model_or_network).output
    return sum(1 for head in outputs if head != FUSED)


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
    """The fused classifier as a standalone functional model with its own weights.

    It is the whole graph from the images through every sub-network and the
    fusion block to the fused logits (or, without `include_top`, to the fused
    feature map). It contains a `FusionBlock`, so loading it needs keras_ffl.
    """
    network = as_network(model_or_network)
    output_layer = f"{FUSED}_logits" if include_top else f"{FUSED}_features"
    default_name = f"{network.name}_{FUSED}" + ("" if include_top else "_backbone")
    return _clone_head(network, output_layer, lambda layer_name: layer_name, name or default_name)


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
