"""Image folders: ``folder:<dir>`` with one sub-folder of JPEG or PNG images per class.

The classes are the sub-folders of ``<dir>/train`` (tested on ``test/`` or
``val/``) or, without ``train/``, of ``<dir>`` itself, which then holds out a
fixed tenth of each class to test. The image shape, mean and std come from a
sample of the training images; the checks decode every image once before
training, and remember that verdict until a file changes.
"""

from __future__ import annotations

import hashlib
import os
import zlib

import numpy as np
import tensorflow as tf

from keras_ffl import run_dir
from keras_ffl.data.base import DatasetSpec, DataSource, register_source, shuffled

_STATS_SAMPLE = 512
_DEFAULT_SIZE = 32
_HELD_OUT_FRACTION = 0.1
_IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
#: Bumped when the decoding check changes, so that older verdicts no longer count.
_DECODE_CHECK_VERSION = 1
_LISTED_FILES = 3
_DECODE_BATCH = 256


class FolderSource(DataSource):
    """The image folder `argument`; file names are shuffled before decoding, so that
    no decoded split has to fit in memory."""

    resizable = True

    @property
    def root(self) -> str:
        """The folder's absolute path."""
        return os.path.abspath(self.argument)

    def spec(self, image_size=None):
        """Reads the classes, image shape, mean and std of the folder.

        Shape and statistics come from an evenly spaced sample of the training
        images, decoded exactly as the pipeline decodes them.
        """
        root = self.root
        classes = folder_classes(root)
        paths, _ = folder_files(root, "train")
        sample = paths[:: max(1, len(paths) // _STATS_SAMPLE)]
        decoded = tf.data.Dataset.from_tensor_slices(sample).map(
            lambda path: tf.shape(decode_image(path, 0)), num_parallel_calls=tf.data.AUTOTUNE
        )
        shapes = {tuple(s) for s in decoded.as_numpy_iterator()}
        channels = 1 if all(c in (1, 2) for _, _, c in shapes) else 3
        if image_size is not None:
            height = width = image_size
        elif len({s[:2] for s in shapes}) == 1:
            height, width = next(iter(shapes))[:2]
        else:
            height = width = _DEFAULT_SIZE
        pixels = tf.data.Dataset.from_tensor_slices(sample).map(
            lambda path: _decode_resized(path, height, width, channels),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
        values = np.concatenate(
            [batch.reshape(-1, channels) for batch in pixels.batch(64).as_numpy_iterator()]
        ).astype(np.float64)
        return DatasetSpec(
            name=f"folder:{root}",
            num_classes=len(classes),
            image_shape=(int(height), int(width), channels),
            mean=tuple(values.mean(axis=0).tolist()),
            std=tuple(values.std(axis=0).tolist()),
            eval_split=folder_eval_split(root),
            recipe="small",
        )

    def check(self):
        """>= 2 classes, none empty, test classes among the training ones, images decodable.

        Every image is decoded once, in parallel, before the first step; the verdict
        is cached under the list of files with their sizes and modification times
        (see `cache_dir`), so rerunning on unchanged files costs only a `stat` of
        each. The alternative, failing at the first bad file met while training,
        would lose the epoch in progress and name one bad file per attempt, whereas
        one pass names all of them. That pass costs less than an epoch of reading,
        which decodes every image too (docs/RELIABILITY.md gives the measured rate).
        """
        root = self.root
        classes = folder_classes(root)
        paths, labels = folder_files(root, "train")
        counts = np.bincount(labels, minlength=len(classes))
        empty = [classes[c] for c in np.flatnonzero(counts == 0)]
        train_dir = os.path.join(root, "train")
        if empty:
            class_root = train_dir if os.path.isdir(train_dir) else root
            raise ValueError(
                f"The class folders {_listing([os.path.join(class_root, c) for c in empty])} "
                "have no training images — add .jpg/.jpeg/.png images to them or remove them "
                "(every sub-folder is a class)"
            )
        if len(classes) < 2:
            raise ValueError(
                f"{root} has one class ({classes[0]}) — a classifier needs at least 2 classes; "
                "add a sub-folder of images for each other class"
            )
        eval_split = folder_eval_split(root)
        if os.path.isdir(train_dir):
            test_dir = os.path.join(root, eval_split)
            extra = sorted(
                e.name for e in os.scandir(test_dir) if e.is_dir() and e.name not in classes
            )
            if extra:
                raise ValueError(
                    f"{test_dir} has class folders that {train_dir} lacks: "
                    f"{_listing(extra)} — test only classes the training split has: add "
                    "training images of them or remove them from the test split"
                )
        test_paths, _ = folder_files(root, eval_split)
        check_decodable(paths + test_paths, root)

    def num_examples(self, split_name):
        return len(folder_files(self.root, split_name)[0])

    def examples(self, spec, split_name, *, training, seed):
        paths, labels = folder_files(self.root, split_name)
        ds = tf.data.Dataset.from_tensor_slices((paths, labels))
        height, width, channels = spec.image_shape
        return shuffled(ds, len(paths), training=training, seed=seed).map(
            lambda path, label: (_decode_resized(path, height, width, channels), label),
            num_parallel_calls=tf.data.AUTOTUNE,
        )

    def class_names(self, spec):
        """The class sub-folders' names."""
        return folder_classes(self.root)


def folder_eval_split(root: str) -> str:
    """The folder's test split: its test/ or val/ sub-directory ("test" when held out)."""
    return next((s for s in ("test", "val") if os.path.isdir(os.path.join(root, s))), "test")


def folder_classes(root: str) -> list[str]:
    """Returns the class names: the sub-folders of train/ (or of root), sorted."""
    train_dir = os.path.join(root, "train")
    class_root = train_dir if os.path.isdir(train_dir) else root
    if not os.path.isdir(class_root):
        raise FileNotFoundError(
            f"Image folder {root} does not exist — pass a directory with one sub-folder "
            "of images per class"
        )
    if class_root == root and any(os.path.isdir(os.path.join(root, s)) for s in ("test", "val")):
        raise FileNotFoundError(
            f"{root} has a test/ or val/ sub-directory but no train/ — add train/ "
            "with one sub-folder per class"
        )
    classes = sorted(e.name for e in os.scandir(class_root) if e.is_dir())
    if not classes:
        raise ValueError(
            f"{class_root} has no class sub-folders — put each class's images "
            "in a sub-folder named after the class"
        )
    return classes


def folder_files(root: str, split_name: str) -> tuple[list[str], list[int]]:
    """Lists a folder split's image paths and labels, in a fixed order.

    Without a train/ sub-directory, each class holds out its 10 % of images
    whose names hash lowest (at least one image, for classes with two or more)
    as the test split, the same images every run.
    """
    classes = folder_classes(root)
    split_dir = os.path.join(root, split_name)
    held_out = not os.path.isdir(os.path.join(root, "train"))
    if not held_out and not os.path.isdir(split_dir):
        raise FileNotFoundError(
            f"{root} has a train/ sub-directory but no {split_name}/ — add a "
            "test/ (or val/) sub-directory with the same class sub-folders"
        )
    paths, labels = [], []
    for label, class_name in enumerate(classes):
        class_dir = os.path.join(root if held_out else split_dir, class_name)
        if not os.path.isdir(class_dir):
            continue
        names = sorted(
            e.name
            for e in os.scandir(class_dir)
            if e.is_file() and e.name.lower().endswith(_IMAGE_EXTENSIONS)
        )
        if held_out:
            by_hash = sorted(names, key=lambda n: zlib.crc32(n.encode()))
            count = max(1, round(_HELD_OUT_FRACTION * len(names))) if len(names) > 1 else 0
            test = set(by_hash[:count])
            names = [n for n in names if (n in test) == (split_name != "train")]
        paths += [os.path.join(class_dir, n) for n in names]
        labels += [label] * len(names)
    if not paths:
        raise ValueError(
            f"No {'/'.join(_IMAGE_EXTENSIONS)} images for split {split_name!r} in "
            f"{root} — add images to the class sub-folders"
        )
    return paths, labels


def decode_image(path: tf.Tensor, channels: int) -> tf.Tensor:
    """Reads and decodes one JPEG or PNG (``channels=0`` keeps its own)."""
    return tf.io.decode_image(
        tf.io.read_file(path), channels=channels, expand_animations=False
    )


def _decode_resized(path: tf.Tensor, height: int, width: int, channels: int) -> tf.Tensor:
    """Decodes one image to uint8 (height, width, channels), resizing if needed."""
    image = decode_image(path, channels)
    image.set_shape([None, None, channels])
    return tf.cond(
        tf.reduce_all(tf.shape(image)[:2] == [height, width]),
        lambda: image,
        lambda: tf.saturate_cast(
            tf.round(tf.image.resize(image, [height, width], antialias=True)), tf.uint8
        ),
    )


def check_decodable(paths: list[str], root: str) -> None:
    """Raises ValueError naming the files of `paths` that cannot be read and decoded as images."""
    marker = os.path.join(cache_dir(), f"decodable-{_files_digest(paths)}.json")
    if os.path.exists(marker):
        return
    decoded = (
        tf.data.Dataset.from_tensor_slices(paths)
        .map(
            lambda path: (path, tf.shape(decode_image(path, 0))),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
        .ignore_errors()  # Drops the files that fail, which are then missing below.
        .batch(_DECODE_BATCH)
    )
    good = {path.decode() for batch, _ in decoded.as_numpy_iterator() for path in batch}
    bad = [path for path in paths if path not in good]
    if bad:
        what = bad[0] if len(bad) == 1 else f"{len(bad)} files: {_listing(bad)}"
        raise ValueError(
            f"{what} in {root} cannot be read as an image ({len(bad)} of {len(paths)}) — "
            "replace or delete the file(s): every .jpg/.jpeg/.png file in a class "
            "folder is decoded"
        )
    try:
        os.makedirs(os.path.dirname(marker), exist_ok=True)
        run_dir.write_json(marker, {"root": root, "images": len(paths)})
    except OSError:
        pass  # Only a cache: the check reruns next time.


def cache_dir() -> str:
    """Where verdicts of `check_decodable` are kept.

    $KERAS_FFL_CACHE_DIR, else keras_ffl/ in $XDG_CACHE_HOME (default ~/.cache).
    """
    if os.environ.get("KERAS_FFL_CACHE_DIR"):
        return os.environ["KERAS_FFL_CACHE_DIR"]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "keras_ffl")


def _files_digest(paths: list[str]) -> str:
    """A digest of the paths with their sizes and modification times."""
    digest = hashlib.sha256(f"v{_DECODE_CHECK_VERSION}\n".encode())
    for path in paths:
        stat = os.stat(path)
        digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def _listing(items: list) -> str:
    """The first few items, and how many more."""
    shown = ", ".join(str(item) for item in items[:_LISTED_FILES])
    more = len(items) - _LISTED_FILES
    return shown + (f" and {more} more" if more > 0 else "")


register_source("folder:<dir>", FolderSource)
