"""DML, Deep Mutual Learning (Zhang et al., CVPR 2018): n peers that teach each other.

n peers (n >= 2) of any architectures, nothing shared: one architecture gives n
independent copies, a list gives one peer per architecture (case 2). Peer k's loss is

    L_k = CE(y, z_k) + T^2 * sum_{j != k} KL(sigma(z_j; T) || sigma(z_k; T)),

every other peer's prediction held constant. This follows the reference code,
YingZhangDUT/Deep-Mutual-Learning, train_models.py: `kl_loss_compute` (lines
60-67) is KL(p_j || p_k) of plain softmaxes, i.e. T = 1, and `_tower_loss` (lines
90-96) adds one such term per other peer to peer k's CE, a sum (the DML paper's
eq. 10 averages them with 1/(n-1); for the two peers the FFL paper compares, Table V,
they agree). The teacher is constant because each peer's gradient is taken over its
own variables only (lines 237-241); here `softened_kl` stops the gradient, and
adds 1e-7 to the teacher's probabilities where the reference adds 1e-8 inside the
log, a negligible difference. `temperature` softens both distributions; the T^2
factor (Hinton et al.) keeps the KL's gradient on the scale of the CE's at any T,
as FFL and ONE do, and is 1 at the reference's T = 1. The reference has no ramp-up
weight on the KL (the distillation weight `w` is not used here), nor does the DML
paper.

Updates (`update`): "alternate", the default, is the reference's: for each peer in
turn, a fresh forward pass of all peers, then a step on that peer's loss over its
variables only (lines 234-241 and 277-282 build one train op per peer, the loop at
lines 310-316 runs them in turn), as the FFL paper's DML baseline "iteratively
updates parameters" (App. A-A) and the DML paper's Algorithm 1 does on one
mini-batch. Every sub-step here uses the same batch and the batch's learning rate,
and the optimizer's `iterations` advances once per batch (the reference steps its
global step once per peer, and since each `sess.run` dequeues, each peer there
sees its own batch). Only the updated peer's BatchNorm statistics move in its
sub-step: the others are restored, as the reference runs only that peer's
UPDATE_OPS (line 235). "joint" is one step on sum_k L_k, which with constant
teachers gives each peer the gradient of its own L_k from one forward pass.

Heads: "sub1".."subn" and "ensemble", the mean of the peers' logits (primary).
"""

import tensorflow as tf
from keras import ops

from keras_ffl import validation
from keras_ffl.heads import ENSEMBLE, sub_name
from keras_ffl.losses import cross_entropy, softened_kl
from keras_ffl.methods.base import MultiHeadModel, Option, register_method
from keras_ffl.methods.ensemble import EnsembleModel

#: The values of the `update` option.
UPDATES = ("alternate", "joint")


def dml_loss_terms(labels, sub_logits, temperature=1.0):
    """Per-example terms of DML with n >= 2 peers.

    L_k = CE(y, z_k) + T^2 * KL_k with KL_k = sum_{j != k} KL(sigma(z_j; T) || sigma(z_k; T)),
    each teacher z_j held constant.

    Args:
      labels: integer labels, shape [batch].
      sub_logits: list of n >= 2 logits tensors [batch, classes], one per peer.
      temperature: T.

    Returns:
      A dict of per-example tensors: "ce_sub<k>", "kl_sub<k>" (KL_k), "loss_sub<k>"
      (L_k) for each peer, "kl" = sum_k KL_k and "total" = sum_k L_k.
    """
    sub_logits = [ops.cast(z, "float32") for z in sub_logits]
    if len(sub_logits) < 2:
        raise ValueError(f"DML needs at least 2 peers; got {len(sub_logits)} logits.")
    terms = {}
    for k, student in enumerate(sub_logits, start=1):
        head = sub_name(k)
        terms[f"ce_{head}"] = cross_entropy(labels, student)
        terms[f"kl_{head}"] = sum(
            softened_kl(teacher, student, temperature)
            for j, teacher in enumerate(sub_logits, start=1)
            if j != k
        )
        terms[f"loss_{head}"] = terms[f"ce_{head}"] + temperature**2 * terms[f"kl_{head}"]
    heads = [sub_name(k) for k in range(1, len(sub_logits) + 1)]
    terms["kl"] = sum(terms[f"kl_{h}"] for h in heads)
    terms["total"] = sum(terms[f"loss_{h}"] for h in heads)
    return terms


