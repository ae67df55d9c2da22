"""Tests for keras_ffl.data: the registry of data sources and the pipeline they share.

The pipeline runs on CIFAR-100 from ``tfds.testing.mock_data`` (no real data
here) and on a source defined in this file; each source has its own test file
(test_data_tfds.py, test_data_idx.py, test_data_fashion_mnist.py,
test_data_folder.py).
"""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from fakedata import assert_valid_crops, batches, pixels

from keras_ffl import data
from keras_ffl.data import base
from keras_ffl.validation import ArgumentError

CIFAR100 = data.get_spec("cifar100")


# Registry --------------------------------------------------------------------


def test_unknown_dataset_name_lists_known_datasets():
    with pytest.raises(ValueError, match="Unknown dataset 'cifar1000'") as err:
        data.get_spec("cifar1000")
    for name in ("cifar10", "cifar100", "imagenet2012", "fashion_mnist", "folder:", "idx:"):
        assert name in str(err.value)
    assert isinstance(err.value, ArgumentError) and err.value.argument == "dataset"
    with pytest.raises(ValueError, match="Unknown dataset 'zip:/data'"):
        data.check_dataset("zip:/data")


def test_split_must_be_train_or_test():
    with pytest.raises(ValueError, match="split must be 'train' or 'test'"):
        data.make_dataset(CIFAR100, "validation", 4, training=False)


def test_image_size_applies_to_image_folders_only():
    with pytest.raises(ArgumentError, match=r"^image_size=64 resizes the images of image folders"):
        data.get_spec("cifar100", image_size=64)
    with pytest.raises(ArgumentError, match=r"^image_size=0 is not a whole number >= 1"):
        data.get_spec("folder:/nonexistent", image_size=0)


class _Ramps(data.DataSource):
    """A source that writes no file: 4x4 grey ramps, brighter for higher labels."""

    def spec(self, image_size=None):
        return data.DatasetSpec(
            f"ramps:{self.argument}", 2, (4, 4, 1), (50.0,), (10.0,), recipe="small"
        )

    def check(self):
        if self.argument != "ok":
            raise ValueError(f"ramps {self.argument!r} are not ok — pass ramps:ok")

    def num_examples(self, split_name):
        return 6 if split_name == "train" else 2

    def examples(self, spec, split_name, *, training, seed):
        labels = np.arange(self.num_examples(split_name)) % 2
        images = labels[:, None, None, None] * 100 + np.arange(16).reshape(1, 4, 4, 1)
        ds = tf.data.Dataset.from_tensor_slices((images.astype(np.uint8), labels))
        return base.shuffled(ds, len(labels), training=training, seed=seed)


def test_a_registered_source_is_reached_by_every_public_function(monkeypatch):
    monkeypatch.setattr(base, "_SOURCES", dict(base._SOURCES))  # Registered for this test only.
    data.register_source("ramps:<kind>", _Ramps)
    assert data.source_forms()[-3:] == ["folder:<dir>", "idx:<dir>", "ramps:<kind>"]
    data.check_dataset("ramps:ok")
    with pytest.raises(ValueError, match="'bad' are not ok"):
        data.check_dataset("ramps:bad")
    spec = data.get_spec("ramps:ok")
    assert data.num_examples(spec, "test") == 2
    assert data.class_names(spec) == ["0", "1"]
    images, labels = batches(data.make_dataset(spec, "test", 4, training=False))
    np.testing.assert_array_equal(labels, [0, 1])
    ramp = np.arange(16).reshape(4, 4)
    np.testing.assert_array_equal(pixels(images, spec)[..., 0], [ramp, ramp + 100])
    crops, crop_labels = batches(data.make_dataset(spec, "train", 6, training=True, seed=0))
    assert crops.shape == (6, 4, 4, 1) and sorted(crop_labels) == [0, 0, 0, 1, 1, 1]


# The shared pipeline, on mock CIFAR-100 -------------------------------------------


def test_constant_image_normalises_to_exact_values_in_both_pipelines():
    def constant_images(self, *args, **kwargs):
        return tf.data.Dataset.from_tensor_slices(
            {
                "image": np.full((6, 32, 32, 3), 100, np.uint8),
                "label": np.arange(6, dtype=np.int64),
            }
        )

    expected = (100 - np.array(CIFAR100.mean, np.float32)) / np.array(
        CIFAR100.std, np.float32
    )
    with tfds.testing.mock_data(as_dataset_fn=constant_images):
        for training in (False, True):
            images, labels = batches(
                data.make_dataset(CIFAR100, "test", 6, training=training, seed=0)
            )
            np.testing.assert_allclose(images, np.broadcast_to(expected, images.shape), rtol=1e-6)
            assert sorted(labels) == list(range(6))
    layer = data.normalization_layer(CIFAR100)
    exported = layer(np.full((1, 32, 32, 3), 100, np.uint8))
    np.testing.assert_allclose(np.asarray(exported)[0, 0, 0], expected, rtol=1e-6)


def test_cifar100_eval_is_unaugmented_and_identical_across_passes():
    with tfds.testing.mock_data(num_examples=10):
        raw = tfds.builder("cifar100").as_dataset(split="test", as_supervised=True)
        originals, labels = batches(raw.batch(10))
        test = data.make_dataset(CIFAR100, "test", 4, training=False)
        first, first_labels = batches(test)
        second, _ = batches(test)
    np.testing.assert_array_equal(first, second)
    np.testing.assert_array_equal(pixels(first, CIFAR100), originals)
    np.testing.assert_array_equal(first_labels, labels)


def test_cifar100_training_reshuffles_and_crops_reflect_padded_windows():
    with tfds.testing.mock_data(num_examples=8):
        raw = tfds.builder("cifar100").as_dataset(split="train", as_supervised=True)
        originals, labels = batches(raw.batch(8))
        train = data.make_dataset(CIFAR100, "train", 8, training=True, seed=1)
        epoch_1, labels_1 = batches(train)
        epoch_2, labels_2 = batches(train)
    order_1 = assert_valid_crops(
        pixels(epoch_1, CIFAR100), labels_1, originals, labels, flips=True
    )
    order_2 = assert_valid_crops(
        pixels(epoch_2, CIFAR100), labels_2, originals, labels, flips=True
    )
    assert order_1 != order_2, "examples are not reshuffled each epoch"


def test_training_draws_new_crops_every_epoch():
    with tfds.testing.mock_data(num_examples=1):
        train = data.make_dataset(CIFAR100, "train", 1, training=True, seed=0)
        epochs = [batches(train)[0] for _ in range(4)]
    assert any(not np.array_equal(epochs[0], other) for other in epochs[1:])
