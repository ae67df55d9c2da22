"""Tests for keras_ffl.data.idx: ``idx:<dir>`` datasets in MNIST's IDX format.

The checks that refuse bad labels and splits are in test_faults_data.py.
"""

import struct

import numpy as np
import pytest

from fakedata import assert_valid_crops, batches, pixels, write_idx_dataset

from keras_ffl import data


@pytest.mark.parametrize("gz", [True, False])
def test_idx_dataset_reads_facts_and_pixels_from_files(tmp_path, gz):
    rng = np.random.default_rng(1)
    train_images = rng.integers(0, 256, (20, 10, 10)).astype(np.uint8)
    test_images = rng.integers(0, 256, (6, 10, 10)).astype(np.uint8)
    test_labels = np.array([2, 0, 1, 1, 0, 2])
    write_idx_dataset(tmp_path, train_images, np.arange(20) % 3, test_images, test_labels, gz)

    spec = data.get_spec(f"idx:{tmp_path}")
    assert (spec.num_classes, spec.image_shape) == (3, (10, 10, 1))
    np.testing.assert_allclose(spec.mean, [train_images.mean()])
    np.testing.assert_allclose(spec.std, [train_images.std()])
    assert data.num_examples(spec, "train") == 20

    images, labels = batches(data.make_dataset(spec, "test", 4, training=False))
    np.testing.assert_array_equal(pixels(images, spec)[..., 0], test_images)
    np.testing.assert_array_equal(labels, test_labels)

    # Digits and characters are not mirror symmetric: crops, never flips.
    crops, crop_labels = batches(data.make_dataset(spec, "train", 20, training=True, seed=0))
    assert_valid_crops(
        pixels(crops, spec), crop_labels, train_images[..., None], np.arange(20) % 3, flips=False
    )


@pytest.mark.parametrize(
    "corrupt, message",
    [
        (lambda raw: struct.pack(">I", 0x0801) + raw[4:], "magic number 0x00000801"),
        (lambda raw: raw[:-7], "truncated"),
    ],
)
def test_corrupt_idx_file_names_the_file_and_problem(tmp_path, corrupt, message):
    images = np.zeros((4, 8, 8), np.uint8)
    write_idx_dataset(tmp_path, images, np.arange(4), images, np.arange(4), gz=False)
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(corrupt(path.read_bytes()))
    with pytest.raises(ValueError, match=message) as err:
        data.get_spec(f"idx:{tmp_path}")
    assert str(path) in str(err.value)
