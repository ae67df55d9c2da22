"""Export a trained model of any method: a TF Serving SavedModel per head, `.keras` files,
models.config.

For a model named N (n sub-networks and the method's combined heads, e.g. FFL's
"fused"), `export_dir` receives
  N_<head>/<version>/ for every head (N_sub1 .. N_subn, N_fused)   SavedModels for TF Serving
  N_sub<k>.keras, N_sub<k>_backbone.keras, N_<head>.keras           for downstream Keras apps
  models.config                                                     every model in export_dir
Each SavedModel is loaded back and its probabilities compared with the Keras
network's before anything is moved into place.
"""

import dataclasses
import os

import keras
import numpy as np
import tensorflow as tf

from keras_ffl import run_dir
from keras_ffl.arguments import ArgumentsError
from keras_ffl.export import layout, serving
from keras_ffl.export.extraction import (
    as_network,
    extract_head,
    extract_subnetwork,
    has_features,
)
from keras_ffl.heads import features_layer, network_heads, sub_heads, sub_index
from keras_ffl.validation import ArgumentError

VERIFY_BATCH = 8


class ExportVerificationError(RuntimeError):
    """A reloaded SavedModel disagrees with the Keras model it was exported from."""


@dataclasses.dataclass
class ExportedModel:
    """One SavedModel: its TF Serving name, version, path, signatures and verified error."""

    name: str
    version: int
    path: str
    signatures: dict
    max_error: float


@dataclasses.dataclass
class ExportResult:
    """What an export wrote; `summary()` describes it for people."""

    export_dir: str
    version: int
    mean: tuple
    std: tuple
    models: list
    keras_files: dict
    config_path: str
    recovered: list
    #: What each extra export format staged (e.g. `litert.StagedLiteRT`), installed with the rest.
    formats: list = dataclasses.field(default_factory=list)

    def summary(self):
        lines = [f"Before exporting: {line}" for line in self.recovered]
        lines += [
            f"Exported version {self.version} to {self.export_dir}",
            f"  inputs are normalised in the graph as (x - mean) / std, mean={self.mean}, "
            f"std={self.std}",
        ]
        for model in self.models:
            lines.append(
                f"  {model.name} v{model.version}  {model.path}  "
                f"(max |Δp| vs Keras {model.max_error:.1e})"
            )
            for signature, tensors in model.signatures.items():
                lines.append(f"    signature {signature}")
                for kind, key in (("input ", "inputs"), ("output", "outputs")):
                    for name, dtype, shape in tensors[key]:
                        dims = ", ".join("None" if d is None else str(d) for d in shape)
                        lines.append(f"      {kind} {name:<20} {dtype:<8} [{dims}]")
        lines.append("  Keras models (they take normalised images, as in training):")
        width = max(len(path) for path in self.keras_files)
        for path, description in self.keras_files.items():
            lines.append(f"    {path:<{width}}  {description}")
        lines.append(f"  TF Serving config: {self.config_path}")
        for staged in self.formats:
            lines += staged.summary(self.export_dir)
        return "\n".join(lines)


def _image_shape(network, image_shape):
    model_shape = tuple(network.input.shape[1:])
    if image_shape is None:
        if None in model_shape:
            raise ArgumentError(
                "image_shape",
                f"The model's input shape {model_shape} is not fixed; pass {{arg}}=H,W,C, "
                "the size clients will send.",
            )
        return model_shape
    image_shape = tuple(int(d) for d in image_shape)
    if len(image_shape) != 3 or any(
        m is not None and m != d for m, d in zip(model_shape, image_shape)
    ):
        raise ArgumentError(
            "image_shape",
            f"{{arg}} {image_shape} does not fit the model's input shape {model_shape}; "
            "pass the (height, width, channels) the model was trained on.",
        )
    return image_shape


