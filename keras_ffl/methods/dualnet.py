"""DualNet (Hou et al., ICCV 2017), as the FFL paper re-implemented it for Table I.

Two sub-networks, nothing shared, whose last feature maps are averaged (no
fusion module) into a fused classifier; each sub-network keeps its own
auxiliary classifier. Loss CE(z_f) + lambda * (CE(z_1) + CE(z_2)), lambda = 0.3;
the reported classifier is Z_avg = lambda z_1 + lambda z_2 + z_f (FFL paper
App. A, eq. 7). Training: an iterative stage in which the two extractors are
updated alternately, the other one frozen, for 256 epochs, then joint training
of everything (App. A; Table VII: 307 epochs, lr 0.1 -> 0.01 at 256, i.e.
`--epochs=307 --lr_milestones=256`). The schedule follows the iterative stage
(`DualNetModel.adapt_recipe`): the learning rate drops once, when joint training
starts, and joint training lasts 51/256 of the iterative stage, as in Table VII.

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

import functools
import math

import keras
import tensorflow as tf
from keras import ops

from keras_ffl import validation
from keras_ffl.heads import FUSED, features_layer, logits_layer, sub_name
from keras_ffl.losses import cross_entropy
from keras_ffl.methods.base import MultiHeadModel, Option, register_method
from keras_ffl.models.layers import classifier
from keras_ffl.network import build_subnetworks
from keras_ffl.validation import ArgumentError

#: DualNet's reported head, the average classifier Z_avg = 0.3 z_1 + 0.3 z_2 + z_f.
AVG = "avg"
#: lambda of the loss and of Z_avg (FFL paper eq. 7; the reference's loss_weight 0.3).
AUX_WEIGHT = 0.3
#: Epochs of the iterative stage, and of the whole run (FFL paper App. A, Table VII).
ITERATIVE_EPOCHS = 256
EPOCHS = 307
#: The joint stage's index in `DualNetModel.stage`; 0 and 1 train sub-network 1 or 2 alone.
JOINT = 2
STAGES = (0, 1, JOINT)


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
    outputs[AVG] = WeightedLogitsSum(aux_weight, name=logits_layer(AVG))(
        [*subs.logits.values(), outputs[FUSED]]
    )
    return keras.Model(subs.inputs, outputs, name="dualnet_network")


class StageSwitcher(keras.callbacks.Callback):
    """Puts the model in the stage of each epoch as it begins, from Keras's epoch index,
    so that a resumed run continues in the right stage."""

    def on_epoch_begin(self, epoch, logs=None):
        self.model.use_stage(self.model.stage(epoch))


class _Untracked:
    """Holds a variable out of Keras's and TensorFlow's tracking: the stage is set
    from the epoch at every epoch's start, so checkpoints need not (and those of
    earlier versions do not) hold it."""

    def __init__(self, variable):
        self.variable = variable


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
               "reported avg head.", parse=float, check=validation.non_negative, network=True),
        Option("iterative_epochs", ITERATIVE_EPOCHS,
               "Epochs of DualNet's iterative stage (one extractor frozen at a time), before "
               "joint training; the learning rate drops when it ends.",
               check=validation.epochs(0)),
        Option("alternate_epochs", 1,
               "Epochs DualNet trains one extractor before switching to the other.",
               check=validation.epochs(1)),
    )
    primary_head = AVG
    extra_heads = (FUSED, AVG)
    fixed_subnetworks = 2

    def __init__(self, network, **kwargs):
        super().__init__(network, **kwargs)
        self.aux_weight = network.get_layer(logits_layer(AVG)).aux_weight
        self._stage = _Untracked(
            tf.Variable(self.stage(0), dtype=tf.int32, trainable=False, name="stage")
        )
        index = {id(v): i for i, v in enumerate(self.trainable_variables)}
        self._stage_indices = {
            stage: [index[id(v)] for v in self.stage_variables(stage)] for stage in STAGES
        }

    @classmethod
    def adapt_recipe(cls, values, options, given):
        """Table VII's schedule for the iterative stage: the learning rate drops once,
        when joint training starts, and joint training lasts 51/256 of the iterative
        stage (307 epochs for 256).

        Epochs and milestones the user left to the recipe follow `iterative_epochs`;
        given milestones that drop the rate inside the iterative stage are refused.
        """
        iterative = options["iterative_epochs"]
        if not iterative:
            return values
        values = dict(values)
        if "lr_milestones" in given:
            if any(0 < m < min(iterative, values["epochs"]) for m in values["lr_milestones"]):
                milestones = ",".join(map(str, values["lr_milestones"]))
                raise ArgumentError(
                    "lr_milestones",
                    f"{{arg}}={milestones} drops the learning rate inside DualNet's iterative "
                    f"stage ({{arg:iterative_epochs}}={iterative}), which trains at one rate — "
                    f"pass {{arg}}={iterative} (Table VII: the drop starts joint training), "
                    "or leave it out",
                )
        else:
            values["lr_milestones"] = (iterative,)
        if "epochs" not in given:
            joint = (EPOCHS - ITERATIVE_EPOCHS) / ITERATIVE_EPOCHS
            values["epochs"] = iterative + math.ceil(iterative * joint)
        return values

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
        """Makes `train_step` update `stage`'s variables."""
        self._stage.variable.assign(stage)

    def stage_variables(self, stage):
        """The trainable variables updated in `stage`: in the iterative stage the trained
        sub-network's (extractor and auxiliary classifier) and the fused classifier's."""
        if stage == JOINT:
            return list(self.trainable_variables)
        prefixes = (f"{sub_name(stage + 1)}_", f"{logits_layer(FUSED)}/")
        return [v for v in self.trainable_variables if v.path.startswith(prefixes)]

    def train_step(self, data):
        """One optimizer step per batch on the current stage's variables.

        The gradient is taken with respect to every trainable variable, outside the
        switch on the stage (a gradient taken inside a branch is not bitwise the
        same); the optimizer steps on the stage's variables alone, so a frozen
        extractor keeps its weights and momentum, and `iterations` counts batches.
        """
        x, y = self.unpack(data)
        with tf.GradientTape() as tape:
            logits, terms = self.forward(x, y, training=True)
            loss = self.scaled_loss(terms)
        gradients = tape.gradient(loss, self.trainable_variables)
        self.build_optimizer()
        self._apply_in_stage(gradients)
        return self._update_metrics(y, logits, terms)

    def _apply_in_stage(self, gradients):
        """Applies `gradients` (one per trainable variable) to the current stage's variables."""
        variables = self.trainable_variables

        def apply(stage, gradients):
            # In the iterative stage the frozen sub-network's gradients are left unused.
            indices = self._stage_indices[stage]
            self.optimizer.apply([gradients[i] for i in indices], [variables[i] for i in indices])
            return tf.constant(stage)

        if tf.__internal__.distribute.strategy_supports_no_merge_call():
            tf.switch_case(
                self._stage.variable.value(),
                [functools.partial(apply, s, gradients) for s in STAGES],
            )
            return

        def cross_replica(strategy, gradients):
            # The optimizer's cross-replica update calls merge_call, which tf.distribute
            # refuses inside control flow in a replica context; so the switch runs in
            # the cross-replica context, as keras.optimizers.LossScaleOptimizer's does.
            def branch(stage):
                strategy.extended.call_for_each_replica(apply, args=(stage, gradients))
                return tf.constant(stage)

            tf.switch_case(
                self._stage.variable.value(), [functools.partial(branch, s) for s in STAGES]
            )

        tf.distribute.get_replica_context().merge_call(cross_replica, args=(gradients,))

    def fit(self, *args, callbacks=None, **kwargs):
        """`MultiHeadModel.fit`, with a `StageSwitcher` unless one is given."""
        callbacks = list(callbacks or [])
        if not any(isinstance(c, StageSwitcher) for c in callbacks):
            callbacks.insert(0, StageSwitcher())
        return super().fit(*args, callbacks=callbacks, **kwargs)
