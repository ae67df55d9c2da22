"""ONE, On-the-fly Native Ensemble (Lan et al., NeurIPS 2018): the FFL paper's Tables III-IV.

One architecture, n >= 2 branches on a shared trunk (case 1 only), and a gate on
the trunk's output: global average pool -> Dense(n) -> BatchNorm -> ReLU ->
softmax. The gate weights the branches' logits into the teacher z_e = sum_i g_i z_i
(the "gated" head, the paper's ONE-E), which teaches every branch:

    loss = sum_i CE(z_i) + CE(z_e) + w(epoch) * T^2 * sum_i KL(sigma(z_e; T) || sigma(z_i; T))

with T = 3, the KL's teacher held constant and w the sigmoid ramp-up FFL uses
(FFL paper §IV-B and App. B "vs ONE").

From the reference code, Lan1991Xu/ONE_NeurIPS2018:
- models/cifar/resnet.py, lines 183-188: the last stage (layer3) is copied per
  branch on the shared layer2 output; lines 191-196 and 237-243: the gate is
  AvgPool2d(16) (global at CIFAR's 16x16 layer2 maps) -> nn.Linear(32, 3) ->
  nn.BatchNorm1d(3) -> ReLU -> softmax; line 263: x_m = sum_i g_i z_i, with
  nothing detached, so CE(z_e)'s gradient reaches the gate, the branches and the
  trunk. The reference hard-codes 3 branches; here n is any number >= 2.
- Lines 201-207: the init loop only touches Conv2d and BatchNorm2d, so the gate's
  Linear keeps PyTorch's default U(+-1/sqrt(fan_in)) weight and bias (as here).
  Its BatchNorm1d keeps the framework default too: a scale of 1 and a shift of 0 in
  current PyTorch and here; PyTorch releases before pytorch/pytorch#12259 (the
  era of this code: `Variable`, `loss.data[0]`) drew the scale from U(0, 1).
- cifar_one.py, lines 294-297 and 304: loss = CE of the three branches and of x_m,
  plus consistency_weight * sum_i KLLoss(z_i, x_m); line 284: the weight is
  ramps.sigmoid_rampup(epoch, 80) (scripts/ONE_ResNet32.sh: --consistency_rampup 80).
- loss/kl_loss.py, lines 16-22: T = 3; the teacher's softmax gets +1e-7 and is
  wrapped in a Variable with requires_grad=False (held constant); T^2 times the
  batch mean of KL(teacher || student). So the gate receives gradient only from CE(z_e).

The official ONE ResNet-32 with 3 branches for CIFAR-100 has 1,193,189 trainable
parameters (its code uses BasicBlocks below depth 44, as ours does at every depth),
and so does this network: the shared stem, stage 1 and stage 2 (112,592), three
stage-3 branches (3 x 353,664), three classifiers (3 x 6,500) and the gate (Dense
32 x 3 + 3 and BatchNorm's 3 scales and 3 shifts: 105).
"""

import keras
from keras import ops

from keras_ffl import validation
from keras_ffl.heads import logits_layer, sub_name
from keras_ffl.losses import cross_entropy, softened_kl
from keras_ffl.methods.base import MultiHeadModel, Option, register_method
from keras_ffl.models.layers import batch_norm, torch_linear_initializers
from keras_ffl.network import build_subnetworks

#: ONE's teacher head: the gate-weighted sum of the branches' logits (the paper's ONE-E).
GATED = "gated"
#: Prefix of the gate's layers; the last one, the softmax, is named GATE itself.
GATE = "gate"


def one_loss_terms(labels, sub_logits, gated_logits, temperature=3.0, distill_weight=1.0):
    """Per-example terms of the ONE objective.

    total = sum_i CE(y, z_i) + CE(y, z_e) + w * T^2 * KD, with
    KD = sum_i KL(sigma(z_e; T) || sigma(z_i; T)) and the teacher z_e held constant.

    Args:
      labels: integer labels, shape [batch].
      sub_logits: list of n >= 2 logits tensors [batch, classes], one per branch.
      gated_logits: the gated teacher's logits z_e [batch, classes].
      temperature: T.
      distill_weight: the ramp-up weight w(epoch).

    Returns:
      A dict of per-example tensors: "total", "ce" (all heads), "kd", and
      "ce_sub{k}" / "ce_gated" for each head.
    """
    sub_logits = [ops.cast(z, "float32") for z in sub_logits]
    gated_logits = ops.cast(gated_logits, "float32")
    terms = {}
    for k, z in enumerate(sub_logits, start=1):
        terms[f"ce_{sub_name(k)}"] = cross_entropy(labels, z)
    terms[f"ce_{GATED}"] = cross_entropy(labels, gated_logits)
    terms["ce"] = sum(terms.values())
    terms["kd"] = sum(softened_kl(gated_logits, z, temperature) for z in sub_logits)
    terms["total"] = terms["ce"] + distill_weight * temperature**2 * terms["kd"]
    return terms


