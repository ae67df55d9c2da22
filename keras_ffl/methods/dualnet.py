"""DualNet (Hou et al., ICCV 2017), as the FFL paper re-implemented it for Table I.

Two sub-networks, nothing shared, whose last feature maps are averaged (no
fusion module) into a fused classifier; each sub-network keeps its own
auxiliary classifier. Loss CE(z_f) + lambda * (CE(z_1) + CE(z_2)), lambda = 0.3;
the reported classifier is Z_avg = lambda z_1 + lambda z_2 + z_f (FFL paper
App. A, eq. 7). Training: an iterative stage in which the two extractors are
updated alternately, the other one frozen, for 256 epochs, then joint training
of everything (App. A; Table VII: 307 epochs, lr 0.1 -> 0.01 at 256, i.e.
`--epochs=307 --lr_milestones=256`).

Reference code, ustc-vim/dualnet, dualnet-dataset/pklcifar100/model/v4_ninnet/
res_e1/res_e1_train_val.prototxt (the CIFAR-100 iterative-training net):
- lines 39-340 and 342-643: the two extractors, separate layers with separate
  parameters ("coarse" and "fine"): nothing is shared.
- lines 646-657: the fusion, Eltwise SUM with coefficients 0.5, 0.5: the average.
- lines 659-685 and 713-719: the fused classifier on the average, loss weight 1.
- lines 722-748 and 776-783: the trained extractor's auxiliary classifier, loss
  weight 0.3. The frozen extractor's auxiliary classifier is not in the
  training net, so it is not updated either.
- lines 40-65 (and every "coarse" layer): the frozen extractor's parameters have
  lr_mult 0 and decay_mult 0: no update and no weight decay. Its dropout layers
  (lines 149-157, 267-275) have no phase rule, so it still runs in training mode.
- lines 343-368 (and every "fine" layer): the trained extractor, lr_mult 1.
res_e1_solver.prototxt lines 4-11: lr 0.1, x0.1 after 100000 of 120000
iterations of batch 128, i.e. 256 and 307 CIFAR epochs: the schedule of Table VII.

The reference alternates whole training runs (one extractor frozen per run);
the FFL paper alternates within its 256 iterative epochs without saying how
often. Here the trained extractor switches every `alternate_epochs` epochs (1
by default), sub-network 1 first; in each half its extractor, its auxiliary
classifier and the fused classifier are updated, the other sub-network (its
extractor and auxiliary classifier) is left exactly as it was, momentum
included. As in the reference, the frozen extractor runs in training mode: its
BatchNorm layers normalise with the batch's statistics and keep their moving
averages tracking them, which are estimates, not parameters (from scratch its
averages are still the initial ones, and in inference mode it would feed
unnormalised features to the average). The reference's learning-rate
multipliers (0.01 on the fused and 0.1 on the auxiliary classifier) serve its
fine-tuning from a pre-trained network; the FFL paper trains from scratch at one
rate, as here. The reference's fused classifier gets the normal weight decay.
"""

import keras
from keras import ops

from keras_ffl.heads import DUALNET_AVG, FUSED, classifier, features_layer, logits_layer, sub_name
from keras_ffl.losses import cross_entropy
from keras_ffl.methods.base import MultiHeadModel, Option, register_method
from keras_ffl.network import build_subnetworks

#: lambda of the loss and of Z_avg (FFL paper eq. 7; the reference's loss_weight 0.3).
AUX_WEIGHT = 0.3
#: Epochs of the iterative stage (FFL paper App. A).
ITERATIVE_EPOCHS = 256
#: The joint stage's index in `DualNetModel.stage`; 0 and 1 train sub-network 1 or 2 alone.
JOINT = 2


def dualnet_loss_terms(labels, sub_logits, fused_logits, aux_weight=AUX_WEIGHT):
    """Per-example terms of DualNet's objective.

    total = CE(y, z_f) + aux_weight * sum_k CE(y, z_k).

    Args:
      labels: integer labels, shape [batch].
      sub_logits: the two auxiliary classifiers' logits [batch, classes].
      fused_logits: the fused classifier's logits [batch, classes].
      aux_weight: lambda, the weight of each auxiliary classifier's CE.

    Returns:
      A dict of per-example tensors: "total", "ce_fused" and "ce_sub{k}".
    """
    terms = {
        f"ce_{sub_name(k)}": cross_entropy(labels, ops.cast(z, "float32"))
        for k, z in enumerate(sub_logits, start=1)
    }
    terms[f"ce_{FUSED}"] = cross_entropy(labels, ops.cast(fused_logits, "float32"))
    terms["total"] = terms[f"ce_{FUSED}"] + aux_weight * sum(
        terms[f"ce_{sub_name(k)}"] for k in range(1, len(sub_logits) + 1)
    )
    return terms


