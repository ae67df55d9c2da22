"""The vanilla baseline: one sub-network trained alone with cross-entropy (every table's
last row)."""

import keras

from keras_ffl.heads import sub_name
from keras_ffl.losses import cross_entropy
from keras_ffl.methods.base import MultiHeadModel, register_method
from keras_ffl.network import build_subnetworks

HEAD = sub_name(1)


@register_method
class VanillaModel(MultiHeadModel):
    """One network, loss CE(z); its one head is "sub1", like any method's first sub-network."""

    method_name = "vanilla"
    summary = "One network trained alone with cross-entropy."
    primary_head = HEAD
    fixed_subnetworks = 1

    @classmethod
    def build_network(cls, architectures, num_classes, input_shape, *, branches=1,
                      shared_stages=None, sync_bn=False):
        if isinstance(architectures, (list, tuple)) and len(architectures) > 1 or branches != 1:
            raise ValueError(
                "The vanilla method trains one network: give one architecture and "
                f"branches=1 (got architectures={architectures!r}, branches={branches}); "
                "for several independent networks use the ensemble method."
            )
        subs = build_subnetworks(architectures, num_classes, input_shape, branches=1,
                                 shared_stages=shared_stages, share_trunk=False,
                                 sync_bn=sync_bn)
        return keras.Model(subs.inputs, subs.logits, name="vanilla_network")

    def loss_terms(self, labels, logits):
        ce = cross_entropy(labels, keras.ops.cast(logits[HEAD], "float32"))
        return {f"ce_{HEAD}": ce, "total": ce}
