"""The training recipes' augmentations on uint8 images, drawn from stateless seeds.

The CIFAR and small recipes crop each image of a batch from its 4-pixel
reflect padding and mirror half of them; the ImageNet recipe resizes each image
to a shorter side of 256 and crops it (at random and mirrored when training,
at the centre to evaluate). Every random choice comes from a seed that
`with_seeds` pairs with the element, so a seeded pipeline is reproducible.
"""

import tensorflow as tf

_PAD = 4  # Pixels of reflect padding before the random crop (paper recipe).
_IMAGENET_RESIZE = 256  # The shorter side before the crop (the ResNet recipe).


def with_seeds(ds: tf.data.Dataset, seed: int | None) -> tf.data.Dataset:
    """Pairs every element with a fresh stateless-RNG seed (new each epoch)."""
    seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
    return tf.data.Dataset.zip(ds, seeds.batch(2))


def random_crop_flip(images: tf.Tensor, seed: tf.Tensor, flip: bool) -> tf.Tensor:
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


def imagenet_crop(image: tf.Tensor, size: int, seed: tf.Tensor | None) -> tf.Tensor:
    """Resizes an image's shorter side to 256 and crops `size` x `size` of it.

    With a `seed` the crop is random and half of the crops are mirrored (the
    paper's training recipe); without, it is the centre crop used to evaluate.
    """
    shape = tf.cast(tf.shape(image)[:2], tf.float32)
    new_size = tf.cast(tf.round(shape * _IMAGENET_RESIZE / tf.reduce_min(shape)), tf.int32)
    image = tf.image.resize(image, tf.maximum(new_size, _IMAGENET_RESIZE), antialias=True)
    if seed is None:
        top, left = tf.unstack((tf.shape(image)[:2] - size) // 2)
        image = tf.image.crop_to_bounding_box(image, top, left, size, size)
    else:
        crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
        image = tf.image.stateless_random_crop(image, [size, size, 3], crop_seed)
        image = tf.image.stateless_random_flip_left_right(image, flip_seed)
    return tf.saturate_cast(tf.round(image), tf.uint8)
