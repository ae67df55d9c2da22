"""Functional builders: a standalone sub-network, and FFL's multi-head network.

Heads are named "sub1".."subn" and "fused"; every head's last feature map is the
output of a layer named "<head>_features" and its logits of "<head>_logits", so
that any head can be cut out of a trained network as a plain Keras model.
"""

import keras

from keras_ffl.fusion import FusionBlock
from keras_ffl.heads import FUSED, INPUT_NAME, classifier, features_layer, sub_name
from keras_ffl.models import Architecture, get_architecture


def _as_architecture(arch, sync_bn):
    if isinstance(arch, Architecture):
        return arch
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
      architecture: an `Architecture` or a name such as "resnet32".
      num_classes: classes of the classifier.
      input_shape: (height, width, channels), e.g. (32, 32, 3) or (28, 28, 1).
      include_top: with the classifier (logits out) or without (feature map out).

    Returns:
      A functional `keras.Model` whose feature map is the layer "features".
    """
    arch = _as_architecture(architecture, sync_bn)
    inputs = _input(input_shape)
    features = keras.layers.Identity(name="features")(arch.apply(inputs))
    outputs = features
    if include_top:
        outputs = classifier(features, num_classes, "", arch.zero_classifier_bias)
    return keras.Model(inputs, outputs, name=name or arch.name)


def build_ffl_network(
    architectures,
    num_classes,
    input_shape,
    *,
    num_branches=2,
    shared_stages=None,
    fusion_channels="min",
    fusion_mode="fusion",
    sync_bn=False,
    name="ffl_network",
):
    """FFL's network: n sub-networks with classifiers, a fusion block and a fused classifier.

    Case 1 (`architectures` is one name or `Architecture`): the first
    `shared_stages` stages (default: the architecture's, e.g. all but the last on
    CIFAR) form a shared trunk and `num_branches` copies of the remaining stages
    are the sub-networks' branches. Case 2 (`architectures` is a list of n >= 2):
    n independent sub-networks, nothing shared, any mix of architectures.

    Returns:
      A functional `keras.Model` mapping images to a dict of logits
      {"sub1": ..., "subn": ..., "fused": ...}.
    """
    inputs = _input(input_shape)
    if isinstance(architectures, (list, tuple)):
        archs = [_as_architecture(a, sync_bn) for a in architectures]
        if len(archs) < 2:
            raise ValueError("FFL case 2 needs a list of at least 2 architectures.")
        features = [
            arch.apply(inputs, prefix=f"{sub_name(k)}_") for k, arch in enumerate(archs, start=1)
        ]
    else:
        arch = _as_architecture(architectures, sync_bn)
        if num_branches < 2:
            raise ValueError(f"FFL needs at least 2 branches; got num_branches={num_branches}.")
        shared = arch.default_shared_stages if shared_stages is None else shared_stages
        if not 0 <= shared < arch.num_stages:
            raise ValueError(
                f"shared_stages must be in [0, {arch.num_stages - 1}] for {arch.name} "
                f"(stage 0 is the stem); got {shared}."
            )
        trunk = arch.apply(inputs, 0, shared, prefix="shared_")
        archs = [arch] * num_branches
        features = [
            arch.apply(trunk, shared, prefix=f"{sub_name(k)}_") for k in range(1, num_branches + 1)
        ]
    outputs = {}
    feature_maps = []
    for k, (arch, feature_map) in enumerate(zip(archs, features), start=1):
        head = sub_name(k)
        feature_map = keras.layers.Identity(name=features_layer(head))(feature_map)
        feature_maps.append(feature_map)
        outputs[head] = classifier(
            feature_map, num_classes, head, arch.zero_classifier_bias
        )
    fused = FusionBlock(
        channels=fusion_channels, mode=fusion_mode, sync_bn=sync_bn, name="fusion"
    )(feature_maps)
    fused = keras.layers.Identity(name=features_layer(FUSED))(fused)
    outputs[FUSED] = classifier(fused, num_classes, FUSED)
    return keras.Model(inputs, outputs, name=name)
