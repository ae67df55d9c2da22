"""Tests for keras_ffl.data: the dataset registry and its tf.data pipelines.

CIFAR and ImageNet run on ``tfds.testing.mock_data`` (no real data here);
Fashion-MNIST runs on Debian's real IDX files; ``idx:`` and ``folder:`` run on
small files the tests write.
"""

import os
import re
import struct
import time

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from fakedata import write_idx_dataset, write_png

from keras_ffl import data

CIFAR100 = data.get_spec("cifar100")


def _batches(ds):
    """Returns all (images, labels) of a finite dataset as two numpy arrays."""
    images, labels = zip(*ds.as_numpy_iterator())
    return np.concatenate(images), np.concatenate(labels)


def _pixels(images, spec):
    """Undoes the pipeline's normalisation, back to uint8 pixel values."""
    return np.round(images * np.array(spec.std) + np.array(spec.mean)).astype(np.uint8)


def _crop_source(crop, originals, flips):
    """Finds the original whose reflect-padded image holds `crop`.

    Returns (index, top, left, mirrored), or None when no window matches.
    """
    height, width = crop.shape[:2]
    for index, original in enumerate(originals):
        padded = np.pad(original, ((4, 4), (4, 4), (0, 0)), mode="reflect")
        for top in range(9):
            for left in range(9):
                window = padded[top : top + height, left : left + width]
                if np.array_equal(window, crop):
                    return index, top, left, False
                if flips and np.array_equal(window[:, ::-1], crop):
                    return index, top, left, True
    return None


def _assert_valid_crops(crops, crop_labels, originals, labels, flips):
    """Checks each crop is a window of a distinct original, at its own offset.

    Some crops must be mirrored iff `flips`. Returns the index of each crop's
    original, in batch order.
    """
    found = [_crop_source(crop, originals, flips) for crop in crops]
    assert None not in found, "a training image is not a crop of any original"
    sources, tops, lefts, mirrored = (list(column) for column in zip(*found))
    assert sorted(sources) == list(range(len(originals))), "an example was lost or repeated"
    np.testing.assert_array_equal(crop_labels, labels[sources])
    assert len(set(zip(tops, lefts))) > 1, "all images of the batch share one crop"
    assert any(mirrored) == flips
    return sources


# Registry --------------------------------------------------------------------


def test_unknown_dataset_name_lists_known_datasets():
    with pytest.raises(ValueError, match="Unknown dataset 'cifar1000'") as err:
        data.get_spec("cifar1000")
    for name in ("cifar10", "cifar100", "imagenet2012", "fashion_mnist", "folder:", "idx:"):
        assert name in str(err.value)


def test_split_must_be_train_or_test():
    with pytest.raises(ValueError, match="split must be 'train' or 'test'"):
        data.make_dataset(CIFAR100, "validation", 4, training=False)


def test_registry_holds_the_paper_normalisation():
    assert CIFAR100.mean == (129.3, 124.1, 112.4)
    assert CIFAR100.std == (68.2, 65.4, 70.4)
    assert (CIFAR100.num_classes, CIFAR100.image_shape) == (100, (32, 32, 3))
    imagenet = data.get_spec("imagenet2012")
    np.testing.assert_allclose(imagenet.mean, np.array([0.485, 0.456, 0.406]) * 255)
    np.testing.assert_allclose(imagenet.std, np.array([0.229, 0.224, 0.225]) * 255)
    assert (imagenet.eval_split, imagenet.image_shape) == ("validation", (224, 224, 3))


# CIFAR-100 and ImageNet on mock TFDS -----------------------------------------


