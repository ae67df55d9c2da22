"""A trained run's checkpoint, its test split, and every head's predictions on it.

The analyses read only what a run directory holds (config.json, a checkpoint)
and the dataset it names: the test split is read in its fixed order and
normalised with the mean and std the run trained with.
"""

import dataclasses

import numpy as np

from keras_ffl import data, run_dir
from keras_ffl.heads import network_heads
from keras_ffl.run_dir import RunError
from keras_ffl.validation import ArgumentError


@dataclasses.dataclass(frozen=True)
class Predictions:
    """Every head's class probabilities (N, K) on the test split, and its labels (N,)."""

    probabilities: dict
    labels: np.ndarray

    def correct(self, head):
        """(N,) bools: where `head`'s most probable class is the label."""
        return self.probabilities[head].argmax(axis=1) == self.labels


@dataclasses.dataclass(frozen=True)
class TrainedRun:
    """A run directory's configuration and one of its checkpoints, loaded."""

    model_dir: str
    config: dict
    model: object
    checkpoint: str

    @property
    def network(self):
        """The functional network: a dict of logits per head."""
        return getattr(self.model, "network", self.model)

    @property
    def primary_head(self):
        """The head whose test accuracy the run reports (and selects best.keras by)."""
        return self.model.primary_head


def load_run(model_dir, checkpoint=None):
    """The `TrainedRun` of `model_dir` at `checkpoint` ("best" or "last"; default: best if any).

    Raises:
      RunError: `model_dir` is not a training run's directory.
      FileNotFoundError: it holds no checkpoint yet.
      CheckpointError: `checkpoint` is missing or damaged (see `run_dir.open_checkpoint`).
    """
    model, config, checkpoint = run_dir.open_checkpoint(model_dir, checkpoint)
    return TrainedRun(model_dir, config, model, checkpoint)


def run_spec(config, data_dir=None):
    """The `DatasetSpec` of a run's dataset, normalised exactly as the run trained.

    Raises:
      RunError: the dataset's images no longer have the shape the run trained on.
    """
    spec = data.get_spec(config["dataset"], data_dir)
    trained_shape = tuple(config["image_shape"])
    if tuple(spec.image_shape) != trained_shape:
        raise RunError(
            f"{config['dataset']}'s images are {tuple(spec.image_shape)} now, but the run "
            f"trained on {trained_shape} — restore the dataset the run trained on"
        )
    return dataclasses.replace(spec, mean=tuple(config["mean"]), std=tuple(config["std"]))


def predict_test_split(run, *, data_dir=None, batch_size=None):
    """`Predictions` of every head of a `TrainedRun` on its whole test split, in one pass."""
    network = run.network
    heads = network_heads(network)
    spec = run_spec(run.config, data_dir)
    batch_size = batch_size or run.config["eval_batch_size"]
    batches = data.make_dataset(spec, "test", batch_size, data_dir=data_dir, training=False)
    logits, labels = {head: [] for head in heads}, []
    for images, batch_labels in batches:
        outputs = network(images, training=False)
        for head in heads:
            logits[head].append(np.asarray(outputs[head], np.float64))
        labels.append(batch_labels.numpy())
    probabilities = {head: softmax(np.concatenate(values)) for head, values in logits.items()}
    return Predictions(probabilities, np.concatenate(labels))


def load_test_images(config, indices, *, data_dir=None):
    """(images normalised as the network takes them, labels) of the test examples `indices`.

    Raises:
      ArgumentError: no index, or one outside the test split.
    """
    if not len(indices):
        raise ArgumentError("indices", "{arg} names no test image — give at least one index")
    spec = run_spec(config, data_dir)
    count = data.num_examples(spec, "test", data_dir)
    outside = [i for i in indices if not 0 <= i < count]
    if outside:
        raise ArgumentError(
            "indices",
            f"{{arg}} holds {', '.join(map(str, outside))}, outside the test split of "
            f"{config['dataset']} ({count} images) — pick indices from 0 to {count - 1}",
        )
    batch_size = config["eval_batch_size"]
    batches = data.make_dataset(spec, "test", batch_size, data_dir=data_dir, training=False)
    found = {}
    for start, (batch_images, batch_labels) in zip(
        range(0, count, batch_size), batches.take(max(indices) // batch_size + 1)
    ):
        for index in set(indices) & set(range(start, start + len(batch_labels))):
            found[index] = batch_images[index - start].numpy(), int(batch_labels[index - start])
    images, labels = zip(*(found[index] for index in indices))
    return np.stack(images), np.array(labels)


def to_pixels(images, config):
    """Normalised network inputs back to 0..255 pixel values (float), for display."""
    return np.asarray(images) * np.asarray(config["std"]) + np.asarray(config["mean"])


def softmax(logits):
    """Row-wise softmax of (N, K) logits, in float64."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)
