"""The pipeline every dataset shares: a source's examples, augmented, batched, normalised.

It keeps images as uint8 while the source reads and shuffles them and the
recipe augments them, then yields ``(float32 images, int32 labels)`` batches
normalised with the dataset's per-channel mean and std (in 0..255 pixel units).
"""

from __future__ import annotations

import keras
import tensorflow as tf

from keras_ffl.data import augment
from keras_ffl.data.base import DatasetSpec, get_source


def make_dataset(
    spec: DatasetSpec,
    split: str,
    batch_size: int,
    *,
    data_dir: str | None = None,
    training: bool,
    seed: int | None = None,
    drop_remainder: bool = False,
    deterministic: bool | None = None,
) -> tf.data.Dataset:
    """Returns batches ``(images float32 (x - mean) / std, labels int32)``.

    `split` is "train" or "test" (the spec's evaluation split, e.g. ImageNet's
    "validation"). With `training`, examples are shuffled (seeded by `seed`)
    and augmented by the spec's recipe; otherwise the order is fixed and the
    images are left as they are, so that two passes give identical batches.
    A training pipeline may deliver its parallel maps' results out of order, unless
    `deterministic` (default: not `training`).
    """
    split_name = spec.split_name(split)
    ds = get_source(spec.name, data_dir).examples(spec, split_name, training=training, seed=seed)
    per_example = spec.recipe == "imagenet"  # Images of their own sizes, cropped one by one.
    if per_example:
        ds = _imagenet_crops(ds, spec.image_shape[0], training=training, seed=seed)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    mean = tf.constant(spec.mean, tf.float32)
    std = tf.constant(spec.std, tf.float32)

    def normalise(images, labels):
        return (tf.cast(images, tf.float32) - mean) / std, tf.cast(labels, tf.int32)

    if training and not per_example:
        ds = augment.with_seeds(ds, seed).map(
            lambda batch, batch_seed: normalise(
                augment.random_crop_flip(batch[0], batch_seed, spec.random_flip), batch[1]
            ),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
    else:
        ds = ds.map(normalise, num_parallel_calls=tf.data.AUTOTUNE)
    options = tf.data.Options()
    options.deterministic = not training if deterministic is None else deterministic
    return ds.with_options(options).prefetch(tf.data.AUTOTUNE)


def _imagenet_crops(
    ds: tf.data.Dataset, size: int, *, training: bool, seed: int | None
) -> tf.data.Dataset:
    """Crops every example to `size` x `size`: at random when training, else centred."""
    if training:
        return augment.with_seeds(ds, seed).map(
            lambda example, example_seed: (
                augment.imagenet_crop(example[0], size, example_seed),
                example[1],
            ),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
    return ds.map(
        lambda image, label: (augment.imagenet_crop(image, size, None), label),
        num_parallel_calls=tf.data.AUTOTUNE,
    )


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
