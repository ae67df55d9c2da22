"""LiteRT (TFLite) models of a head, for phones and edge devices, verified on real images.

Each model takes uint8 images [batch, H, W, C] as "images", normalises them
inside, and returns the SavedModels' `serving_default` outputs (probabilities,
classes, top-k). A variant trades accuracy for size: float32 (the Keras model's
numbers), float16 weights, dynamic-range int8 weights, or full-integer int8
(weights and activations, calibrated on representative images). Every model is
run with the LiteRT interpreter on real images and compared with the Keras model
before an export installs it, through the same staging and journal as the
SavedModels (`LiteRTFormat`).
"""

import dataclasses
import json
import os
import re
import statistics
import tempfile
import time

import keras
import numpy as np
import tensorflow as tf

from keras_ffl import quiet
from keras_ffl.export import serving
from keras_ffl.export.exporter import ExportVerificationError
from keras_ffl.export.extraction import as_network, extract_head
from keras_ffl.validation import ArgumentError

FLOAT32 = "float32"
FLOAT16 = "float16"
DYNAMIC_INT8 = "dynamic_int8"
INT8 = "int8"
#: The variants, least quantised first.
VARIANTS = (FLOAT32, FLOAT16, DYNAMIC_INT8, INT8)
#: Where an export puts the .tflite files and their verification, inside export_dir.
LITERT_DIR = "litert"
#: The largest |Δp| a float32 model may show against Keras; more is a failed export.
FLOAT32_ATOL = 1e-5
#: Latency is timed on one thread: comparable between machines and under load.
LATENCY_THREADS = 1
_LATENCY_RUNS = 50
_LATENCY_BUDGET_SECONDS = 2.0
_BATCH = 256
_TF_OP = re.compile(r"'tf\.(\w+)' op")


class LiteRTConversionError(ValueError):
    """A head holds an operation LiteRT has no kernel for."""


@dataclasses.dataclass
class LiteRTVerification:
    """A LiteRT model run with the interpreter on `images` labelled images, against Keras.

    Accuracies and agreement are fractions; `max_probability_difference` is the
    largest |Δp| against the Keras model's softmax; `latency_ms` the median time
    of one image on `LATENCY_THREADS` thread(s).
    """

    variant: str
    size_bytes: int
    images: int
    accuracy: float
    keras_accuracy: float
    agreement: float
    max_probability_difference: float
    latency_ms: float

    @property
    def accuracy_drop(self):
        """Keras's top-1 accuracy minus the model's, in percentage points."""
        return 100.0 * (self.keras_accuracy - self.accuracy)


def _interpreter(model_bytes, threads=None):
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError as error:
        raise ImportError(
            "The LiteRT interpreter is not installed — pip install -e '.[litert]' "
            "(the ai-edge-litert package)"
        ) from error
    with quiet.native_chatter_hidden():  # Its "Created … XNNPACK delegate" notice.
        interpreter = Interpreter(model_content=model_bytes, num_threads=threads)
        interpreter.allocate_tensors()
    return interpreter


def check_variant(variant):
    """Raises ArgumentError unless `variant` is one of `VARIANTS`."""
    if variant not in VARIANTS:
        raise ArgumentError(
            "variant",
            f"{{arg}}={variant!r} is not a LiteRT variant — use one of {', '.join(VARIANTS)}",
        )
    return variant


def write_saved_model(classifier, image_shape, mean, std, path):
    """Writes the SavedModel LiteRT converts: uint8 images -> normalise -> `classifier` -> outputs.

    Unlike the served SavedModel it has no run-time shape check (its string ops
    have no LiteRT kernel): a LiteRT model's input shape is fixed in the file.
    """

    def serving_default(images):
        return serving.classify(classifier(serving.scale(images, mean, std), training=False))

    archive = keras.export.ExportArchive()
    archive.track(classifier)
    archive.add_endpoint(
        serving.SERVING_SIGNATURE,
        serving_default,
        input_signature=[serving.image_spec(tuple(image_shape))],
    )
    archive.write_out(path, verbose=False)