def _channel_stats(name, values, channels):
    values = tuple(float(v) for v in np.ravel(values))
    if len(values) != channels or (name == "std" and min(values) <= 0):
        raise ArgumentError(
            name,
            f"{{arg}} must hold {channels} per-channel values in 0..255 pixel units"
            f"{' (all > 0)' if name == 'std' else ''}; got {values}.",
        )
    return values


def export_savedmodels(
    model_or_network,
    export_dir,
    name,
    *,
    mean,
    std,
    image_shape=None,
    version=None,
    overwrite=False,
    atol=1e-5,
    formats=(),
):
    """Exports every head of a trained model for TF Serving and for Keras apps.

    Args:
      model_or_network: a trained model of any method (e.g. an `FFLModel`) or its network.
      export_dir: the TF Serving model root; created if missing.
      name: prefix of the model names, e.g. "cifar100_resnet32".
      mean, std: the per-channel normalisation the model was trained with (0..255 units).
      image_shape: (H, W, C) clients send; default the model's input shape.
      version: the version to write; default one more than the highest present.
      overwrite: replace an existing `version` instead of refusing.
      atol: the largest |Δ| allowed between served and Keras probabilities.
      formats: extra export formats (e.g. `litert.LiteRTFormat`), each staging and
        verifying its files with `stage(network, heads, name, stage, mean=, std=,
        image_shape=)` before the one all-or-nothing install.

    Returns:
      An `ExportResult`. Raises FileExistsError (version exists), ValueError (bad
      arguments) or ExportVerificationError, in which case nothing was installed,
      or `run_dir.RunError` when another export is writing `export_dir`. The
      heads are installed all or none, even across a crash (see `layout`).
    """
    network = as_network(model_or_network)
    layout.check_name(name)
    if version is not None and not (isinstance(version, int) and version >= 1):
        raise ArgumentError("version", f"{{arg}} must be a positive integer; got {version!r}.")
    image_shape = _image_shape(network, image_shape)
    mean = _channel_stats("mean", mean, image_shape[-1])
    std = _channel_stats("std", std, image_shape[-1])
    subs = sub_heads(network_heads(network))
    heads = [h for h in network_heads(network) if h not in subs] + subs
    model_names = {head: f"{name}_{head}" for head in heads}
    export_dir = os.path.abspath(export_dir)
    images = np.random.default_rng(0).integers(
        0, 256, (VERIFY_BATCH, *image_shape), dtype=np.uint8
    )
    with layout.exclusive(export_dir) as recovered, layout.staging(export_dir, name) as stage:
        if version is None:
            version = layout.next_version(export_dir, model_names.values())
        layout.check_free(export_dir, model_names.values(), version, overwrite)
        keras_files = _stage_keras_files(network, heads, name, stage)
        models = []
        for head in heads:
            relative = os.path.join(model_names[head], str(version))
            _stage_saved_model(network, head, image_shape, mean, std, os.path.join(stage, relative))
            signatures, max_error = _verify(
                network, head, os.path.join(stage, relative), images, mean, std, atol
            )
            models.append(
                ExportedModel(
                    model_names[head],
                    version,
                    os.path.join(export_dir, relative),
                    signatures,
                    max_error,
                )
            )
        staged_formats = [
            export_format.stage(
                network, heads, name, stage, mean=mean, std=std, image_shape=image_shape
            )
            for export_format in formats
        ]
        paths = [os.path.join(model.name, str(version)) for model in models] + list(keras_files)
        paths += [path for staged in staged_formats for path in staged.paths]
        config_path = layout.install_all(export_dir, stage, paths, version, overwrite)
    installed_files = {
        os.path.join(export_dir, file_name): description
        for file_name, description in keras_files.items()
    }
    return ExportResult(
        export_dir, version, mean, std, models, installed_files, config_path, recovered,
        staged_formats,
    )


def _stage_saved_model(network, head, image_shape, mean, std, path):
    classifier = extract_head(network, head)
    features = None
    if sub_index(head) is None and has_features(network, head):
        features = (features_layer(head), features_layer(head))
    archive = serving.build_archive(classifier, image_shape, mean, std, features=features)
    archive.write_out(path, verbose=False)


