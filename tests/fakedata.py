"""Small datasets that tests write to disk: MNIST-format IDX files and image folders."""

import gzip
import os
import struct

import numpy as np
import tensorflow as tf


def write_idx_file(path, array):
    """Writes `array` (uint8) as an IDX file, gzipped when `path` ends in .gz."""
    array = np.asarray(array)
    header = struct.pack(f">I{array.ndim}I", 0x800 + array.ndim, *array.shape)
    with (gzip.open if str(path).endswith(".gz") else open)(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def write_idx_dataset(directory, train_images, train_labels, test_images, test_labels, gz=False):
    """Writes the four MNIST-named IDX files of a dataset into `directory`; returns it."""
    suffix = ".gz" if gz else ""
    os.makedirs(directory, exist_ok=True)
    for name, array in (
        ("train-images-idx3-ubyte", train_images),
        ("train-labels-idx1-ubyte", train_labels),
        ("t10k-images-idx3-ubyte", test_images),
        ("t10k-labels-idx1-ubyte", test_labels),
    ):
        write_idx_file(os.path.join(directory, name + suffix), array)
    return str(directory)


def band_images(labels, size, classes, rng):
    """Noise images whose class is a bright vertical band: easy to learn in a few steps."""
    labels = np.asarray(labels)
    images = rng.integers(0, 60, (len(labels), size, size), dtype=np.uint8)
    for c in range(classes):
        images[labels == c, :, c * size // classes : (c + 1) * size // classes] += 150
    return images


def write_idx(directory, n_train=192, n_test=48, size=12, classes=3):
    """An IDX dataset of `band_images` with labels 0..classes-1 in turn; returns `directory`."""
    rng = np.random.default_rng(0)
    train_labels = np.arange(n_train) % classes
    test_labels = np.arange(n_test) % classes
    return write_idx_dataset(
        directory,
        band_images(train_labels, size, classes, rng),
        train_labels,
        band_images(test_labels, size, classes, rng),
        test_labels,
    )


def write_png(path, image):
    """Writes `image` (uint8, H x W x C) as a PNG, creating its directory."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tf.io.write_file(str(path), tf.io.encode_png(image))


def write_folder(directory, per_class=40, size=12, classes=("circle", "square", "stripe")):
    """A folder dataset: one sub-folder of PNG images per class; returns `directory`."""
    rng = np.random.default_rng(0)
    for c, name in enumerate(classes):
        for i in range(per_class):
            image = rng.integers(0, 60, (size, size, 3), dtype=np.uint8)
            image[:, c * size // 3 : (c + 1) * size // 3, c] += 150
            write_png(os.path.join(directory, name, f"{i:03d}.png"), image)
    return str(directory)
