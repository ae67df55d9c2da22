"""The benchmarked models: a --models entry parsed and built as the training command
builds it, the in-memory batches they train on, and how their steps are timed."""

import dataclasses

import keras
import numpy as np
import tensorflow as tf

import keras_ffl
from benchmarking.timing import clocks

#: The baseline every model's step is compared with: one network trained alone.
BASELINE = "vanilla"
#: The one variant of a --models entry: the method on two architectures.
CASE2 = "case2"
#: CIFAR shapes: the input of every benchmarked model.
IMAGE_SHAPE = (32, 32, 3)


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """A model to benchmark: a registered method on one architecture (with `branches`
    sub-networks) or on a list of them (case 2)."""

    key: str
    method: str
    architectures: str | list
    branches: int

    @property
    def name(self):
        """The descriptive name, e.g. "ffl_resnet32_x2" or "ffl_resnet32_wrn16_2"."""
        if isinstance(self.architectures, list):
            return f"{self.method}_{'_'.join(self.architectures)}"
        suffix = f"_x{self.branches}" if self.branches > 1 else ""
        return f"{self.method}_{self.architectures}{suffix}"


def parse_model(key, arch, arch2):
    """The ModelSpec of a --models entry such as "dml", "ffl:3" or "ffl@case2" (on `arch`,
    or on `arch` and `arch2`); ValueError names an unknown method or variant."""
    method, _, variant = key.partition("@")
    method, _, branches = method.partition(":")
    method_class = keras_ffl.get_method(method)
    if variant and variant != CASE2:
        raise ValueError(
            f"Unknown variant @{variant} in --models={key}; the one variant is @{CASE2}."
        )
    if variant:
        return ModelSpec(key, method, [arch, arch2], 2)
    return ModelSpec(
        key, method, arch, method_class.resolve_subnetworks(int(branches) if branches else None)
    )


def build(spec, num_classes, jit_compile):
    """Compiled model of `spec` as the training command builds it, from the method registry."""
    model = keras_ffl.get_method(spec.method).create(
        spec.architectures, num_classes, IMAGE_SHAPE, branches=spec.branches, rampup_epochs=80
    )
    model.compile(optimizer=model.make_optimizer(0.1), jit_compile=jit_compile)
    return model


def count_params(model):
    return int(sum(np.prod(v.shape) for v in model.trainable_variables))


def synthetic_batches(batch_size, num_classes, seed, count=8):
    """A repeating cycle of `count` normalised-looking batches held in memory."""
    rng = np.random.default_rng(seed)
    images = rng.standard_normal((count, batch_size, *IMAGE_SHAPE), dtype=np.float32)
    labels = rng.integers(0, num_classes, (count, batch_size), dtype=np.int32)
    return tf.data.Dataset.from_tensor_slices((images, labels)).repeat().prefetch(2)


def bare_step(model, jit_compile):
    """A compiled training step on `model` without Keras's trainer: the method's joint
    loss, gradients, apply (no metrics)."""
    variables = model.trainable_variables

    def loss_fn(x, y):
        _, terms = model.forward(x, y, training=True)
        return tf.nn.compute_average_loss(terms["total"])

    # As in Keras's trainer: XLA cannot compile the iterator, so the compiled
    # computation is an inner function of the one that reads the data.
    @tf.function(jit_compile=jit_compile)
    def compute(x, y):
        with tf.GradientTape() as tape:
            loss = loss_fn(x, y)
        model.optimizer.apply(tape.gradient(loss, variables), variables)
        return loss

    @tf.function
    def step(iterator):
        x, y = next(iterator)
        return compute(x, y)

    return step


class StepTimer(keras.callbacks.Callback):
    """Wall and CPU clocks at the start of every training batch, and the last loss."""

    def __init__(self):
        super().__init__()
        self.starts = []
        self.loss = float("nan")

    def on_train_batch_begin(self, batch, logs=None):
        self.starts.append(clocks())

    def on_train_batch_end(self, batch, logs=None):
        # Reading the loss waits for the step on asynchronous devices (GPU).
        self.loss = float(logs["loss"])