def _stage_keras_files(network, heads, name, stage):
    """Saves the `.keras` models into `stage`; returns {file name: description}."""
    files = {}
    for head in heads:
        k = sub_index(head)
        if k is None:
            model = extract_head(network, head, name=f"{name}_{head}")
            file_name = f"{name}_{head}.keras"
            model.save(os.path.join(stage, file_name))
            stock = all(type(layer).__module__.startswith("keras.") for layer in model.layers)
            files[file_name] = f"the {head} head; " + (
                "stock Keras layers only" if stock else "needs keras_ffl to load"
            )
            continue
        for include_top, suffix, what in (
            (True, "", "with classifier"),
            (False, "_backbone", "feature map out"),
        ):
            file_name = f"{name}_{head}{suffix}.keras"
            extract_subnetwork(network, k, include_top, name=f"{name}_{head}{suffix}").save(
                os.path.join(stage, file_name)
            )
            files[file_name] = f"sub-network {k}, {what}; stock Keras layers only"
    return files


def keras_probabilities(network, head, images, mean, std):
    """The Keras network's softmax of `head` for uint8 `images`: what serving must reproduce."""
    x = (images.astype(np.float32) - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    logits = network(x, training=False)[head]
    return keras.ops.convert_to_numpy(keras.ops.softmax(keras.ops.cast(logits, "float32")))


def _verify(network, head, path, images, mean, std, atol):
    """(signatures, max |Δp|) of the SavedModel at `path`, checked against the Keras `head`."""
    saved_model = tf.saved_model.load(path)
    served = serving.serve_probabilities(saved_model, images)
    expected = keras_probabilities(network, head, images, mean, std)
    max_error = float(np.max(np.abs(served - expected)))
    if not max_error <= atol:
        model_name = os.path.basename(os.path.dirname(path))
        raise ExportVerificationError(
            f"The SavedModel of {model_name} disagrees with the Keras model: max |Δ| of the "
            f"probabilities is {max_error:.3g} > {atol:g} on {len(images)} images. Nothing was "
            "exported. Check that the model runs in float32 and that mean/std are per channel."
        )
    return serving.describe_signatures(saved_model), max_error


def load_checkpoint(model_dir, checkpoint=None):
    """(model, config dict) of a training run's directory, for any method.

    `checkpoint` is "best" or "last"; by default best.keras if present, else
    last.keras. A missing or damaged checkpoint raises an error that says so and
    names the other one when the directory has it (see `run_dir.open_checkpoint`).
    """
    model, config, name = run_dir.open_checkpoint(model_dir, checkpoint, use="export")
    missing = [key for key in ("mean", "std", "image_shape") if key not in config]
    if missing:
        path = os.path.join(model_dir, run_dir.CHECKPOINTS[name])
        raise ArgumentsError(
            f"{os.path.join(model_dir, run_dir.CONFIG_FILE)} lacks {missing}; export the "
            f"checkpoint with {{arg:model}}={path} and {{arg:dataset}} or {{arg:mean}}/{{arg:std}} "
            "instead."
        )
    return model, config


def export_model_dir(
    model_dir,
    export_dir="export",
    *,
    checkpoint=None,
    name=None,
    version=None,
    overwrite=False,
    formats=(),
):
    """Exports a training run's directory (config.json + best/last.keras); see `export_savedmodels`.

    `name` defaults to the directory's name.
    """
    model, config = load_checkpoint(model_dir, checkpoint)
    name = name or layout.safe_name(os.path.basename(os.path.normpath(os.path.abspath(model_dir))))
    return export_savedmodels(
        model,
        export_dir,
        name,
        mean=config["mean"],
        std=config["std"],
        image_shape=config["image_shape"],
        version=version,
        overwrite=overwrite,
        formats=formats,
    )
