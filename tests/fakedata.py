"""Small datasets that tests write to disk (MNIST-format IDX files, image folders), and
how tests read a pipeline's batches back to pixels."""

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


def batches(ds):
    """Returns all (images, labels) of a finite dataset as two numpy arrays."""
    images, labels = zip(*ds.as_numpy_iterator())
    return np.concatenate(images), np.concatenate(labels)


def pixels(images, spec):
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


def assert_valid_crops(crops, crop_labels, originals, labels, flips):
    """Checks each crop is a window of a distinct original's 4-pixel reflect padding.

    Crops must sit at more than one offset, and some must be mirrored iff
    `flips`. Returns the index of each crop's original, in batch order.
    """
    found = [_crop_source(crop, originals, flips) for crop in crops]
    assert None not in found, "a training image is not a crop of any original"
    sources, tops, lefts, mirrored = (list(column) for column in zip(*found))
    assert sorted(sources) == list(range(len(originals))), "an example was lost or repeated"
    np.testing.assert_array_equal(crop_labels, labels[sources])
    assert len(set(zip(tops, lefts))) > 1, "all images of the batch share one crop"
    assert any(mirrored) == flips
    return sources