def convert_saved_model(path, variant, representative_images=None, what="the model"):
    """The .tflite bytes of the SavedModel at `path` (see `write_saved_model`) in `variant`.

    Only LiteRT's builtin operations are allowed (no TensorFlow fallback, which
    phones do not have); an operation without one raises LiteRTConversionError
    naming it. `INT8` needs `representative_images`, uint8 [n, H, W, C].
    """
    check_variant(variant)
    converter = tf.lite.TFLiteConverter.from_saved_model(path)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if variant != FLOAT32:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if variant == FLOAT16:
        converter.target_spec.supported_types = [tf.float16]
    if variant == INT8:
        if representative_images is None or not len(representative_images):
            raise ArgumentError(
                "representative_images",
                "full-integer int8 needs {arg}: uint8 images of the training split to "
                "calibrate the activations' ranges",
            )
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.representative_dataset = lambda: (
            [image[None]] for image in representative_images
        )
    try:
        with quiet.native_chatter_hidden():  # Its "fully_quantize: …" lines.
            return converter.convert()
    except Exception as error:  # The converter raises several types; all mean "cannot convert".
        ops = sorted(set(_TF_OP.findall(str(error))))
        if not ops:
            raise LiteRTConversionError(
                f"LiteRT cannot convert {what} to {variant}: "
                f"{' '.join(str(error).split())[:300]}"
            ) from error
        raise LiteRTConversionError(
            f"LiteRT cannot convert {what}: TensorFlow op{'s' if len(ops) > 1 else ''} "
            f"{', '.join(ops)} ha{'ve' if len(ops) > 1 else 's'} no LiteRT builtin kernel — "
            "replace the layer that uses it, or ship this head as a SavedModel only"
        ) from None


def run_probabilities(model_bytes, images):
    """The model's probabilities for uint8 `images`, run with the LiteRT interpreter."""
    runner = _interpreter(model_bytes).get_signature_runner(serving.SERVING_SIGNATURE)
    try:
        outputs = [
            runner(**{serving.INPUT_NAME: images[start : start + _BATCH]})["probabilities"]
            for start in range(0, len(images), _BATCH)
        ]
    except RuntimeError as error:  # A conversion LiteRT accepted but cannot run.
        raise LiteRTConversionError(
            f"LiteRT's interpreter cannot run the converted model: {' '.join(str(error).split())} "
            "— replace the layer whose operation fails, or ship this head as a SavedModel only"
        ) from None
    return np.concatenate(outputs).astype(np.float32)


def latency_ms(model_bytes, image):
    """Median milliseconds of one `image` through the interpreter on `LATENCY_THREADS`."""
    runner = _interpreter(model_bytes, LATENCY_THREADS).get_signature_runner(
        serving.SERVING_SIGNATURE
    )
    one = {serving.INPUT_NAME: image[None]}
    runner(**one)  # Allocates the tensors and warms the caches.
    times, started = [], time.perf_counter()
    while len(times) < _LATENCY_RUNS and (
        len(times) < 5 or time.perf_counter() - started < _LATENCY_BUDGET_SECONDS
    ):
        start = time.perf_counter()
        runner(**one)
        times.append(time.perf_counter() - start)
    return 1000.0 * statistics.median(times)


def keras_probabilities(classifier, images, mean, std):
    """The Keras classifier's softmax for uint8 `images`, in batches."""
    outputs = []
    for start in range(0, len(images), _BATCH):
        x = serving.scale(images[start : start + _BATCH], mean, std)
        logits = classifier(x, training=False)
        probabilities = keras.ops.softmax(keras.ops.cast(logits, "float32"))
        outputs.append(keras.ops.convert_to_numpy(probabilities))
    return np.concatenate(outputs)


def verify(model_bytes, variant, expected, images, labels):
    """The `LiteRTVerification` of `model_bytes` against the Keras probabilities `expected`."""
    probabilities = run_probabilities(model_bytes, images)
    predicted, keras_predicted = probabilities.argmax(axis=1), expected.argmax(axis=1)
    return LiteRTVerification(
        variant=variant,
        size_bytes=len(model_bytes),
        images=len(images),
        accuracy=float(np.mean(predicted == labels)),
        keras_accuracy=float(np.mean(keras_predicted == labels)),
        agreement=float(np.mean(predicted == keras_predicted)),
        max_probability_difference=float(np.max(np.abs(probabilities - expected))),
        latency_ms=latency_ms(model_bytes, images[0]),
    )


def _classifier(model, head):
    """The standalone Keras classifier (normalised images -> logits) of `model`'s `head`."""
    if head is None:
        if isinstance(getattr(model, "output", None), dict) or hasattr(model, "network"):
            raise ArgumentError(
                "head", "{arg} is needed for a model of several heads — pass e.g. head='sub1'"
            )
        return model
    return extract_head(as_network(model), head)