@register_method
class DMLModel(MultiHeadModel):
    """Trains n peers with Deep Mutual Learning, updating them in turn or jointly.

    Metrics of a training batch are each peer's from its own sub-step (its logits
    before its update, its CE and KL); "loss" is the sum of the peers' losses and
    "kl" the sum of their KL terms.

    Args:
      network: a functional model mapping images to {"sub1", ..., "subn", "ensemble"}.
      temperature: T of the softened distributions (the reference's is 1).
      update: "alternate" (the reference: one sub-step per peer) or "joint".
      rampup_epochs, top5: as `MultiHeadModel`; DML's loss has no ramp-up weight.
    """

    method_name = "dml"
    summary = "Deep Mutual Learning: peers trained with CE + KL toward each other, in turn."
    options = (
        Option("temperature", 1.0, "T of the softened distributions.", parse=float,
               check=validation.positive),
        Option("update", "alternate",
               "alternate: one step per peer in turn, each after a fresh forward pass "
               "(DML's reference code); joint: one step on the sum of the peers' losses.",
               choices=UPDATES),
    )
    primary_head = ENSEMBLE
    extra_heads = (ENSEMBLE,)
    logged_terms = ("kl",)

    def __init__(self, network, **kwargs):
        super().__init__(network, **kwargs)
        self._peer_trainables = self._variables_by_peer(network.trainable_variables)
        self._peer_statistics = self._variables_by_peer(network.non_trainable_variables)

    def _variables_by_peer(self, variables):
        """{head: the variables of that peer's layers ("sub<k>_...")}; refuses shared ones."""
        by_peer = {h: [v for v in variables if v.path.startswith(f"{h}_")]
                   for h in self.sub_heads}
        unowned = sorted({v.path for v in variables}
                         - {v.path for vs in by_peer.values() for v in vs})
        if unowned:
            raise ValueError(
                f"DML peers share nothing, but the network has variables of no peer: "
                f"{', '.join(unowned[:3])}; build it with DMLModel.build_network."
            )
        return by_peer

    @classmethod
    def build_network(cls, architectures, num_classes, input_shape, **kwargs):
        """The 2-net's network (`EnsembleModel.build_network`): n peers sharing nothing,
        and "ensemble", their mean logits (`ensemble_head`)."""
        return EnsembleModel.build_network(architectures, num_classes, input_shape, **kwargs)

    def loss_terms(self, labels, logits):
        return dml_loss_terms(
            labels, [logits[h] for h in self.sub_heads], temperature=self.temperature
        )

    def train_step(self, data):
        if self.update == "joint":
            return super().train_step(data)
        x, y = self.unpack(data)
        logits, terms = {}, {}
        for head, step_logits, step_terms in self.alternate_steps(x, y):
            logits[head] = step_logits[head]
            for term in ("ce", "kl", "loss"):
                terms[f"{term}_{head}"] = step_terms[f"{term}_{head}"]
        terms["kl"] = sum(terms[f"kl_{h}"] for h in self.sub_heads)
        terms["total"] = sum(terms[f"loss_{h}"] for h in self.sub_heads)
        return self._update_metrics(y, logits, terms)

    def alternate_steps(self, x, y):
        """[(head, logits, terms)] of each peer's sub-step, in order sub1..subn.

        Sub-step k: a forward pass of every peer, then one optimizer step on peer
        k's variables (the others' BatchNorm statistics restored). `iterations`
        is put back after each sub-step, so all use the batch's learning rate,
        and ends one past its start if any sub-step applied (a loss-scaled step
        with non-finite gradients does not).
        """
        iterations = self.optimizer.iterations
        start = tf.identity(iterations)
        advanced = ops.zeros((), iterations.dtype)
        steps = []
        for head in self.sub_heads:
            others = [v for h in self.sub_heads if h != head for v in self._peer_statistics[h]]
            saved = [tf.identity(v) for v in others]
            step_logits, step_terms = self.minimize(x, y, self._peer_trainables[head])
            for variable, value in zip(others, saved):
                variable.assign(value)
            advanced = ops.maximum(advanced, iterations - start)
            iterations.assign(start)
            steps.append((head, step_logits, step_terms))
        iterations.assign(start + advanced)
        return steps