def test_cifar100_batches_have_model_shapes_and_dtypes():
    with tfds.testing.mock_data(num_examples=10):
        assert data.num_examples(CIFAR100, "train") == 10
        train = data.make_dataset(
            CIFAR100, "train", 4, training=True, seed=0, drop_remainder=True
        )
        assert [len(y) for _, y in train.as_numpy_iterator()] == [4, 4]
        images, labels = next(iter(train))
        assert images.shape == (4, 32, 32, 3) and images.dtype == tf.float32
        assert labels.dtype == tf.int32
        assert np.all((labels.numpy() >= 0) & (labels.numpy() < 100))
        test = data.make_dataset(CIFAR100, "test", 4, training=False)
        assert [len(y) for _, y in test.as_numpy_iterator()] == [4, 4, 2]


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
            images, labels = _batches(
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
        originals, labels = _batches(raw.batch(10))
        test = data.make_dataset(CIFAR100, "test", 4, training=False)
        first, first_labels = _batches(test)
        second, _ = _batches(test)
    np.testing.assert_array_equal(first, second)
    np.testing.assert_array_equal(_pixels(first, CIFAR100), originals)
    np.testing.assert_array_equal(first_labels, labels)


def test_cifar100_training_reshuffles_and_crops_reflect_padded_windows():
    with tfds.testing.mock_data(num_examples=8):
        raw = tfds.builder("cifar100").as_dataset(split="train", as_supervised=True)
        originals, labels = _batches(raw.batch(8))
        train = data.make_dataset(CIFAR100, "train", 8, training=True, seed=1)
        epoch_1, labels_1 = _batches(train)
        epoch_2, labels_2 = _batches(train)
    order_1 = _assert_valid_crops(
        _pixels(epoch_1, CIFAR100), labels_1, originals, labels, flips=True
    )
    order_2 = _assert_valid_crops(
        _pixels(epoch_2, CIFAR100), labels_2, originals, labels, flips=True
    )
    assert order_1 != order_2, "examples are not reshuffled each epoch"


def test_training_draws_new_crops_every_epoch():
    with tfds.testing.mock_data(num_examples=1):
        train = data.make_dataset(CIFAR100, "train", 1, training=True, seed=0)
        epochs = [_batches(train)[0] for _ in range(4)]
    assert any(not np.array_equal(epochs[0], other) for other in epochs[1:])


def test_imagenet_crops_224_from_any_image_size():
    imagenet = data.get_spec("imagenet2012")
    with tfds.testing.mock_data(num_examples=3):  # Random sizes of 5..50 pixels.
        for training in (True, False):
            images, labels = _batches(
                data.make_dataset(imagenet, "test", 2, training=training, seed=0)
            )
            assert images.shape == (3, 224, 224, 3) and images.dtype == np.float32
            assert np.all((labels >= 0) & (labels < 1000))
        test = data.make_dataset(imagenet, "test", 2, training=False)
        np.testing.assert_array_equal(_batches(test)[0], _batches(test)[0])


def test_imagenet_resizes_shorter_side_to_256_then_crops_224():
    imagenet = data.get_spec("imagenet2012")
    # The shorter side is already 256, so the resize keeps every pixel.
    image = np.random.default_rng(4).integers(0, 256, (300, 256, 3)).astype(np.uint8)

    def one_image(self, *args, **kwargs):
        return tf.data.Dataset.from_tensors(
            {"image": tf.io.encode_png(image), "label": np.int64(7)}
        )

    with tfds.testing.mock_data(as_dataset_fn=one_image):
        (centre,), labels = _batches(data.make_dataset(imagenet, "test", 1, training=False))
        train = data.make_dataset(imagenet, "train", 1, training=True, seed=0)
        crops = [_pixels(_batches(train)[0][0], imagenet) for _ in range(8)]
    np.testing.assert_array_equal(_pixels(centre, imagenet), image[38:262, 16:240])
    assert labels.tolist() == [7]
    windows = []
    for crop in crops:
        hits = [
            (top, left, mirrored)
            for candidate, mirrored in ((crop, False), (crop[:, ::-1], True))
            for top in range(300 - 224 + 1)
            for left in range(256 - 224 + 1)
            if np.array_equal(image[top, left : left + 224], candidate[0])
            and np.array_equal(image[top : top + 224, left : left + 224], candidate)
        ]
        assert len(hits) == 1, "a training crop is not a 224 x 224 window of the image"
        windows += hits
    assert len(set(windows)) > 1, "every epoch took the same crop"
    assert {mirrored for *_, mirrored in windows} == {False, True}


@pytest.mark.parametrize(
    "name, advice",
    [("cifar100", "tfds build cifar100"), ("imagenet2012", "ILSVRC2012_img_train.tar")],
)
def test_missing_tfds_data_fails_fast_naming_the_data_dir(tmp_path, name, advice):
    spec = data.get_spec(name)
    start = time.monotonic()
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path))) as err:
        data.make_dataset(spec, "train", 4, data_dir=str(tmp_path), training=True)
    assert advice in str(err.value)
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path))):
        data.num_examples(spec, "test", data_dir=str(tmp_path))
    assert time.monotonic() - start < 10


# Fashion-MNIST -----------------------------------------------------------------


