"""Datasets in MNIST's IDX format: ``idx:<dir>`` holding its four files, gzipped or not.

The classes, image shape, mean and std come from the training split; the
checks refuse label numberings and splits that could not train or test a
classifier.
"""

from __future__ import annotations

import functools
import gzip
import os
import struct

import numpy as np
import tensorflow as tf

from keras_ffl.data.base import DatasetSpec, DataSource, register_source, shuffled

_STATS_SAMPLE = 10_000
_NAMES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


class IdxSource(DataSource):
    """The IDX files in directory `argument`; arrays decoded in memory, so nothing to cache."""

    @property
    def directory(self) -> str:
        """The directory holding the four IDX files."""
        return os.path.abspath(self.argument)

    def spec(self, image_size=None):
        """Reads the classes, shape, mean and std of the training split."""
        directory = self.directory
        images, labels = read_idx_split(directory, "train")
        sample = images[:: max(1, len(images) // _STATS_SAMPLE)].astype(np.float64)
        return DatasetSpec(
            name=f"idx:{directory}",
            num_classes=int(labels.max()) + 1,
            image_shape=images.shape[1:],
            mean=tuple(sample.mean(axis=(0, 1, 2)).tolist()),
            std=tuple(sample.std(axis=(0, 1, 2)).tolist()),
            recipe="small",
            # IDX files usually hold digits or characters, which a mirror changes.
            random_flip=False,
        )

    def check(self):
        """Counts per split alike, labels 0..n-1 all trained, test labels < n, one image size."""
        directory = self.directory
        train_images, train_labels = read_idx_split(directory, "train")
        test_images, test_labels = read_idx_split(directory, "test")
        train_file = idx_files(directory, "train")[1]
        test_images_file, test_file = idx_files(directory, "test")
        counts = np.bincount(train_labels)
        if np.count_nonzero(counts) < 2:
            raise ValueError(
                f"{train_file} has one label, {_labels(np.flatnonzero(counts))}, so one class "
                "— a classifier needs at least 2 classes: add images of other classes"
            )
        untrained = np.flatnonzero(counts == 0)
        if untrained.size:
            raise ValueError(
                f"{train_file} has labels 0..{len(counts) - 1} but no image of class "
                f"{_labels(untrained)} — labels must number the classes 0..n-1 with every "
                "class present; renumber them"
            )
        unknown = np.unique(test_labels[test_labels >= len(counts)])
        if unknown.size:
            raise ValueError(
                f"{test_file} has labels {_labels(unknown)}, which no training image has (the "
                f"training labels are 0..{len(counts) - 1}) — test only classes the training "
                "split has: renumber the labels alike or remove those test images"
            )
        if test_images.shape[1:] != train_images.shape[1:]:
            raise ValueError(
                f"{test_images_file} holds images of shape {test_images.shape[1:]}, the "
                f"training images are {train_images.shape[1:]} — write both splits at one size"
            )

    def num_examples(self, split_name):
        return len(read_idx_split(self.directory, split_name)[1])

    def examples(self, spec, split_name, *, training, seed):
        images, labels = read_idx_split(self.directory, split_name)
        ds = tf.data.Dataset.from_tensor_slices((images, labels))
        return shuffled(ds, len(labels), training=training, seed=seed)


def holds_idx_files(directory: str) -> bool:
    """Whether `directory` holds the four IDX files of both splits."""
    return all(_path(directory, name) for names in _NAMES.values() for name in names)


def _path(directory: str, name: str) -> str | None:
    """Returns the path of IDX file `name`, gzipped or not, if it exists."""
    for path in (os.path.join(directory, name), os.path.join(directory, name + ".gz")):
        if os.path.isfile(path):
            return path
    return None


def idx_files(directory: str, split_name: str) -> tuple[str, str]:
    """The paths of one split's IDX images and labels files in `directory`."""
    paths = [_path(directory, name) for name in _NAMES[split_name]]
    if None in paths:
        raise FileNotFoundError(
            f"No IDX files for split {split_name!r} in {directory} — add "
            f"{' and '.join(_NAMES[split_name])} (optionally ending in .gz)"
        )
    return paths[0], paths[1]


@functools.lru_cache(maxsize=4)
def read_idx_split(directory: str, split_name: str) -> tuple[np.ndarray, np.ndarray]:
    """Reads one split's images (N, H, W, C) and labels (N,) from IDX files.

    Cached because the checks, the spec, the example count and the pipeline all
    read the same split; the arrays are read-only.
    """
    paths = idx_files(directory, split_name)
    images = _read(paths[0], ndims=(3, 4))
    labels = _read(paths[1], ndims=(1,))
    if len(images) != len(labels):
        raise ValueError(
            f"{paths[0]} holds {len(images)} images but {paths[1]} holds "
            f"{len(labels)} labels — the two files must come from the same split: "
            "write them again together"
        )
    if images.ndim == 3:
        images = images[..., np.newaxis]
    labels = labels.astype(np.int32)
    labels.flags.writeable = False
    return images, labels


def _read(path: str, ndims: tuple[int, ...]) -> np.ndarray:
    """Reads an IDX file of unsigned bytes, checking its magic number and size."""
    try:
        with (gzip.open if path.endswith(".gz") else open)(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as err:
        raise ValueError(f"{path} cannot be read as gzip ({err}) — re-download it") from err
    expected = " or ".join(f"{0x800 + n:#010x}" for n in ndims)
    magic = struct.unpack(">I", data[:4])[0] if len(data) >= 4 else None
    if magic is None or magic >> 8 != 0x08 or (magic & 0xFF) not in ndims:
        found = "no header" if magic is None else f"magic number {magic:#010x}"
        raise ValueError(
            f"{path} is not an IDX file of unsigned bytes with {ndims} dimensions: "
            f"{found}, expected {expected} — re-download it or write it in "
            "MNIST's IDX format"
        )
    header = 4 + 4 * (magic & 0xFF)
    shape = struct.unpack(f">{magic & 0xFF}I", data[4:header])
    if len(data) != header + int(np.prod(shape)):
        raise ValueError(
            f"{path} has {len(data) - header} bytes of data but its header "
            f"announces shape {shape}, so it is truncated or corrupt — re-download it"
        )
    return np.frombuffer(data, np.uint8, offset=header).reshape(shape)


def _labels(values) -> str:
    """Label values as ranges: [3, 4, 5, 7] -> "3..5, 7"."""
    values = sorted(int(v) for v in values)
    runs = []
    start = previous = values[0]
    for value in values[1:]:
        if value != previous + 1:
            runs.append((start, previous))
            start = value
        previous = value
    runs.append((start, previous))
    return ", ".join(str(a) if a == b else f"{a}..{b}" for a, b in runs)


register_source("idx:<dir>", IdxSource)
