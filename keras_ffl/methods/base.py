"""The shared multi-head model every method is a subclass of, and the registry of methods.

A method is one module in `keras_ffl.methods` holding one `MultiHeadModel`
subclass decorated with `@register_method`: it declares its options, builds its
network from the shared pieces (`keras_ffl.network`, `keras_ffl.heads`,
`FusionBlock`) and gives its per-example loss terms, which it computes with pure
functions of logits kept in the same module. The base class owns what all
methods share: the custom `train_step`/`test_step` with the loss averaged over
the global batch (right under any tf.distribute strategy), per-head metrics,
the ensemble metric, the ramp-up weight and serialisation.
"""

import dataclasses
from typing import Any, Callable, ClassVar

import keras
import tensorflow as tf
from keras import ops

from keras_ffl.callbacks import DistillationRampUp
from keras_ffl.heads import ENSEMBLE, SUB_MEAN, network_heads, sub_heads, sub_name
from keras_ffl.losses import cross_entropy
from keras_ffl.optimizer import paper_sgd
from keras_ffl.schedules import sigmoid_rampup
from keras_ffl.validation import ArgumentError

_METHODS = {}


@dataclasses.dataclass(frozen=True)
class Option:
    """One option of a method: a keyword argument of its model or network builder.

    The training command offers it as the flag `--<name>`. The option alone says
    what a value may be: `parse` turns the flag's text (or a config value) into
    the value, which must be one of `choices` if given and pass `check(name,
    value)` (e.g. `keras_ffl.validation.positive`); `network` options are
    arguments of `build_network`, the others of the model's constructor.
    """

    name: str
    default: Any
    help: str
    choices: tuple | None = None
    parse: Callable | None = None
    check: Callable | None = None
    network: bool = False

    def value(self, raw):
        """`raw` parsed and checked; raises `ArgumentError` naming the option."""
        try:
            value = self.parse(raw) if self.parse else raw
        except (TypeError, ValueError):
            raise ArgumentError(
                self.name, f"{{arg}}={raw!r} cannot be read — pass a value such as {self.default}"
            ) from None
        if self.choices is not None and value not in self.choices:
            raise ArgumentError(
                self.name,
                f"{{arg}} must be one of {', '.join(map(str, self.choices))}; got {raw!r}.",
            )
        if self.check is not None:
            self.check(self.name, value)
        return value


def register_method(cls):
    """Class decorator: makes `cls` a method found by `get_method(cls.method_name)`.

    It also registers the class with Keras's serialisation, so checkpoints load.
    """
    if cls.method_name in _METHODS:
        raise ValueError(f"A method named {cls.method_name!r} is already registered.")
    _METHODS[cls.method_name] = keras.saving.register_keras_serializable(package="keras_ffl")(
        cls
    )
    return cls


def get_method(name):
    """The `MultiHeadModel` subclass registered as `name`, e.g. "ffl" or "dml"."""
    if name not in _METHODS:
        raise ValueError(f"Unknown method {name!r}; known methods: {', '.join(method_names())}.")
    return _METHODS[name]


def method_names():
    """The registered methods' names, sorted."""
    return sorted(_METHODS)


