"""FFL, Feature Fusion Learning (Kim et al., ICPR 2020): the method this library is named for.

n sub-networks (case 1: branches on a shared trunk; case 2: any architectures,
nothing shared) each with a classifier, a fusion module on their concatenated
last feature maps and a fused classifier. Loss (paper eqs. 1-6; official code
Jangho-Kim/FFL-pytorch, train_FFL.py): sum_k CE(z_k) + CE(z_f) + w * T^2 * (EKD + FKD)
with EKD = KL(sigma(z_e; T) || sigma(z_f; T)), z_e the mean of the sub-networks'
logits, and FKD = sum_k KL(sigma(z_f; T) || sigma(z_k; T)). The ablations of the
paper's Table II are the options `fusion_mode="average"`, `ekd=False`, `fkd=False`.
"""

import keras
from keras import ops

from keras_ffl import validation
from keras_ffl.fusion import MODES, FusionBlock
from keras_ffl.heads import FUSED, features_layer, logits_layer, sub_name
from keras_ffl.losses import cross_entropy, softened_kl
from keras_ffl.methods.base import MultiHeadModel, Option, register_method
from keras_ffl.models.layers import classifier
from keras_ffl.network import build_subnetworks
from keras_ffl.optimizer import layer_pattern, paper_sgd

#: The fusion module's layer; with the fused classifier it gets the lower weight decay.
FUSION_LAYER = "fusion"
#: Variables of the fusion module and the fused classifier, which the paper decays less.
FUSION_VARIABLES = layer_pattern((FUSION_LAYER, logits_layer(FUSED)))


def _channels(value):
    """"min", "sum" or a positive number of channels (a digit string is a number)."""
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return value


def ffl_loss_terms(
    labels,
    sub_logits,
    fused_logits,
    temperature=3.0,
    distill_weight=1.0,
    ekd=True,
    fkd=True,
):
    """Per-example terms of the FFL objective.

    total = sum_k CE(y, z_k) + CE(y, z_f) + w * T^2 * (EKD + FKD), with
    EKD = KL(sigma(z_e; T) || sigma(z_f; T)), z_e = mean_k z_k (ensemble teaches fused),
    FKD = sum_k KL(sigma(z_f; T) || sigma(z_k; T)) (fused teaches each sub-network).

    Args:
      labels: integer labels, shape [batch].
      sub_logits: list of n >= 2 logits tensors [batch, classes], one per sub-network.
      fused_logits: the fused classifier's logits [batch, classes].
      temperature: T.
      distill_weight: the ramp-up weight w(epoch).
      ekd, fkd: switch the two distillation terms (the paper's Table II ablations).

    Returns:
      A dict of per-example tensors: "total", "ce" (all heads), "ekd", "fkd", and
      "ce_sub{k}" / "ce_fused" for each head.
    """
    sub_logits = [ops.cast(z, "float32") for z in sub_logits]
    fused_logits = ops.cast(fused_logits, "float32")
    terms = {}
    for k, z in enumerate(sub_logits, start=1):
        terms[f"ce_{sub_name(k)}"] = cross_entropy(labels, z)
    terms[f"ce_{FUSED}"] = cross_entropy(labels, fused_logits)
    terms["ce"] = sum(terms.values())
    zeros = ops.zeros_like(terms["ce"])
    ensemble = sum(sub_logits) / len(sub_logits)
    terms["ekd"] = softened_kl(ensemble, fused_logits, temperature) if ekd else zeros
    terms["fkd"] = (
        sum(softened_kl(fused_logits, z, temperature) for z in sub_logits) if fkd else zeros
    )
    terms["total"] = terms["ce"] + distill_weight * temperature**2 * (terms["ekd"] + terms["fkd"])
    return terms


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
    if isinstance(architectures, (list, tuple)) and len(architectures) < 2:
        raise ValueError("FFL case 2 needs a list of at least 2 architectures.")
    if not isinstance(architectures, (list, tuple)) and num_branches < 2:
        raise ValueError(f"FFL needs at least 2 branches; got num_branches={num_branches}.")
    subs = build_subnetworks(
        architectures,
        num_classes,
        input_shape,
        branches=num_branches,
        shared_stages=shared_stages,
        share_trunk=True,
        sync_bn=sync_bn,
    )
    fused = FusionBlock(
        channels=fusion_channels, mode=fusion_mode, sync_bn=sync_bn, name=FUSION_LAYER
    )(subs.features)
    fused = keras.layers.Identity(name=features_layer(FUSED))(fused)
    outputs = dict(subs.logits)
    outputs[FUSED] = classifier(fused, num_classes, FUSED)
    return keras.Model(subs.inputs, outputs, name=name)


@register_method
class FFLModel(MultiHeadModel):
    """Trains a network from `build_ffl_network` with FFL's online mutual distillation.

    `train_step` minimises `ffl_loss_terms`' total averaged over the global batch;
    `fit` sets the ramp-up weight w for each epoch. Besides the shared metrics it
    logs "ekd" and "fkd".

    Args:
      network: a functional model mapping images to {"sub1", ..., "fused"} logits.
      temperature: T of the softened distributions.
      rampup_epochs: R of the ramp-up w = exp(-5 (1 - e/R)^2) (default 80); 0 means w = 1.
      ekd: distil the ensemble into the fused classifier.
      fkd: distil the fused classifier into every sub-network.
      top5: also track top-5 accuracy.
    """

    method_name = "ffl"
    summary = "Feature Fusion Learning: fusion module, fused classifier, EKD + FKD."
    options = (
        Option("temperature", 3.0, "T of the softened distributions.", parse=float,
               check=validation.positive),
        Option("ekd", True, "Ensemble knowledge distillation into the fused classifier."),
        Option("fkd", True, "Fusion knowledge distillation into every sub-network."),
        Option("fusion", "fusion",
               "fusion: the paper's fusion module; average: the mean of the feature maps "
               "(Table II, case B).", choices=MODES, network=True),
        Option("fusion_channels", "min",
               "Output channels of the fusion module: min (smallest sub-network, CIFAR), "
               "sum (all of them, ImageNet) or a number.", parse=_channels, network=True),
    )
    primary_head = FUSED
    extra_heads = (FUSED,)
    shares_trunk = True
    logged_terms = ("ekd", "fkd")
    low_decay_layers = (FUSION_LAYER, logits_layer(FUSED))
    default_rampup_epochs = 80  # The official code's --consistency_rampup.

    @classmethod
    def build_network(cls, architectures, num_classes, input_shape, *, branches=2,
                      shared_stages=None, sync_bn=False, fusion="fusion",
                      fusion_channels="min"):
        return build_ffl_network(
            architectures, num_classes, input_shape, num_branches=branches,
            shared_stages=shared_stages, fusion_channels=fusion_channels,
            fusion_mode=fusion, sync_bn=sync_bn,
        )

    def loss_terms(self, labels, logits):
        return ffl_loss_terms(
            labels,
            [logits[h] for h in self.sub_heads],
            logits[FUSED],
            temperature=self.temperature,
            distill_weight=self.distill_weight,
            ekd=self.ekd,
            fkd=self.fkd,
        )


def ffl_sgd(learning_rate=0.1, weight_decay=1e-4, fusion_weight_decay=1e-5, momentum=0.9):
    """The paper's optimiser: Nesterov SGD, L2 1e-4 on the sub-networks, 1e-5 on the fusion."""
    return paper_sgd(
        learning_rate, weight_decay, FFLModel.low_decay_layers, fusion_weight_decay, momentum
    )
