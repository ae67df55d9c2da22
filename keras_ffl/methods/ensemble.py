"""The "2-net" baseline of the paper's Table VI: n networks trained independently side by side.

Nothing is shared and nothing is exchanged: the loss is sum_k CE(z_k), whose
gradient for each network is its own CE's, exactly as if each were trained
alone. The "ensemble" head is the mean of their logits. With one architecture
the n networks are full copies (no shared trunk), so the ensemble has more
parameters than FFL's case 1.
"""

import keras
from keras import ops

from keras_ffl.heads import ENSEMBLE, logits_layer, sub_name
from keras_ffl.losses import cross_entropy
from keras_ffl.methods.base import MultiHeadModel, register_method
from keras_ffl.network import build_subnetworks


def independent_loss_terms(labels, sub_logits):
    """Per-example terms: "ce_sub<k>" for each network and "total" = their sum."""
    terms = {
        f"ce_{sub_name(k)}": cross_entropy(labels, ops.cast(z, "float32"))
        for k, z in enumerate(sub_logits, start=1)
    }
    terms["total"] = sum(terms.values())
    return terms


def ensemble_head(sub_logits):
    """The "ensemble" head: the mean of the sub-networks' logits, a stock Keras layer
    computing in float32 (under mixed precision too), like every head's logits."""
    return keras.layers.Average(dtype="float32", name=logits_layer(ENSEMBLE))(list(sub_logits))


@register_method
class EnsembleModel(MultiHeadModel):
    """n independent sub-networks ("sub1".."subn") and their averaged logits ("ensemble")."""

    method_name = "ensemble"
    summary = "n independent networks (the paper's 2-net); their mean logits as the ensemble."
    primary_head = ENSEMBLE
    extra_heads = (ENSEMBLE,)

    @classmethod
    def build_network(cls, architectures, num_classes, input_shape, *, branches=2,
                      shared_stages=None, sync_bn=False):
        if not isinstance(architectures, (list, tuple)) and branches < 2:
            raise ValueError(f"The ensemble needs at least 2 networks; got branches={branches}.")
        subs = build_subnetworks(architectures, num_classes, input_shape, branches=branches,
                                 shared_stages=shared_stages, share_trunk=False,
                                 sync_bn=sync_bn)
        outputs = dict(subs.logits)
        outputs[ENSEMBLE] = ensemble_head(subs.logits.values())
        return keras.Model(subs.inputs, outputs, name="ensemble_network")

    def loss_terms(self, labels, logits):
        return independent_loss_terms(labels, [logits[h] for h in self.sub_heads])
