"""TensorFlow Datasets' CIFAR-10, CIFAR-100 and ImageNet, read from prepared data only.

This machine cannot download them: `as_dataset` checks that the prepared
directory exists and fails in milliseconds when it does not
(``tfds.testing.mock_data`` replaces that check along with the data);
`download_and_prepare`, whose download retries take minutes offline, is never
called.
"""

from __future__ import annotations

import os

import tensorflow as tf
import tensorflow_datasets as tfds

from keras_ffl.data.base import (
    DatasetSpec,
    DataSource,
    MissingDataError,
    register_source,
    shuffled,
)

_IMAGENET = "imagenet2012"
_IMAGENET_CROP = 224
_IMAGENET_SHUFFLE_BUFFER = 10_000  # Encoded JPEGs, about 1 GiB.

_SPECS = {
    spec.name: spec
    for spec in (
        DatasetSpec(
            "cifar10", 10, (32, 32, 3), (125.3, 123.0, 113.9), (63.0, 62.1, 66.7)
        ),
        DatasetSpec(
            "cifar100", 100, (32, 32, 3), (129.3, 124.1, 112.4), (68.2, 65.4, 70.4)
        ),
        DatasetSpec(
            _IMAGENET,
            1000,
            (_IMAGENET_CROP, _IMAGENET_CROP, 3),
            (0.485 * 255, 0.456 * 255, 0.406 * 255),
            (0.229 * 255, 0.224 * 255, 0.225 * 255),
            eval_split="validation",
            recipe="imagenet",
        ),
    )
}


class TfdsSource(DataSource):
    """A prepared TFDS dataset in `data_dir` (default: TFDS's own, ~/tensorflow_datasets).

    Small datasets are cached decoded and shuffled over the whole split;
    ImageNet is shuffled as encoded JPEGs and decoded afterwards, at its
    images' own sizes (the recipe crops them).
    """

    def spec(self, image_size=None):
        return _SPECS[self.argument]

    def check(self):
        """Only checks that both splits are prepared: TFDS's labels are right by construction."""
        spec = self.spec()
        for split in ("train", "test"):
            self.num_examples(spec.split_name(split))

    def num_examples(self, split_name):
        return int(self._split(split_name, training=False, seed=None).cardinality())

    def examples(self, spec, split_name, *, training, seed):
        ds = self._split(split_name, training=training, seed=seed)
        if self.argument != _IMAGENET:
            return shuffled(ds.cache(), int(ds.cardinality()), training=training, seed=seed)
        return shuffled(ds, _IMAGENET_SHUFFLE_BUFFER, training=training, seed=seed).map(
            lambda image, label: (
                tf.io.decode_image(image, channels=3, expand_animations=False),
                label,
            ),
            num_parallel_calls=tf.data.AUTOTUNE,
        )

    def class_names(self, spec):
        """The names the prepared dataset's info records, else the labels' numbers."""
        try:
            builder = tfds.builder(self.argument, data_dir=self.data_dir)
            names = list(builder.info.features["label"].names)
        except (OSError, ValueError, KeyError):  # A damaged prepared dataset: use numbers.
            return super().class_names(spec)
        return names if len(names) == spec.num_classes else super().class_names(spec)

    def _split(self, split_name, *, training, seed):
        """A prepared split as ``(image, label)``; ImageNet's images still encoded."""
        builder = tfds.builder(self.argument, data_dir=self.data_dir)
        encoded = self.argument == _IMAGENET
        try:
            return builder.as_dataset(
                split=split_name,
                shuffle_files=training,
                as_supervised=True,
                decoders={"image": tfds.decode.SkipDecoding()} if encoded else None,
                read_config=tfds.ReadConfig(shuffle_seed=seed, try_autocache=False),
            )
        except AssertionError as err:
            raise MissingDataError("data_dir", _missing_message(self.argument, builder)) from err


def _missing_message(name, builder):
    """Says where TFDS looked for `name` and how to supply it offline ("{arg}": data_dir)."""
    root = os.fspath(builder.data_dir_root)
    found = (
        f"TFDS dataset {name!r} is not prepared in {{arg}} {root} "
        f"(looked for {builder.data_dir}) —"
    )
    if name == _IMAGENET:
        manual = os.path.join(root, "downloads", "manual")
        return (
            f"{found} put ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar in "
            f"{manual} and run `tfds build {_IMAGENET} --data_dir={root} "
            f"--manual_dir={manual}`, or pass {{arg}}=<dir holding a prepared {_IMAGENET}/>"
        )
    return (
        f"{found} this machine cannot download it: on a machine with internet run "
        f"`tfds build {name} --data_dir=DIR`, copy DIR/{name} to {root}/{name}, "
        f"or pass {{arg}}=<dir holding a prepared {name}/>"
    )


for _name in _SPECS:
    register_source(_name, TfdsSource)