@pytest.mark.skipif(
    not os.path.isdir(data.FASHION_MNIST_DIR),
    reason="needs `apt-get install dataset-fashion-mnist`",
)
def test_fashion_mnist_reads_debian_files():
    spec = data.get_spec("fashion_mnist")
    assert (spec.num_classes, spec.image_shape) == (10, (28, 28, 1))
    assert data.num_examples(spec, "train") == 60000
    assert data.num_examples(spec, "test") == 10000
    images, labels = _batches(data.make_dataset(spec, "test", 1000, training=False))
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


def test_fashion_mnist_missing_files_say_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "FASHION_MNIST_DIR", str(tmp_path / "not-installed"))
    spec = data.get_spec("fashion_mnist")
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        data.make_dataset(spec, "train", 4, data_dir=str(tmp_path), training=True)


# idx:<dir> -------------------------------------------------------------------


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

    images, labels = _batches(data.make_dataset(spec, "test", 4, training=False))
    np.testing.assert_array_equal(_pixels(images, spec)[..., 0], test_images)
    np.testing.assert_array_equal(labels, test_labels)

    # Digits and characters are not mirror symmetric: crops, never flips.
    crops, crop_labels = _batches(data.make_dataset(spec, "train", 20, training=True, seed=0))
    _assert_valid_crops(
        _pixels(crops, spec), crop_labels, train_images[..., None], np.arange(20) % 3, flips=False
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


# folder:<dir> ------------------------------------------------------------------


def test_folder_with_train_and_test_dirs(tmp_path):
    rng = np.random.default_rng(2)
    classes = {"dog": 3, "ant": 1, "cow": 1, "cat": 2}  # Labelled by sorted name.
    train = {}
    for class_name, count in classes.items():
        for i in range(count):
            image = rng.integers(0, 256, (6, 6, 3)).astype(np.uint8)
            train[(class_name, i)] = image
            write_png(tmp_path / "train" / class_name / f"{i}.png", image)
    test_image = rng.integers(0, 256, (6, 6, 3)).astype(np.uint8)
    write_png(tmp_path / "test" / "dog" / "0.png", test_image)

    spec = data.get_spec(f"folder:{tmp_path}")
    assert (spec.num_classes, spec.image_shape) == (4, (6, 6, 3))
    pixels = np.stack(list(train.values())).reshape(-1, 3)
    np.testing.assert_allclose(spec.mean, pixels.mean(axis=0))
    np.testing.assert_allclose(spec.std, pixels.std(axis=0))
    assert data.num_examples(spec, "train") == 7 and data.num_examples(spec, "test") == 1

    images, labels = _batches(data.make_dataset(spec, "train", 8, training=False))
    order = sorted(train)  # (class name, file index), as the pipeline lists them.
    np.testing.assert_array_equal(_pixels(images, spec), np.stack([train[k] for k in order]))
    np.testing.assert_array_equal(labels, [0, 1, 1, 2, 3, 3, 3])
    images, labels = _batches(data.make_dataset(spec, "test", 8, training=False))
    np.testing.assert_array_equal(_pixels(images, spec), test_image[None])
    np.testing.assert_array_equal(labels, [3])

    resized = data.get_spec(f"folder:{tmp_path}", image_size=12)
    images, _ = _batches(data.make_dataset(resized, "train", 8, training=True, seed=0))
    assert resized.image_shape == (12, 12, 3) and images.shape == (7, 12, 12, 3)


def test_folder_without_splits_holds_out_a_fixed_test_set(tmp_path):
    rng = np.random.default_rng(3)
    for class_name in ("a", "b"):
        for i in range(10):
            image = rng.integers(0, 256, (8, 8, 1)).astype(np.uint8)
            write_png(tmp_path / class_name / f"{i:02d}.png", image)

    spec = data.get_spec(f"folder:{tmp_path}")
    assert spec.image_shape == (8, 8, 1)  # Grayscale PNGs stay one channel.
    assert data.num_examples(spec, "train") == 18
    assert data.num_examples(spec, "test") == 2
    test_images, test_labels = _batches(data.make_dataset(spec, "test", 8, training=False))
    train_images, _ = _batches(data.make_dataset(spec, "train", 32, training=False))
    np.testing.assert_array_equal(test_labels, [0, 1])  # One held out per class.
    held_out = {image.tobytes() for image in test_images}
    assert held_out.isdisjoint(image.tobytes() for image in train_images)
    again, _ = _batches(data.make_dataset(spec, "test", 8, training=False))
    np.testing.assert_array_equal(again, test_images)
