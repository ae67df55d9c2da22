"""Tests for keras_ffl.data.folder: ``folder:<dir>`` datasets of class sub-folders.

The checks that refuse bad folders and images are in test_faults_data.py.
"""

import numpy as np

from fakedata import batches, pixels, write_png

from keras_ffl import data


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
    all_pixels = np.stack(list(train.values())).reshape(-1, 3)
    np.testing.assert_allclose(spec.mean, all_pixels.mean(axis=0))
    np.testing.assert_allclose(spec.std, all_pixels.std(axis=0))
    assert data.num_examples(spec, "train") == 7 and data.num_examples(spec, "test") == 1

    images, labels = batches(data.make_dataset(spec, "train", 8, training=False))
    order = sorted(train)  # (class name, file index), as the pipeline lists them.
    np.testing.assert_array_equal(pixels(images, spec), np.stack([train[k] for k in order]))
    np.testing.assert_array_equal(labels, [0, 1, 1, 2, 3, 3, 3])
    images, labels = batches(data.make_dataset(spec, "test", 8, training=False))
    np.testing.assert_array_equal(pixels(images, spec), test_image[None])
    np.testing.assert_array_equal(labels, [3])

    resized = data.get_spec(f"folder:{tmp_path}", image_size=12)
    images, _ = batches(data.make_dataset(resized, "train", 8, training=True, seed=0))
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
    test_images, test_labels = batches(data.make_dataset(spec, "test", 8, training=False))
    train_images, _ = batches(data.make_dataset(spec, "train", 32, training=False))
    np.testing.assert_array_equal(test_labels, [0, 1])  # One held out per class.
    held_out = {image.tobytes() for image in test_images}
    assert held_out.isdisjoint(image.tobytes() for image in train_images)
    again, _ = batches(data.make_dataset(spec, "test", 8, training=False))
    np.testing.assert_array_equal(again, test_images)