@keras.saving.register_keras_serializable(package="keras_ffl")
class GatedSum(keras.layers.Layer):
    """z_e = sum_i g_i z_i: the branches' logits weighted by the gate's per-example weights.

    Called on [gate, z_1, ..., z_n] with gate [batch, n] and each z_i [batch, classes].
    """

    def call(self, inputs):
        gate, *logits = inputs
        stacked = ops.stack(logits, axis=1)  # [batch, n, classes]
        return ops.sum(ops.expand_dims(gate, -1) * stacked, axis=1)

    def compute_output_shape(self, input_shapes):
        return input_shapes[1]


def gate(trunk, num_branches, sync_bn=False):
    """The gate on the shared trunk's output: per-example weights [batch, n] summing to 1.

    Global average pool -> Dense(n) (PyTorch nn.Linear's initialisation) ->
    BatchNorm (PyTorch's settings) -> ReLU -> softmax, as the reference's gate.
    """
    x = keras.layers.GlobalAveragePooling2D(name=f"{GATE}_pool")(trunk)
    kernel_init, bias_init = torch_linear_initializers(x.shape[-1])
    x = keras.layers.Dense(
        num_branches, kernel_initializer=kernel_init, bias_initializer=bias_init,
        name=f"{GATE}_dense",
    )(x)
    x = batch_norm(f"{GATE}_bn", sync_bn)(x)
    x = keras.layers.ReLU(name=f"{GATE}_relu")(x)
    return keras.layers.Softmax(name=GATE)(x)


def build_one_network(
    architecture, num_classes, input_shape, *, num_branches=2, shared_stages=None,
    sync_bn=False, name="one_network",
):
    """ONE's network: n branches of one architecture on a shared trunk, and the gated teacher.

    Returns:
      A functional `keras.Model` mapping images to {"sub1", ..., "subn", "gated"} logits.
    """
    if isinstance(architecture, (list, tuple)):
        if len(architecture) != 1:
            raise ValueError(
                "ONE takes one architecture (case 1): its gate reads the shared trunk that "
                f"all branches grow from, and sub-networks of several architectures "
                f"(architectures={list(architecture)!r}) share no trunk. Give one "
                "architecture and branches=n, or use the ffl or dml method for several "
                "architectures."
            )
        architecture = architecture[0]
    if num_branches < 2:
        raise ValueError(f"ONE needs at least 2 branches; got branches={num_branches}.")
    subs = build_subnetworks(
        architecture, num_classes, input_shape, branches=num_branches,
        shared_stages=shared_stages, share_trunk=True, sync_bn=sync_bn,
    )
    weights = gate(subs.trunk, num_branches, sync_bn)
    outputs = dict(subs.logits)
    outputs[GATED] = GatedSum(dtype="float32", name=logits_layer(GATED))(
        [weights, *subs.logits.values()]
    )
    return keras.Model(subs.inputs, outputs, name=name)


@register_method
class ONEModel(MultiHeadModel):
    """Trains a network from `build_one_network` with ONE's gated-teacher distillation.

    Besides the shared metrics it logs "kd", the sum of the branches' KL terms
    before the weight w * T^2.

    Args:
      network: a functional model mapping images to {"sub1", ..., "gated"} logits.
      temperature: T of the softened distributions.
      rampup_epochs: R of the ramp-up w = exp(-5 (1 - e/R)^2) (default 80); 0 means w = 1.
      top5: also track top-5 accuracy.
    """

    method_name = "one"
    summary = "On-the-fly Native Ensemble: branches on a shared trunk, a gated-logits teacher."
    options = (Option("temperature", 3.0, "T of the softened distributions.", parse=float,
                      check=validation.positive),)
    primary_head = GATED
    extra_heads = (GATED,)
    shares_trunk = True
    logged_terms = ("kd",)
    default_rampup_epochs = 80  # scripts/ONE_ResNet32.sh: --consistency_rampup 80.

    @classmethod
    def build_network(cls, architectures, num_classes, input_shape, *, branches=2,
                      shared_stages=None, sync_bn=False):
        return build_one_network(
            architectures, num_classes, input_shape, num_branches=branches,
            shared_stages=shared_stages, sync_bn=sync_bn,
        )

    def loss_terms(self, labels, logits):
        return one_loss_terms(
            labels,
            [logits[h] for h in self.sub_heads],
            logits[GATED],
            temperature=self.temperature,
            distill_weight=self.distill_weight,
        )