class MultiHeadModel(keras.Model):
    """A network with several heads, trained with a method's loss; subclass per method.

    Subclasses set the class attributes below and implement `build_network`
    and `loss_terms`; those whose update is not one joint gradient step (DML's
    alternating peers, DualNet's iterative stage) override `train_step`.

    Metrics, in training and evaluation: "loss" (the total), "<head>_loss" (the
    head's cross-entropy) and "<head>_acc" for every head, "ensemble_acc" (the
    mean of the sub-networks' logits) and "sub_mean_acc" (the mean of their
    accuracies) with two or more sub-networks, each of `logged_terms`, and
    "<head>_top5" with `top5=True`.

    Args:
      network: a functional model mapping images to a dict of logits per head,
        as the method's `build_network` makes it.
      rampup_epochs: R of the distillation weight w = exp(-5 (1 - e/R)^2); 0: w = 1.
        Default: the method's `default_rampup_epochs`.
      top5: also track top-5 accuracy.
      **options: the method's options (see `options`); one left out takes its default.
    """

    #: Name in the registry and of `--method`.
    method_name: ClassVar[str]
    #: One line on what the method is, for `--help`.
    summary: ClassVar[str] = ""
    #: The method's options.
    options: ClassVar[tuple[Option, ...]] = ()
    #: The head whose test accuracy selects best.keras.
    primary_head: ClassVar[str]
    #: Heads besides the sub-networks, in the network's outputs.
    extra_heads: ClassVar[tuple[str, ...]] = ()
    #: Number of sub-networks the method takes (None: any number from 2).
    fixed_subnetworks: ClassVar[int | None] = None
    #: Whether one architecture's low-level stages are shared by the branches (case 1).
    shares_trunk: ClassVar[bool] = False
    #: Per-example terms of `loss_terms` tracked as metrics besides the CEs, e.g. "ekd".
    logged_terms: ClassVar[tuple[str, ...]] = ()
    #: Layers whose variables get the recipe's second, lower weight decay.
    low_decay_layers: ClassVar[tuple[str, ...]] = ()
    #: R of the distillation weight's ramp-up when none is given (0: w = 1 throughout).
    default_rampup_epochs: ClassVar[int] = 0

    def __init__(self, network, rampup_epochs=None, top5=False, name=None, **options):
        super().__init__(name=name or self.method_name, **self._keras_kwargs(options))
        self.network = network
        self.heads = network_heads(network)
        self.sub_heads = sub_heads(self.heads)
        self.num_subnetworks = len(self.sub_heads)
        self._check_heads()
        for option in self.options:
            if not option.network:
                setattr(self, option.name, option.value(options.get(option.name, option.default)))
        if rampup_epochs is None:
            rampup_epochs = self.default_rampup_epochs
        if rampup_epochs < 0:
            raise ValueError(f"rampup_epochs must be >= 0; got {rampup_epochs}.")
        self.rampup_epochs = int(rampup_epochs)
        self.top5 = bool(top5)
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

    @classmethod
    def _keras_kwargs(cls, options):
        """Splits Keras's own constructor arguments (e.g. "trainable") from the options."""
        names = {o.name for o in cls.options}
        unknown = sorted(k for k in options if k not in names and k not in ("trainable", "dtype"))
        if unknown:
            known = ", ".join(o.name for o in cls.options) or "none"
            raise ValueError(
                f"{cls.__name__} has no option {', '.join(unknown)}; its options: {known}."
            )
        return {k: v for k, v in options.items() if k not in names}

    def _check_heads(self):
        expected = self.heads_of(self.resolve_subnetworks(max(self.num_subnetworks, 2)))
        if sorted(self.heads) != sorted(expected):
            raise ValueError(
                f"{type(self).__name__} needs a network with the heads {expected} (as its "
                f"build_network makes); got {sorted(self.heads)}."
            )

    # What a method defines ---------------------------------------------------------

    @classmethod
    def build_network(
        cls, architectures, num_classes, input_shape, *, branches=2, shared_stages=None,
        sync_bn=False, **network_options,
    ):
        """The method's functional network: images -> {head: logits}."""
        raise NotImplementedError

    def loss_terms(self, labels, logits):
        """Per-example loss terms: "total", "ce_<head>" for every head trained with CE,
        and each of `logged_terms`."""
        raise NotImplementedError

    # Construction -------------------------------------------------------------------

    @classmethod
    def split_options(cls, options):
        """(network options, model options) with every option's default filled in."""
        network, model = {}, {}
        names = {o.name for o in cls.options}
        unknown = sorted(set(options) - names)
        if unknown:
            known = ", ".join(o.name for o in cls.options) or "none"
            raise ValueError(
                f"Method {cls.method_name!r} has no option {', '.join(unknown)}; "
                f"its options: {known}."
            )
        for option in cls.options:
            value = option.value(options.get(option.name, option.default))
            (network if option.network else model)[option.name] = value
        return network, model

    @classmethod
    def resolve_subnetworks(cls, branches=None):
        """The number of sub-networks the method trains: its `fixed_subnetworks` if it
        has a fixed number, else `branches`, else 2 (the paper's)."""
        if cls.fixed_subnetworks is not None:
            return cls.fixed_subnetworks
        return 2 if branches is None else branches

    @classmethod
    def adapt_recipe(cls, values, options, given):
        """The recipe's `values` adjusted to the method's `options`; `given` names the
        settings the user chose. The default keeps them: a method whose schedule
        depends on its options adapts the values the user left to the recipe, and
        raises `ArgumentError` for a given value that contradicts them."""
        return values

    @classmethod
    def create(
        cls, architectures, num_classes, input_shape, *, branches=None, shared_stages=None,
        sync_bn=False, **kwargs,
    ):
        """Builds the method's network and wraps it in the method's model.

        `kwargs` are the method's options and the model's own arguments
        (`rampup_epochs`, `top5`, `name`); whatever is left out, `branches`
        included (see `resolve_subnetworks`), takes the method's default.
        """
        names = {o.name for o in cls.options}
        network_options, model_options = cls.split_options(
            {k: v for k, v in kwargs.items() if k in names}
        )
        network = cls.build_network(
            architectures, num_classes, input_shape,
            branches=cls.resolve_subnetworks() if branches is None else branches,
            shared_stages=shared_stages, sync_bn=sync_bn, **network_options,
        )
        model_kwargs = {k: v for k, v in kwargs.items() if k not in names}
        return cls(network, **model_kwargs, **model_options)

    def make_optimizer(self, learning_rate, weight_decay=1e-4, low_weight_decay=1e-5,
                       momentum=0.9):
        """The paper's optimiser for this method (`keras_ffl.optimizer.paper_sgd`), with
        `low_weight_decay` on its `low_decay_layers`."""
        return paper_sgd(
            learning_rate, weight_decay, self.low_decay_layers, low_weight_decay, momentum
        )

    # Metrics ---------------------------------------------------------------------------

    @classmethod
    def heads_of(cls, num_subnetworks):
        """The heads of the method's network with `num_subnetworks` sub-networks."""
        return [sub_name(k) for k in range(1, num_subnetworks + 1)] + list(cls.extra_heads)

    @classmethod
    def metric_heads_of(cls, num_subnetworks):
        """Heads with accuracy metrics: every head, and "ensemble" with 2+ sub-networks."""
        heads = cls.heads_of(num_subnetworks)
        if num_subnetworks >= 2 and ENSEMBLE not in heads:
            heads.append(ENSEMBLE)
        return heads

    @property
    def metric_heads(self):
        return self.metric_heads_of(self.num_subnetworks)

    def _build_trackers(self):
        mean, accuracy = keras.metrics.Mean, keras.metrics.SparseCategoricalAccuracy
        self._trackers = {"loss": mean(name="loss")}
        for head in self.heads:
            self._trackers[f"{head}_loss"] = mean(name=f"{head}_loss")
        for head in self.metric_heads:
            self._trackers[f"{head}_acc"] = accuracy(name=f"{head}_acc")
            if self.top5:
                self._trackers[f"{head}_top5"] = keras.metrics.SparseTopKCategoricalAccuracy(
                    k=5, name=f"{head}_top5"
                )
        for term in self.logged_terms:
            self._trackers[term] = mean(name=term)

    @property
    def metrics(self):
        return list(self._trackers.values())

    def _update_metrics(self, y, logits, terms):
        trackers = self._trackers
        trackers["loss"].update_state(terms["total"])
        for term in self.logged_terms:
            trackers[term].update_state(terms[term])
        logits = dict(logits)
        if ENSEMBLE not in logits and self.num_subnetworks >= 2:
            logits[ENSEMBLE] = sum(logits[h] for h in self.sub_heads) / self.num_subnetworks
        for head in self.heads:
            ce = terms.get(f"ce_{head}")
            if ce is None:
                ce = cross_entropy(y, ops.cast(logits[head], "float32"))
            trackers[f"{head}_loss"].update_state(ce)
        for head in self.metric_heads:
            trackers[f"{head}_acc"].update_state(y, logits[head])
            if self.top5:
                trackers[f"{head}_top5"].update_state(y, logits[head])
        return self.get_metrics_result()

    def get_metrics_result(self):
        """The trackers' results and "sub_mean_acc", the mean of the sub-networks' accuracies.

        Keras uses this in cross-replica context at the end of an epoch, so the
        derived value is computed from aggregated results under any strategy.
        """
        results = super().get_metrics_result()
        if self.num_subnetworks >= 2:
            results[f"{SUB_MEAN}_acc"] = ops.mean(
                ops.stack([results[f"{h}_acc"] for h in self.sub_heads])
            )
        return results

    # Steps -----------------------------------------------------------------------------

    def call(self, inputs, training=None):
        return self.network(inputs, training=training)

    def unpack(self, data):
        """(images, labels) of a batch; sample weights are refused."""
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        if sample_weight is not None:
            raise ValueError(f"{type(self).__name__} does not support sample weights.")
        return x, y

    def forward(self, x, y, training):
        """(logits, per-example loss terms) of a batch."""
        logits = self.network(x, training=training)
        return logits, self.loss_terms(y, logits)

    def scaled_loss(self, terms):
        """The loss to differentiate: the global-batch mean of `terms["total"]`, scaled
        by the optimizer (a loss-scale optimizer's factor under mixed float16)."""
        # Mean over the global batch: the per-replica sum divided by the global
        # batch size, so summing gradients over replicas gives the global mean.
        return self.optimizer.scale_loss(tf.nn.compute_average_loss(terms["total"]))

    def build_optimizer(self):
        """Builds the optimizer on every trainable variable, so that steps updating a
        subset of them share its state."""
        if not self.optimizer.built:
            self.optimizer.build(self.trainable_variables)

    def minimize(self, x, y, variables=None):
        """One optimizer step on the global-batch mean of the total loss; returns
        (logits, terms). `variables` (default: all trainable) are the ones updated."""
        variables = self.trainable_variables if variables is None else variables
        with tf.GradientTape() as tape:
            logits, terms = self.forward(x, y, training=True)
            loss = self.scaled_loss(terms)
        gradients = tape.gradient(loss, variables)
        self.build_optimizer()
        self.optimizer.apply(gradients, variables)
        return logits, terms

    def train_step(self, data):
        x, y = self.unpack(data)
        logits, terms = self.minimize(x, y)
        return self._update_metrics(y, logits, terms)

    def test_step(self, data):
        x, y = self.unpack(data)
        logits, terms = self.forward(x, y, training=False)
        return self._update_metrics(y, logits, terms)

    def fit(self, *args, callbacks=None, **kwargs):
        """`keras.Model.fit`, with a `DistillationRampUp` callback unless one is given."""
        callbacks = list(callbacks or [])
        if not any(isinstance(c, DistillationRampUp) for c in callbacks):
            callbacks.insert(0, DistillationRampUp())
        return super().fit(*args, callbacks=callbacks, **kwargs)

    # Serialisation -------------------------------------------------------------------

    def get_config(self):
        config = {
            "network": keras.saving.serialize_keras_object(self.network),
            "rampup_epochs": self.rampup_epochs,
            "top5": self.top5,
            "name": self.name,
        }
        for option in self.options:
            if not option.network:
                config[option.name] = getattr(self, option.name)
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        config["network"] = keras.saving.deserialize_keras_object(
            config["network"], custom_objects=custom_objects
        )
        return cls(**config)