def export_litert(
    model,
    variant=FLOAT32,
    *,
    mean,
    std,
    images,
    labels,
    head=None,
    representative_images=None,
):
    """Converts one head (or a standalone classifier) to LiteRT and verifies it on real images.

    Args:
      model: a trained model of any method or its network (then pass `head`), or a
        standalone Keras classifier from normalised images to logits, e.g.
        `extract_subnetwork(model, 1)` or `build_subnetwork(...)`.
      variant: one of `VARIANTS`.
      mean, std: the per-channel normalisation the model was trained with (0..255 units).
      images, labels: uint8 [n, H, W, C] labelled images to verify on, e.g. the test split.
      head: the head of a multi-head model, e.g. "sub1" or "fused".
      representative_images: uint8 [m, H, W, C] training images; needed for `INT8`.

    Returns:
      (the .tflite bytes, its `LiteRTVerification`). Raises LiteRTConversionError
      naming the operation LiteRT cannot convert.
    """
    check_variant(variant)
    classifier = _classifier(model, head)
    images = np.asarray(images, np.uint8)
    with tempfile.TemporaryDirectory() as directory:
        write_saved_model(classifier, images.shape[1:], mean, std, directory)
        model_bytes = convert_saved_model(
            directory, variant, representative_images, what=f"the {head or classifier.name} head"
        )
    expected = keras_probabilities(classifier, images, mean, std)
    return model_bytes, verify(model_bytes, variant, expected, images, np.asarray(labels))


def split_pixels(dataset, split, count=None, *, data_dir=None, sample_seed=None):
    """(uint8 images [n, H, W, C], labels) of `count` images (default all) of a dataset's split.

    In the split's fixed order, or, with `sample_seed`, drawn at random as
    training draws them (shuffled and augmented).
    """
    from keras_ffl import data  # Only here: the rest of the module needs no input pipeline.

    spec = data.get_spec(dataset, data_dir)
    # The same images at every export, even when drawn at random.
    batches = data.make_dataset(
        spec, split, _BATCH, data_dir=data_dir, training=sample_seed is not None,
        seed=sample_seed, deterministic=True,
    )
    if count is not None:
        batches = batches.unbatch().take(count).batch(_BATCH)
    images, labels = [], []
    for batch_images, batch_labels in batches:  # Normalised by the pipeline: back to pixels.
        pixels = batch_images.numpy() * np.float32(spec.std) + np.float32(spec.mean)
        images.append(np.clip(np.rint(pixels), 0, 255).astype(np.uint8))
        labels.append(batch_labels.numpy())
    return np.concatenate(images), np.concatenate(labels)


@dataclasses.dataclass
class LiteRTModel:
    """One head in one variant as an export staged it: its file, figures and fate."""

    head: str
    file_name: str
    verification: LiteRTVerification
    installed: bool


@dataclasses.dataclass
class StagedLiteRT:
    """What `LiteRTFormat.stage` put into the staging directory."""

    paths: list
    models: list
    max_accuracy_drop: float

    def summary(self, export_dir):
        """Lines for people: a table of every head and variant, and what was not installed."""
        first = self.models[0].verification
        width = max(len(model.file_name) for model in self.models)
        lines = [
            f"  LiteRT models in {os.path.join(export_dir, LITERT_DIR)} (uint8 images in; "
            f"verified with the interpreter on {first.images} test images; latency: one image, "
            f"{LATENCY_THREADS} thread):",
            f"    {'model':<{width}} {'KiB':>7} {'acc %':>6} {'Keras %':>7} {'agree %':>7} "
            f"{'max |Δp|':>8} {'ms':>7}",
        ]
        for model in self.models:
            v = model.verification
            note = "" if model.installed else (
                f"  NOT INSTALLED: accuracy drop {v.accuracy_drop:.2f} points > "
                f"{self.max_accuracy_drop:g} (allow_accuracy_drop installs it)"
            )
            lines.append(
                f"    {model.file_name:<{width}} {v.size_bytes / 1024:7.1f} "
                f"{100 * v.accuracy:6.2f} {100 * v.keras_accuracy:7.2f} {100 * v.agreement:7.2f} "
                f"{v.max_probability_difference:8.1e} {v.latency_ms:7.3f}{note}"
            )
        return lines


