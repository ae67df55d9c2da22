"""Checks that a dataset can train and test a classifier, run before anything trains.

`check_dataset` reads every split a run will read and raises an error naming
the file and the fix ("<what> — <how to fix it>") for what would otherwise
surface mid-training as a TensorFlow traceback, or not at all: a split that is
missing or unreadable, fewer than 2 classes, a class without training images,
test labels or class folders the training split does not have, images that
cannot be decoded.
"""

import hashlib
import os

import numpy as np
import tensorflow as tf

from keras_ffl import data, run_dir

#: Bumped when the decoding check changes, so that older verdicts no longer count.
_DECODE_CHECK_VERSION = 1
_LISTED_FILES = 3
_BATCH = 256


def check_dataset(name, data_dir=None):
    """Raises ValueError or FileNotFoundError if dataset `name` cannot train a classifier.

    `name` and `data_dir` are as `data.get_spec` takes them. TFDS datasets are
    only checked to be prepared (their labels are right by construction).
    """
    if name.startswith("folder:"):
        check_folder(os.path.abspath(name.removeprefix("folder:")))
    elif name.startswith("idx:"):
        check_idx(os.path.abspath(name.removeprefix("idx:")))
    elif name == "fashion_mnist":
        check_idx(data.fashion_mnist_dir(data_dir))
    else:
        spec = data.get_spec(name, data_dir)
        for split in ("train", "test"):
            data.num_examples(spec, split, data_dir)  # Fails fast when it is not prepared.


def check_idx(directory):
    """Checks an IDX dataset: counts per split, labels 0..n-1 all trained, test labels < n."""
    train_images, train_labels = data.read_idx_split(directory, "train")
    test_images, test_labels = data.read_idx_split(directory, "test")
    train_file = data.idx_files(directory, "train")[1]
    test_images_file, test_file = data.idx_files(directory, "test")
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


def check_folder(root):
    """Checks an image folder: >= 2 classes, none empty, test classes trained, images decodable.

    Every image is decoded once, in parallel, before the first step; the verdict
    is cached under the list of files with their sizes and modification times
    (see `cache_dir`), so rerunning on unchanged files costs only a `stat` of
    each. The alternative, failing at the first bad file met while training,
    would lose the epoch in progress and name one bad file per attempt, whereas
    one pass names all of them. That pass costs less than an epoch of reading,
    which decodes every image too (docs/RELIABILITY.md gives the measured rate).
    """
    classes = data.folder_classes(root)
    paths, labels = data.folder_files(root, "train")
    counts = np.bincount(labels, minlength=len(classes))
    empty = [classes[c] for c in np.flatnonzero(counts == 0)]
    train_dir = os.path.join(root, "train")
    if empty:
        class_root = train_dir if os.path.isdir(train_dir) else root
        raise ValueError(
            f"The class folders {_listing([os.path.join(class_root, c) for c in empty])} have "
            "no training images — add .jpg/.jpeg/.png images to them or remove them (every "
            "sub-folder is a class)"
        )
    if len(classes) < 2:
        raise ValueError(
            f"{root} has one class ({classes[0]}) — a classifier needs at least 2 classes; "
            "add a sub-folder of images for each other class"
        )
    eval_split = data.folder_eval_split(root)
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
    test_paths, _ = data.folder_files(root, eval_split)
    check_decodable(paths + test_paths, root)


def check_decodable(paths, root):
    """Raises ValueError naming the files of `paths` that cannot be read and decoded as images."""
    marker = os.path.join(cache_dir(), f"decodable-{_files_digest(paths)}.json")
    if os.path.exists(marker):
        return
    decoded = (
        tf.data.Dataset.from_tensor_slices(paths)
        .map(
            lambda path: (path, tf.shape(data.decode_image(path, 0))),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
        .ignore_errors()  # Drops the files that fail, which are then missing below.
        .batch(_BATCH)
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


def cache_dir():
    """Where verdicts of `check_decodable` are kept.

    $KERAS_FFL_CACHE_DIR, else keras_ffl/ in $XDG_CACHE_HOME (default ~/.cache).
    """
    if os.environ.get("KERAS_FFL_CACHE_DIR"):
        return os.environ["KERAS_FFL_CACHE_DIR"]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "keras_ffl")


def _files_digest(paths):
    """A digest of the paths with their sizes and modification times."""
    digest = hashlib.sha256(f"v{_DECODE_CHECK_VERSION}\n".encode())
    for path in paths:
        stat = os.stat(path)
        digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def _labels(values):
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


def _listing(items):
    shown = ", ".join(str(item) for item in items[:_LISTED_FILES])
    more = len(items) - _LISTED_FILES
    return shown + (f" and {more} more" if more > 0 else "")