@keras.saving.register_keras_serializable(package="keras_ffl")
class WeightedLogitsSum(keras.layers.Layer):
    """DualNet's average classifier: aux_weight * (z_1 + ... + z_n) + z_f (FFL eq. 7).

    Called on [z_1, ..., z_n, z_f]; computes in float32, like every head's logits.
    """

    def __init__(self, aux_weight=AUX_WEIGHT, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.aux_weight = float(aux_weight)

    def call(self, inputs):
        *sub_logits, fused_logits = inputs
        return self.aux_weight * sum(sub_logits) + fused_logits

    def compute_output_shape(self, input_shape):
        return input_shape[-1]

    def get_config(self):
        return {**super().get_config(), "aux_weight": self.aux_weight}


def build_dualnet_network(
    architectures, num_classes, input_shape, *, branches=2, aux_weight=AUX_WEIGHT, sync_bn=False,
):
    """DualNet's network: two independent sub-networks with auxiliary classifiers, the
    average of their last feature maps (layer "fused_features"), a fused classifier
    on it and the average classifier Z_avg.

    `architectures` is one name (two independent copies of it) or a list of two
    whose last feature maps have one shape.

    Returns:
      A functional `keras.Model` mapping images to {"sub1", "sub2", "fused", "avg"} logits.
    """
    if isinstance(architectures, (list, tuple)) and len(architectures) > 1:
        if len(architectures) != 2:
            raise ValueError(
                f"DualNet trains exactly 2 sub-networks; architectures names "
                f"{len(architectures)} ({list(architectures)}). Give one architecture or two; "
                "for more sub-networks use the ffl or ensemble method."
            )
    elif branches != 2:
        raise ValueError(
            f"DualNet trains exactly 2 sub-networks; got branches={branches}. Leave branches "
            "at 2; for more sub-networks use the ffl or ensemble method."
        )
    if aux_weight < 0:
        raise ValueError(f"aux_weight must be >= 0; got {aux_weight}.")
    subs = build_subnetworks(architectures, num_classes, input_shape, branches=2,
                             share_trunk=False, sync_bn=sync_bn)
    shapes = [tuple(f.shape[1:]) for f in subs.features]
    if shapes[0] != shapes[1]:
        names = [a.name for a in subs.architectures]
        raise ValueError(
            f"DualNet averages the two sub-networks' last feature maps, so they need one "
            f"shape; architectures {names} give {shapes}. Choose two architectures with "
            "equal feature maps, or the ffl method, whose fusion module takes any."
        )
    averaged = keras.layers.Average(name=features_layer(FUSED))(subs.features)
    outputs = dict(subs.logits)
    outputs[FUSED] = classifier(averaged, num_classes, FUSED)
    outputs[DUALNET_AVG] = WeightedLogitsSum(aux_weight, name=logits_layer(DUALNET_AVG))(
        [*subs.logits.values(), outputs[FUSED]]
    )
    return keras.Model(subs.inputs, outputs, name="dualnet_network")


class StageSwitcher(keras.callbacks.Callback):
    """Puts the model in the stage of each epoch as it begins, from Keras's epoch index,
    so that a resumed run continues in the right stage."""

    def on_epoch_begin(self, epoch, logs=None):
        self.model.use_stage(self.model.stage(epoch))


@register_method
class DualNetModel(MultiHeadModel):
    """Trains a network from `build_dualnet_network`: iterative stage, then joint training.

    `fit` puts the model in the stage of each epoch (see `stage`, `use_stage`) from
    Keras's epoch index; `train_step` updates that stage's variables with one
    optimizer step per batch.

    Args:
      network: a functional model mapping images to {"sub1", "sub2", "fused", "avg"} logits.
      iterative_epochs: epochs of the iterative stage; joint training follows.
      alternate_epochs: epochs each extractor is trained before the other takes over.
    """

    method_name = "dualnet"
    summary = ("DualNet: averaged feature maps, fused and auxiliary classifiers, "
               "iterative then joint training.")
    options = (
        Option("aux_weight", AUX_WEIGHT,
               "lambda: weight of each auxiliary classifier's CE and of its logits in the "
               "reported avg head.", parse=float, network=True),
        Option("iterative_epochs", ITERATIVE_EPOCHS,
               "Epochs of DualNet's iterative stage (one extractor frozen at a time), before "
               "joint training.", parse=int),
        Option("alternate_epochs", 1,
               "Epochs DualNet trains one extractor before switching to the other.", parse=int),
    )
    primary_head = DUALNET_AVG
    extra_heads = (FUSED, DUALNET_AVG)
    fixed_subnetworks = 2

    def __init__(self, network, iterative_epochs=ITERATIVE_EPOCHS, alternate_epochs=1,
                 rampup_epochs=0, top5=False, name=None, **kwargs):
        if iterative_epochs < 0:
            raise ValueError(f"iterative_epochs must be >= 0; got {iterative_epochs}.")
        if alternate_epochs < 1:
            raise ValueError(f"alternate_epochs must be >= 1; got {alternate_epochs}.")
        super().__init__(network, rampup_epochs=rampup_epochs, top5=top5, name=name,
                         iterative_epochs=iterative_epochs, alternate_epochs=alternate_epochs,
                         **kwargs)
        self.aux_weight = network.get_layer(logits_layer(DUALNET_AVG)).aux_weight
        self._stage = self.stage(0)
        self._stage_functions = {}

    @classmethod
    def build_network(cls, architectures, num_classes, input_shape, *, branches=2,
                      shared_stages=None, sync_bn=False, aux_weight=AUX_WEIGHT):
        if shared_stages is not None:
            raise ValueError(
                "DualNet's two sub-networks share nothing; leave shared_stages None."
            )
        return build_dualnet_network(architectures, num_classes, input_shape,
                                     branches=branches, aux_weight=aux_weight, sync_bn=sync_bn)

    def loss_terms(self, labels, logits):
        return dualnet_loss_terms(
            labels, [logits[h] for h in self.sub_heads], logits[FUSED], self.aux_weight
        )

    def stage(self, epoch):
        """The stage of (0-based) `epoch`: 0 or 1 while sub-network 1 or 2 is trained
        alone (the iterative stage), `JOINT` after."""
        if epoch >= self.iterative_epochs:
            return JOINT
        return (epoch // self.alternate_epochs) % 2

    def use_stage(self, stage):
        """Makes `train_step` update `stage`'s variables.

        Each stage has its own train function, traced on first use and kept while
        the model keeps its optimizer: the stage is fixed in its graph, so a step
        differentiates with respect to the stage's variables only (no backward
        pass through a frozen extractor) with no control flow around the
        optimizer's cross-replica update, which tf.distribute does not allow.
        """
        if stage == self._stage:
            return
        if self.train_function is not None:
            self._stage_functions[self._stage] = (self.optimizer, self.train_function)
        self._stage = stage
        optimizer, function = self._stage_functions.get(stage, (None, None))
        self.train_function = function if optimizer is self.optimizer else None
        self.make_train_function()

    def stage_variables(self, stage):
        """The trainable variables updated in `stage`: in the iterative stage the trained
        sub-network's (extractor and auxiliary classifier) and the fused classifier's."""
        if stage == JOINT:
            return list(self.trainable_variables)
        prefixes = (f"{sub_name(stage + 1)}_", f"{logits_layer(FUSED)}/")
        return [v for v in self.trainable_variables if v.path.startswith(prefixes)]

    def train_step(self, data):
        x, y = self.unpack(data)
        # One optimizer step per batch, on the current stage's variables.
        logits, terms = self.minimize(x, y, self.stage_variables(self._stage))
        return self._update_metrics(y, logits, terms)

    def fit(self, *args, callbacks=None, **kwargs):
        """`MultiHeadModel.fit`, with a `StageSwitcher` unless one is given."""
        callbacks = list(callbacks or [])
        if not any(isinstance(c, StageSwitcher) for c in callbacks):
            callbacks.insert(0, StageSwitcher())
        return super().fit(*args, callbacks=callbacks, **kwargs)
