"""Head names shared by the methods, and the names of their layers, defined once.

A method's network maps images to a dict of logits, one entry per head:
sub-networks are "sub1".."subn"; a method may add combined heads (FFL's and
DualNet's "fused" classifier, the "ensemble" of the 2-net and DML peers; a
head only one method has is named in that method's module, e.g. ONE's "gated").
A head with its own feature map has a layer "<head>_features"; every head's
logits come out of a layer "<head>_logits" (`keras_ffl.models.layers.classifier`).
Plain names only: reading a run's results needs no TensorFlow.
"""

#: Prefix of the sub-networks' heads: "sub1".."subn".
SUB_PREFIX = "sub"
#: The fused classifier on the fusion module's (FFL) or averaged (DualNet) feature map.
FUSED = "fused"
#: The mean of the sub-networks' logits.
ENSEMBLE = "ensemble"
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
    outputs = getattr(network, "output", None)  # None for anything but a built model.
    if not isinstance(outputs, dict):
        raise ValueError(
            f"Expected a keras_ffl network (a functional model with a dict of logits per "
            f"head); got {type(network).__name__}."
        )
    return list(outputs)
