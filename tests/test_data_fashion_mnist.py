"""Tests for keras_ffl.data.fashion_mnist: Debian's files, or IDX files in data_dir."""

import os

import numpy as np
import pytest

from fakedata import batches, write_idx_dataset

from keras_ffl import data
from keras_ffl.data import fashion_mnist
from keras_ffl.validation import ArgumentError


@pytest.mark.skipif(
    not os.path.isdir(data.FASHION_MNIST_DIR),
    reason="needs `apt-get install dataset-fashion-mnist`",
)
def test_fashion_mnist_reads_debian_files():
    spec = data.get_spec("fashion_mnist")
    assert (spec.num_classes, spec.image_shape) == (10, (28, 28, 1))
    assert data.num_examples(spec, "train") == 60000
    assert data.num_examples(spec, "test") == 10000
    images, labels = batches(data.make_dataset(spec, "test", 1000, training=False))
    assert images.shape == (10000, 28, 28, 1) and labels.dtype == np.int32
    assert set(labels.tolist()) == set(range(10))
    # The registry's mean/std fit the data: test images come out near N(0, 1).
    assert abs(images.mean()) < 0.05 and abs(images.std() - 1) < 0.05
    train_images, _ = next(iter(data.make_dataset(spec, "train", 128, training=True)))
    assert train_images.shape == (128, 28, 28, 1)


def test_fashion_mnist_prefers_idx_files_in_data_dir(tmp_path):
    rng = np.random.default_rng(0)
    write_idx_dataset(
        tmp_path,
        rng.integers(0, 256, (12, 28, 28)),
        np.arange(12) % 10,
        rng.integers(0, 256, (5, 28, 28)),
        np.arange(5),
        gz=True,
    )
    spec = data.get_spec("fashion_mnist")
    assert data.num_examples(spec, "train", data_dir=str(tmp_path)) == 12
    assert data.num_examples(spec, "test", data_dir=str(tmp_path)) == 5
    assert data.class_names(spec, str(tmp_path))[9] == "Ankle boot"


def test_fashion_mnist_missing_files_say_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setattr(fashion_mnist, "FASHION_MNIST_DIR", str(tmp_path / "not-installed"))
    spec = data.get_spec("fashion_mnist")
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist") as err:
        data.make_dataset(spec, "train", 4, data_dir=str(tmp_path), training=True)
    assert isinstance(err.value, ArgumentError) and err.value.argument == "data_dir"
    assert "or pass --data_dir=<dir holding" in err.value.with_flag()
