"""`FFLModel`: trains an FFL network by online mutual knowledge distillation."""

import keras
import tensorflow as tf
from keras import ops

from keras_ffl.callbacks import DistillationRampUp
from keras_ffl.heads import FUSED, sub_name
from keras_ffl.losses import ffl_loss_terms
from keras_ffl.schedules import sigmoid_rampup


@keras.saving.register_keras_serializable(package="keras_ffl")
class FFLModel(keras.Model):
    """Wraps a network from `build_ffl_network` with FFL's training and evaluation steps.

    `train_step` minimises sum_k CE(z_k) + CE(z_f) + w * T^2 * (EKD + FKD) (see
    `keras_ffl.losses.ffl_loss_terms`), averaged over the global batch so that it
    is right under any tf.distribute strategy. `fit` adds a `DistillationRampUp`
    callback unless one is given, which sets w for each epoch.

    Metrics, in training and evaluation: "loss" (the total), "<head>_loss" (the
    head's cross-entropy) and "<head>_acc" for each head ("sub1".."subn", "fused"),
    "ensemble_acc" (the mean of the sub-networks' logits), "sub_mean_acc" (the
    mean of the sub-networks' accuracies, the paper's FFL-S), "ekd" and "fkd";
    "<head>_top5" too with `top5=True`.

    Performance (tools/benchmark.py, CIFAR shapes, batch 128, 2-core CPU): the
    losses and metrics cost under 1% of a step, and `fit` runs within about 1% of
    a bare compiled loop over the same loss. Leave `compile(jit_compile="auto")`
    as it is: Keras turns XLA off on CPU, where it measured 1.8x (ResNet-32) to
    2.4x (FFL ResNet-32) slower than TF's oneDNN kernels, and on on GPU.

    Args:
      network: a functional model mapping images to {"sub1", ..., "fused"} logits.
      temperature: T of the softened distributions.
      rampup_epochs: R of the ramp-up w = exp(-5 (1 - e/R)^2); 0 means w = 1.
      ekd: distil the ensemble into the fused classifier.
      fkd: distil the fused classifier into every sub-network.
      top5: also track top-5 accuracy.
    """

    def __init__(
        self,
        network,
        temperature=3.0,
        rampup_epochs=80,
        ekd=True,
        fkd=True,
        top5=False,
        name="ffl",
        **kwargs,
    ):
        super().__init__(name=name, **kwargs)
        heads = set(network.output.keys()) if isinstance(network.output, dict) else set()
        self.num_subnetworks = sum(1 for h in heads if h.startswith("sub"))
        expected = {sub_name(k) for k in range(1, self.num_subnetworks + 1)} | {FUSED}
        if self.num_subnetworks < 2 or heads != expected:
            raise ValueError(
                "FFLModel needs a network whose outputs are a dict with keys sub1..subn "
                f"(n >= 2) and 'fused', as build_ffl_network makes; got {sorted(heads)}."
            )
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0; got {temperature}.")
        self.network = network
        self.temperature = float(temperature)
        self.rampup_epochs = int(rampup_epochs)
        self.ekd = bool(ekd)
        self.fkd = bool(fkd)
        self.top5 = bool(top5)
        self.sub_heads = [sub_name(k) for k in range(1, self.num_subnetworks + 1)]
        self.heads = self.sub_heads + [FUSED]
        self.distill_weight = self.add_weight(
            shape=(),
            initializer=keras.initializers.Constant(sigmoid_rampup(0, self.rampup_epochs)),
            trainable=False,
            name="distill_weight",
        )
        self._build_trackers()
        # The functional network is built; marking the wrapper built lets Keras
        # build the optimizer before restoring its state from a saved model.
        self.built = True

    def _build_trackers(self):
        mean, accuracy = keras.metrics.Mean, keras.metrics.SparseCategoricalAccuracy
        self._trackers = {"loss": mean(name="loss")}
        for head in self.heads:
            self._trackers[f"{head}_loss"] = mean(name=f"{head}_loss")
            self._trackers[f"{head}_acc"] = accuracy(name=f"{head}_acc")
            if self.top5:
                self._trackers[f"{head}_top5"] = keras.metrics.SparseTopKCategoricalAccuracy(
                    k=5, name=f"{head}_top5"
                )
        self._trackers["ensemble_acc"] = accuracy(name="ensemble_acc")
        self._trackers["ekd"] = mean(name="ekd")
        self._trackers["fkd"] = mean(name="fkd")

    @property
    def metrics(self):
        return list(self._trackers.values())

    def call(self, inputs, training=None):
        return self.network(inputs, training=training)

    def _forward(self, data, training):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        if sample_weight is not None:
            raise ValueError("FFLModel does not support sample weights.")
        logits = self.network(x, training=training)
        terms = ffl_loss_terms(
            y,
            [logits[h] for h in self.sub_heads],
            logits[FUSED],
            temperature=self.temperature,
            distill_weight=self.distill_weight,
            ekd=self.ekd,
            fkd=self.fkd,
        )
        return y, logits, terms

    def _update_metrics(self, y, logits, terms):
        trackers = self._trackers
        trackers["loss"].update_state(terms["total"])
        trackers["ekd"].update_state(terms["ekd"])
        trackers["fkd"].update_state(terms["fkd"])
        for head in self.heads:
            ce_key = "ce_fused" if head == FUSED else f"ce_{head}"
            trackers[f"{head}_loss"].update_state(terms[ce_key])
            trackers[f"{head}_acc"].update_state(y, logits[head])
            if self.top5:
                trackers[f"{head}_top5"].update_state(y, logits[head])
        ensemble = sum(logits[h] for h in self.sub_heads) / self.num_subnetworks
        trackers["ensemble_acc"].update_state(y, ensemble)
        return self.get_metrics_result()

    def get_metrics_result(self):
        """The trackers' results and "sub_mean_acc", the mean of the sub-networks' accuracies.

        Keras uses this in cross-replica context at the end of an epoch, so the
        derived value is computed from aggregated results under any strategy.
        """
        results = super().get_metrics_result()
        results["sub_mean_acc"] = ops.mean(
            ops.stack([results[f"{h}_acc"] for h in self.sub_heads])
        )
        return results

    def train_step(self, data):
        with tf.GradientTape() as tape:
            y, logits, terms = self._forward(data, training=True)
            # Mean over the global batch: the per-replica sum divided by the global
            # batch size, so summing gradients over replicas gives the global mean.
            loss = tf.nn.compute_average_loss(terms["total"])
            scaled_loss = self.optimizer.scale_loss(loss)
        variables = self.trainable_variables
        gradients = tape.gradient(scaled_loss, variables)
        self.optimizer.apply(gradients, variables)
        return self._update_metrics(y, logits, terms)

    def test_step(self, data):
        y, logits, terms = self._forward(data, training=False)
        return self._update_metrics(y, logits, terms)

    def fit(self, *args, callbacks=None, **kwargs):
        """`keras.Model.fit`, with a `DistillationRampUp` callback unless one is given."""
        callbacks = list(callbacks or [])
        if not any(isinstance(c, DistillationRampUp) for c in callbacks):
            callbacks.insert(0, DistillationRampUp())
        return super().fit(*args, callbacks=callbacks, **kwargs)

    def get_config(self):
        return {
            "network": keras.saving.serialize_keras_object(self.network),
            "temperature": self.temperature,
            "rampup_epochs": self.rampup_epochs,
            "ekd": self.ekd,
            "fkd": self.fkd,
            "top5": self.top5,
            "name": self.name,
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        config["network"] = keras.saving.deserialize_keras_object(
            config["network"], custom_objects=custom_objects
        )
        return cls(**config)
