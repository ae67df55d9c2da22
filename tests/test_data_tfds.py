"""Tests for keras_ffl.data.tfds: CIFAR-10/100 and ImageNet from prepared TFDS data.

They run on ``tfds.testing.mock_data``: there is no real TFDS data here.
"""

import re
import time

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from fakedata import batches, pixels

from keras_ffl import data
from keras_ffl.validation import ArgumentError

CIFAR100 = data.get_spec("cifar100")


def test_registry_holds_the_paper_normalisation():
    assert CIFAR100.mean == (129.3, 124.1, 112.4)
    assert CIFAR100.std == (68.2, 65.4, 70.4)
    assert (CIFAR100.num_classes, CIFAR100.image_shape) == (100, (32, 32, 3))
    imagenet = data.get_spec("imagenet2012")
    np.testing.assert_allclose(imagenet.mean, np.array([0.485, 0.456, 0.406]) * 255)
    np.testing.assert_allclose(imagenet.std, np.array([0.229, 0.224, 0.225]) * 255)
    assert (imagenet.eval_split, imagenet.image_shape) == ("validation", (224, 224, 3))


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


def test_imagenet_crops_224_from_any_image_size():
    imagenet = data.get_spec("imagenet2012")
    with tfds.testing.mock_data(num_examples=3):  # Random sizes of 5..50 pixels.
        for training in (True, False):
            images, labels = batches(
                data.make_dataset(imagenet, "test", 2, training=training, seed=0)
            )
            assert images.shape == (3, 224, 224, 3) and images.dtype == np.float32
            assert np.all((labels >= 0) & (labels < 1000))
        test = data.make_dataset(imagenet, "test", 2, training=False)
        np.testing.assert_array_equal(batches(test)[0], batches(test)[0])


def test_imagenet_resizes_shorter_side_to_256_then_crops_224():
    imagenet = data.get_spec("imagenet2012")
    # The shorter side is already 256, so the resize keeps every pixel.
    image = np.random.default_rng(4).integers(0, 256, (300, 256, 3)).astype(np.uint8)

    def one_image(self, *args, **kwargs):
        return tf.data.Dataset.from_tensors(
            {"image": tf.io.encode_png(image), "label": np.int64(7)}
        )

    with tfds.testing.mock_data(as_dataset_fn=one_image):
        (centre,), labels = batches(data.make_dataset(imagenet, "test", 1, training=False))
        train = data.make_dataset(imagenet, "train", 1, training=True, seed=0)
        crops = [pixels(batches(train)[0][0], imagenet) for _ in range(8)]
    np.testing.assert_array_equal(pixels(centre, imagenet), image[38:262, 16:240])
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
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path))):
        data.check_dataset(name, data_dir=str(tmp_path))
    assert time.monotonic() - start < 10
    # The library names the argument; a command shows it as its flag.
    assert isinstance(err.value, ArgumentError) and err.value.argument == "data_dir"
    assert f"or pass data_dir=<dir holding a prepared {name}/>" in str(err.value)
    assert f"or pass --data_dir=<dir holding a prepared {name}/>" in err.value.with_flag()
