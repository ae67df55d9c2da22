"""Input pipelines: the datasets FFL trains on, as normalised tf.data batches.

Every pipeline keeps images as uint8 while it reads, shuffles and augments
them, then yields ``(float32 images, int32 labels)`` batches normalised with
the dataset's per-channel mean and std (in 0..255 pixel units). Sources are
TFDS (CIFAR-10/100, ImageNet), MNIST-format IDX files (Fashion-MNIST from
Debian's ``dataset-fashion-mnist``, or ``idx:<dir>``) and a directory with one
sub-folder of images per class (``folder:<dir>``).
"""

from __future__ import annotations

import dataclasses
import functools
import gzip
import os
import struct
import zlib

import keras
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"

_PAD = 4  # Pixels of reflect padding before the random crop (paper recipe).
_IMAGENET_RESIZE = 256
_IMAGENET_CROP = 224
_IMAGENET_SHUFFLE_BUFFER = 10_000  # Encoded JPEGs, about 1 GiB.
_IDX_STATS_SAMPLE = 10_000
_FOLDER_STATS_SAMPLE = 512
_FOLDER_DEFAULT_SIZE = 32
_HELD_OUT_FRACTION = 0.1
_IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
_IDX_NAMES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """What the model and the pipeline need to know about one dataset.

    ``image_shape`` is (H, W, C) as fed to the model; ``mean`` and ``std`` are
    per channel in 0..255 pixel units; ``recipe`` ("cifar", "imagenet" or
    "small") names the training recipe; ``random_flip`` says whether a mirrored
    image is still an example of its class.
    """

    name: str
    num_classes: int
    image_shape: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    train_split: str = "train"
    eval_split: str = "test"
    recipe: str = "cifar"
    random_flip: bool = True


_REGISTRY = {
    spec.name: spec
    for spec in (
        DatasetSpec(
            "cifar10", 10, (32, 32, 3), (125.3, 123.0, 113.9), (63.0, 62.1, 66.7)
        ),
        DatasetSpec(
            "cifar100", 100, (32, 32, 3), (129.3, 124.1, 112.4), (68.2, 65.4, 70.4)
        ),
        DatasetSpec(
            "imagenet2012",
            1000,
            (_IMAGENET_CROP, _IMAGENET_CROP, 3),
            (0.485 * 255, 0.456 * 255, 0.406 * 255),
            (0.229 * 255, 0.224 * 255, 0.225 * 255),
            eval_split="validation",
            recipe="imagenet",
        ),
        # Mean and std of the 60000 training images. Clothes are mirror
        # symmetric, so flips are kept (as is customary for Fashion-MNIST).
        DatasetSpec("fashion_mnist", 10, (28, 28, 1), (72.94,), (90.02,), recipe="small"),
    )
}
_TFDS_DATASETS = ("cifar10", "cifar100", "imagenet2012")


def get_spec(
    name: str, data_dir: str | None = None, *, image_size: int | None = None
) -> DatasetSpec:
    """Returns the facts of dataset `name`.

    `name` is a registered dataset, ``folder:<dir>`` or ``idx:<dir>``; for the
    last two the classes, image shape, mean and std are read from the training
    data. `image_size` resizes ``folder:`` images to that square size (default:
    their own size if all sampled images share it, else 32). `data_dir` is
    accepted so that every function here takes the same arguments; the facts of
    registered datasets do not depend on it.
    """
    del data_dir
    if name.startswith("folder:"):
        return _folder_spec(name.removeprefix("folder:"), image_size)
    if name.startswith("idx:"):
        return _idx_spec(name.removeprefix("idx:"))
    if name not in _REGISTRY:
        known = ", ".join([*sorted(_REGISTRY), "folder:<dir>", "idx:<dir>"])
        raise ValueError(f"Unknown dataset {name!r} — use one of: {known}")
    return _REGISTRY[name]