@dataclasses.dataclass
class LiteRTFormat:
    """The LiteRT export format: every head in `variants`, staged, verified, then installed.

    `export_savedmodels(..., formats=[LiteRTFormat(...)])` calls `stage` inside
    its staging directory, so the .tflite files reach `export_dir/litert/` with
    the SavedModels, through the same journal, or not at all.

    Attributes:
      dataset: the run's dataset (as `keras_ffl.data.get_spec` names it), whose test
        split verifies and whose training split calibrates `INT8`.
      variants: which of `VARIANTS` to write.
      verify_images: verify on the first this many test images; default all.
      representative_images: how many training images calibrate `INT8`.
      max_accuracy_drop: in points; a variant losing more top-1 accuracy than the
        Keras model is reported and left out, unless `allow_accuracy_drop`.
      data_dir: where the dataset's files are (TFDS, or Fashion-MNIST's IDX files).
    """

    dataset: str
    variants: tuple = VARIANTS
    verify_images: int = None
    representative_images: int = 200
    max_accuracy_drop: float = 1.0
    allow_accuracy_drop: bool = False
    data_dir: str = None

    def __post_init__(self):
        for variant in self.variants:
            check_variant(variant)
        for arg in ("verify_images", "representative_images"):
            value = getattr(self, arg)
            if value is not None and not (isinstance(value, int) and value >= 1):
                raise ArgumentError(
                    arg, f"{{arg}}={value!r} is not a positive number of images — pass 1 or more"
                )
        if not self.max_accuracy_drop >= 0:
            raise ArgumentError(
                "max_accuracy_drop",
                f"{{arg}}={self.max_accuracy_drop} is negative — pass points >= 0",
            )

    def stage(self, network, heads, name, stage, *, mean, std, image_shape):
        """Converts and verifies every head in every variant into `stage`; returns `StagedLiteRT`.

        Raises ExportVerificationError (a float32 model differs from Keras by more
        than `FLOAT32_ATOL`) or LiteRTConversionError; nothing is then installed.
        """
        images, labels = split_pixels(
            self.dataset, "test", self.verify_images, data_dir=self.data_dir
        )
        if tuple(images.shape[1:]) != tuple(image_shape):
            raise ArgumentError(
                "dataset",
                f"{{arg}} {self.dataset}'s images are {tuple(images.shape[1:])} but the model "
                f"takes {tuple(image_shape)} — verify on the dataset the run trained on",
            )
        representative = None
        if INT8 in self.variants:
            representative, _ = split_pixels(
                self.dataset, "train", self.representative_images, data_dir=self.data_dir,
                sample_seed=0,
            )
        os.makedirs(os.path.join(stage, LITERT_DIR), exist_ok=True)
        models = []
        for head in heads:
            classifier = extract_head(network, head)
            expected = keras_probabilities(classifier, images, mean, std)
            with tempfile.TemporaryDirectory(dir=stage) as saved_model:
                write_saved_model(classifier, image_shape, mean, std, saved_model)
                for variant in self.variants:
                    file_name = f"{name}_{head}_{variant}.tflite"
                    model_bytes = convert_saved_model(
                        saved_model, variant, representative, what=f"the {head} head"
                    )
                    verification = verify(model_bytes, variant, expected, images, labels)
                    if variant == FLOAT32 and not (
                        verification.max_probability_difference <= FLOAT32_ATOL
                    ):
                        raise ExportVerificationError(
                            f"The float32 LiteRT model of {name}_{head} disagrees with the Keras "
                            f"model: max |Δ| of the probabilities is "
                            f"{verification.max_probability_difference:.3g} > {FLOAT32_ATOL:g} "
                            f"on {len(images)} images. Nothing was exported."
                        )
                    installed = (
                        verification.accuracy_drop <= self.max_accuracy_drop
                        or self.allow_accuracy_drop
                    )
                    if installed:
                        with open(os.path.join(stage, LITERT_DIR, file_name), "wb") as file:
                            file.write(model_bytes)
                    models.append(LiteRTModel(head, file_name, verification, installed))
        report = f"{name}_litert.json"
        with open(os.path.join(stage, LITERT_DIR, report), "w", encoding="utf-8") as file:
            json.dump(
                {
                    "latency_threads": LATENCY_THREADS,
                    "max_accuracy_drop": self.max_accuracy_drop,
                    "models": [
                        {
                            "head": m.head,
                            "file": m.file_name,
                            "installed": m.installed,
                            **dataclasses.asdict(m.verification),
                        }
                        for m in models
                    ],
                },
                file,
                indent=2,
            )
        paths = [os.path.join(LITERT_DIR, m.file_name) for m in models if m.installed]
        paths.append(os.path.join(LITERT_DIR, report))
        return StagedLiteRT(paths, models, self.max_accuracy_drop)
