"""Functional builders: a standalone sub-network, and the sub-networks every method starts from.

Heads are named "sub1".."subn" (see `keras_ffl.heads`); every head's last feature map is the
output of a layer named "<head>_features" and its logits of "<head>_logits", so
that any head can be cut out of a trained network as a plain Keras model.
"""

import typing

import keras

from keras_ffl.heads import INPUT_NAME, features_layer, sub_name
from keras_ffl.models import get_architecture, network_input_convention
from keras_ffl.models.layers import classifier


def _as_architecture(arch, sync_bn):
    return get_architecture(arch, sync_bn=sync_bn)


def _input(input_shape):
    if len(input_shape) != 3:
        raise ValueError(f"input_shape must be (height, width, channels); got {input_shape}.")
    return keras.Input(shape=tuple(input_shape), name=INPUT_NAME)


def build_subnetwork(
    architecture, num_classes, input_shape, *, include_top=True, sync_bn=False, name=None
):
    """One sub-network as a standalone (vanilla) model.

    Args:
      architecture: an `Architecture`, a name such as "resnet32" or
        "keras:MobileNetV3Small", or a functional `keras.Model` (or a function
        building one) whose feature map it takes.
      num_classes: classes of the classifier.
      input_shape: (height, width, channels), e.g. (32, 32, 3) or (28, 28, 1).
      include_top: with the classifier (logits out) or without (feature map out).

    Returns:
      A functional `keras.Model` whose feature map is the layer "features"; it
      takes images in the architecture's `input_convention` (the dataset's
      normalisation for the built-in families).
    """
    arch = _as_architecture(architecture, sync_bn)
    inputs = _input(input_shape)
    features = keras.layers.Identity(name="features")(
        arch.apply(inputs, incoming=arch.input_convention)
    )
    outputs = features
    if include_top:
        outputs = classifier(features, num_classes, "", arch.zero_classifier_bias)
    return keras.Model(inputs, outputs, name=name or arch.layer_name)


class SubNetworks(typing.NamedTuple):
    """The sub-networks of a method's network, as Keras tensors of one functional graph.

    `trunk` is the shared trunk's output in case 1 (None when nothing is shared);
    `features[k-1]` is sub-network k's last feature map (layer "sub<k>_features")
    and `logits` maps "sub<k>" to its classifier's logits (layer "sub<k>_logits").
    """

    inputs: keras.KerasTensor
    trunk: keras.KerasTensor | None
    architectures: list
    features: list
    logits: dict


def build_subnetworks(
    architectures,
    num_classes,
    input_shape,
    *,
    branches=2,
    shared_stages=None,
    share_trunk=True,
    sync_bn=False,
):
    """n sub-networks with classifiers, in one graph, as every method's network starts.

    Several `architectures` (a list of n >= 2) make n independent sub-networks
    (case 2). One architecture makes `branches` sub-networks: with `share_trunk`,
    its first `shared_stages` stages (default: the architecture's, e.g. all but
    the last on CIFAR; the graph up to a split layer for Keras Applications and
    your own models) form a shared trunk and each branch has its own copy of
    the rest (case 1); without, `branches` independent copies of the whole network.
    The network's input follows `network_input_convention` of the architectures.
    """
    inputs = _input(input_shape)
    trunk = None
    if isinstance(architectures, (list, tuple)) and len(architectures) == 1:
        architectures = architectures[0]
    if isinstance(architectures, (list, tuple)):
        archs = [_as_architecture(a, sync_bn) for a in architectures]
        if shared_stages is not None:
            raise ValueError(
                "shared_stages applies to one architecture with branches (case 1); "
                "sub-networks of several architectures share nothing. Leave it None."
            )
        incoming = network_input_convention(archs)
        features = [
            arch.apply(inputs, prefix=f"{sub_name(k)}_", incoming=incoming)
            for k, arch in enumerate(archs, start=1)
        ]
    else:
        arch = _as_architecture(architectures, sync_bn)
        if branches < 1:
            raise ValueError(f"branches must be at least 1; got {branches}.")
        archs = [arch] * branches
        if share_trunk:
            shared = arch.default_shared_stages if shared_stages is None else shared_stages
            if not 0 <= shared < arch.num_stages:
                raise ValueError(
                    f"shared_stages must be in [0, {arch.num_stages - 1}] for {arch.name} "
                    f"(stage 0 is the stem); got {shared}."
                )
            trunk = arch.apply(inputs, 0, shared, prefix="shared_", incoming=arch.input_convention)
            features = [
                arch.apply(trunk, shared, prefix=f"{sub_name(k)}_")
                for k in range(1, branches + 1)
            ]
        else:
            if shared_stages is not None:
                raise ValueError(
                    "shared_stages applies to methods whose branches share a trunk; this "
                    "one trains independent sub-networks. Leave it None."
                )
            features = [
                arch.apply(inputs, prefix=f"{sub_name(k)}_", incoming=arch.input_convention)
                for k in range(1, branches + 1)
            ]
    feature_maps, logits = [], {}
    for k, (arch, feature_map) in enumerate(zip(archs, features), start=1):
        head = sub_name(k)
        feature_map = keras.layers.Identity(name=features_layer(head))(feature_map)
        feature_maps.append(feature_map)
        logits[head] = classifier(feature_map, num_classes, head, arch.zero_classifier_bias)
    return SubNetworks(inputs, trunk, archs, feature_maps, logits)