def make_dataset(
    spec: DatasetSpec,
    split: str,
    batch_size: int,
    *,
    data_dir: str | None = None,
    training: bool,
    seed: int | None = None,
    drop_remainder: bool = False,
) -> tf.data.Dataset:
    """Returns batches ``(images float32 (x - mean) / std, labels int32)``.

    `split` is "train" or "test" (the spec's evaluation split, e.g. ImageNet's
    "validation"). With `training`, examples are shuffled (seeded by `seed`)
    and augmented by the spec's recipe; otherwise the order is fixed and the
    images are left as they are, so that two passes give identical batches.
    """
    split_name = _split_name(spec, split)
    ds = _examples(spec, split_name, data_dir, training=training, seed=seed)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    mean = tf.constant(spec.mean, tf.float32)
    std = tf.constant(spec.std, tf.float32)

    def normalise(images, labels):
        return (tf.cast(images, tf.float32) - mean) / std, tf.cast(labels, tf.int32)

    if training and spec.recipe != "imagenet":  # ImageNet crops per example.
        ds = _with_seeds(ds, seed).map(
            lambda batch, batch_seed: normalise(
                _random_crop_flip(batch[0], batch_seed, spec.random_flip), batch[1]
            ),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
    else:
        ds = ds.map(normalise, num_parallel_calls=tf.data.AUTOTUNE)
    options = tf.data.Options()
    options.deterministic = not training
    return ds.with_options(options).prefetch(tf.data.AUTOTUNE)


def num_examples(spec: DatasetSpec, split: str, data_dir: str | None = None) -> int:
    """Returns how many examples `split` ("train" or "test") of `spec` holds."""
    split_name = _split_name(spec, split)
    if spec.name.startswith("folder:"):
        return len(folder_files(spec.name.removeprefix("folder:"), split_name)[0])
    if spec.name in _TFDS_DATASETS:
        ds = _tfds_split(spec, split_name, data_dir, training=False, seed=None)
        return int(ds.cardinality())
    return len(_idx_arrays(spec, split_name, data_dir)[1])


#: Fashion-MNIST's labels 0..9, as its authors name them.
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip


def class_names(spec: DatasetSpec, data_dir: str | None = None) -> list[str]:
    """Returns the name of each class, indexed by label, for captions and reports.

    Fashion-MNIST has its ten names, ``folder:`` datasets their sub-folders'
    names, TFDS datasets the names their prepared info records; otherwise
    (``idx:``, or TFDS data that is not prepared) the labels' numbers.
    """
    numbers = [str(label) for label in range(spec.num_classes)]
    if spec.name == "fashion_mnist":
        return list(FASHION_MNIST_CLASSES)
    if spec.name.startswith("folder:"):
        return folder_classes(spec.name.removeprefix("folder:"))
    if spec.name in _TFDS_DATASETS:
        try:
            names = list(tfds.builder(spec.name, data_dir=data_dir).info.features["label"].names)
        except (OSError, ValueError, KeyError):  # A damaged prepared dataset: use numbers.
            return numbers
        return names if len(names) == spec.num_classes else numbers
    return numbers


def normalization_layer(spec: DatasetSpec) -> keras.layers.Normalization:
    """Returns a layer mapping 0..255 images (uint8 or float) to model inputs.

    It computes the same ``(x - mean) / std`` as the pipeline, so an exported
    model can take raw pixels.
    """
    return keras.layers.Normalization(
        mean=list(spec.mean),
        variance=[s * s for s in spec.std],
        name=f"{_layer_name(spec.name)}_normalization",
    )


def _layer_name(name: str) -> str:
    """Turns a dataset name (possibly a path) into a valid layer name."""
    return "".join(c if c.isalnum() else "_" for c in name).strip("_")


def _split_name(spec: DatasetSpec, split: str) -> str:
    """Maps the role "train"/"test" to the dataset's own split name."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r} — pass one of them")
    return spec.train_split if split == "train" else spec.eval_split


def _examples(
    spec: DatasetSpec,
    split_name: str,
    data_dir: str | None,
    *,
    training: bool,
    seed: int | None,
) -> tf.data.Dataset:
    """Returns the uint8 ``(image, label)`` examples, shuffled when training.

    Small datasets are shuffled over the whole split; folders shuffle file
    names before decoding so that no decoded split has to fit in memory.
    """

    def shuffled(ds, buffer_size):
        if not training:
            return ds
        return ds.shuffle(buffer_size, seed=seed, reshuffle_each_iteration=True)

    if spec.name.startswith("folder:"):
        paths, labels = folder_files(spec.name.removeprefix("folder:"), split_name)
        ds = shuffled(tf.data.Dataset.from_tensor_slices((paths, labels)), len(paths))
        height, width, channels = spec.image_shape
        return ds.map(
            lambda path, label: (_decode_resized(path, height, width, channels), label),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
    if spec.name == "imagenet2012":
        ds = _tfds_split(spec, split_name, data_dir, training=training, seed=seed)
        ds = shuffled(ds, _IMAGENET_SHUFFLE_BUFFER)
        if training:
            return _with_seeds(ds, seed).map(
                lambda example, example_seed: (
                    _imagenet_image(example[0], example_seed),
                    example[1],
                ),
                num_parallel_calls=tf.data.AUTOTUNE,
            )
        return ds.map(
            lambda image, label: (_imagenet_image(image, None), label),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
    if spec.name in _TFDS_DATASETS:
        ds = _tfds_split(spec, split_name, data_dir, training=training, seed=seed)
        return shuffled(ds.cache(), int(ds.cardinality()))
    # IDX arrays are already decoded in memory: nothing to cache.
    images, labels = _idx_arrays(spec, split_name, data_dir)
    return shuffled(tf.data.Dataset.from_tensor_slices((images, labels)), len(labels))


def _with_seeds(ds: tf.data.Dataset, seed: int | None) -> tf.data.Dataset:
    """Pairs every element with a fresh stateless-RNG seed (new each epoch)."""
    seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
    return tf.data.Dataset.zip(ds, seeds.batch(2))


def _random_crop_flip(images: tf.Tensor, seed: tf.Tensor, flip: bool) -> tf.Tensor:
    """Crops each image of a batch at its own offset in its 4-pixel reflect padding.

    The result equals ``tf.pad(..., "REFLECT")`` then a random crop per image,
    but reads the crops straight from the batch with two gathers over
    reflected indices: on CPU that beats both padding first and cropping each
    example in its own map call. With `flip`, half of the crops are mirrored
    by reading their columns backwards.
    """
    shape = tf.shape(images)
    batch, height, width = shape[0], shape[1], shape[2]
    row_seed, col_seed, flip_seed = tf.unstack(
        tf.random.experimental.stateless_split(seed, 3)
    )
    top = tf.random.stateless_uniform(
        [batch, 1], row_seed, minval=-_PAD, maxval=_PAD + 1, dtype=tf.int32
    )
    left = tf.random.stateless_uniform(
        [batch, 1], col_seed, minval=-_PAD, maxval=_PAD + 1, dtype=tf.int32
    )
    rows = top + tf.range(height)[tf.newaxis]
    cols = left + tf.range(width)[tf.newaxis]
    if flip:
        mirrored = tf.random.stateless_uniform([batch, 1], flip_seed) < 0.5
        cols = tf.where(mirrored, tf.reverse(cols, axis=[1]), cols)
    crops = tf.gather(images, _reflect(rows, height), axis=1, batch_dims=1)
    crops = tf.gather(crops, _reflect(cols, width), axis=2, batch_dims=1)
    return tf.ensure_shape(crops, images.shape)


def _reflect(index: tf.Tensor, size: tf.Tensor) -> tf.Tensor:
    """Maps indices in (-size, 2 * size - 1) into [0, size) as REFLECT padding does."""
    return (size - 1) - tf.abs((size - 1) - tf.abs(index))


def _imagenet_image(encoded: tf.Tensor, seed: tf.Tensor | None) -> tf.Tensor:
    """Decodes a JPEG, resizes its shorter side to 256 and crops 224 x 224.

    With a `seed` the crop is random and half of the crops are mirrored (the
    paper's training recipe); without, it is the centre crop used to evaluate.
    """
    image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
    size = tf.cast(tf.shape(image)[:2], tf.float32)
    new_size = tf.cast(tf.round(size * _IMAGENET_RESIZE / tf.reduce_min(size)), tf.int32)
    image = tf.image.resize(image, tf.maximum(new_size, _IMAGENET_RESIZE), antialias=True)
    crop = [_IMAGENET_CROP, _IMAGENET_CROP, 3]
    if seed is None:
        top, left = tf.unstack((tf.shape(image)[:2] - _IMAGENET_CROP) // 2)
        image = tf.image.crop_to_bounding_box(image, top, left, *crop[:2])
    else:
        crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
        image = tf.image.stateless_random_crop(image, crop, crop_seed)
        image = tf.image.stateless_random_flip_left_right(image, flip_seed)
    return tf.saturate_cast(tf.round(image), tf.uint8)


# TFDS ----------------------------------------------------------------------


def _tfds_split(
    spec: DatasetSpec,
    split_name: str,
    data_dir: str | None,
    *,
    training: bool,
    seed: int | None,
) -> tf.data.Dataset:
    """Returns a prepared TFDS split as ``(image, label)``, never downloading.

    `as_dataset` checks that the prepared directory exists and fails in
    milliseconds when it does not (``tfds.testing.mock_data`` replaces that
    check along with the data); `download_and_prepare`, whose download retries
    take minutes offline, is never called.
    """
    builder = tfds.builder(spec.name, data_dir=data_dir)
    decoders = {"image": tfds.decode.SkipDecoding()} if spec.recipe == "imagenet" else None
    try:
        return builder.as_dataset(
            split=split_name,
            shuffle_files=training,
            as_supervised=True,
            decoders=decoders,
            read_config=tfds.ReadConfig(shuffle_seed=seed, try_autocache=False),
        )
    except AssertionError as err:
        raise FileNotFoundError(_missing_tfds_message(spec.name, builder)) from err


def _missing_tfds_message(name: str, builder: tfds.core.DatasetBuilder) -> str:
    """Says where TFDS looked for `name` and how to supply it offline."""
    root = os.fspath(builder.data_dir_root)
    found = (
        f"TFDS dataset {name!r} is not prepared in data_dir {root} "
        f"(looked for {builder.data_dir}) —"
    )
    if name == "imagenet2012":
        manual = os.path.join(root, "downloads", "manual")
        return (
            f"{found} put ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar in "
            f"{manual} and run `tfds build imagenet2012 --data_dir={root} "
            f"--manual_dir={manual}`, or pass --data_dir=<dir holding a prepared "
            f"imagenet2012/>"
        )
    return (
        f"{found} this machine cannot download it: on a machine with internet run "
        f"`tfds build {name} --data_dir=DIR`, copy DIR/{name} to {root}/{name}, "
        f"or pass --data_dir=<dir holding a prepared {name}/>"
    )


# IDX files -------------------------------------------------------------------


def _idx_spec(directory: str) -> DatasetSpec:
    """Reads the classes, shape, mean and std of an IDX dataset's train split."""
    directory = os.path.abspath(directory)
    images, labels = read_idx_split(directory, "train")
    sample = images[:: max(1, len(images) // _IDX_STATS_SAMPLE)].astype(np.float64)
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


def _idx_arrays(
    spec: DatasetSpec, split_name: str, data_dir: str | None
) -> tuple[np.ndarray, np.ndarray]:
    """Returns the images and labels of an IDX-backed dataset's split."""
    if spec.name.startswith("idx:"):
        return read_idx_split(spec.name.removeprefix("idx:"), split_name)
    return read_idx_split(fashion_mnist_dir(data_dir), split_name)


def fashion_mnist_dir(data_dir: str | None) -> str:
    """Finds Fashion-MNIST's IDX files: in `data_dir` first, then Debian's."""
    candidates = [d for d in (data_dir, FASHION_MNIST_DIR) if d]
    for directory in candidates:
        if all(
            _idx_path(directory, name) for names in _IDX_NAMES.values() for name in names
        ):
            return directory
    raise FileNotFoundError(
        f"Fashion-MNIST's IDX files were not found in {' or '.join(candidates)} — "
        "run `apt-get install dataset-fashion-mnist` (puts them in "
        f"{FASHION_MNIST_DIR}), or pass --data_dir=<dir holding "
        "train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, "
        "t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz>."
    )


def _idx_path(directory: str, name: str) -> str | None:
    """Returns the path of IDX file `name`, gzipped or not, if it exists."""
    for path in (os.path.join(directory, name), os.path.join(directory, name + ".gz")):
        if os.path.isfile(path):
            return path
    return None


def idx_files(directory: str, split_name: str) -> tuple[str, str]:
    """The paths of one split's IDX images and labels files in `directory`."""
    paths = [_idx_path(directory, name) for name in _IDX_NAMES[split_name]]
    if None in paths:
        raise FileNotFoundError(
            f"No IDX files for split {split_name!r} in {directory} — add "
            f"{' and '.join(_IDX_NAMES[split_name])} (optionally ending in .gz)"
        )
    return paths[0], paths[1]


@functools.lru_cache(maxsize=4)
def read_idx_split(directory: str, split_name: str) -> tuple[np.ndarray, np.ndarray]:
    """Reads one split's images (N, H, W, C) and labels (N,) from IDX files.

    Cached because the checks, the spec, the example count and the pipeline all
    read the same split; the arrays are read-only.
    """
    paths = idx_files(directory, split_name)
    images = _read_idx(paths[0], ndims=(3, 4))
    labels = _read_idx(paths[1], ndims=(1,))
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


def _read_idx(path: str, ndims: tuple[int, ...]) -> np.ndarray:
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


# Image folders ---------------------------------------------------------------


def _folder_spec(root: str, image_size: int | None) -> DatasetSpec:
    """Reads the classes, image shape, mean and std of an image folder.

    Shape and statistics come from an evenly spaced sample of the training
    images, decoded exactly as the pipeline decodes them.
    """
    root = os.path.abspath(root)
    classes = folder_classes(root)
    eval_split = folder_eval_split(root)
    paths, _ = folder_files(root, "train")
    sample = paths[:: max(1, len(paths) // _FOLDER_STATS_SAMPLE)]
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
        height = width = _FOLDER_DEFAULT_SIZE
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
        eval_split=eval_split,
        recipe="small",
    )


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
