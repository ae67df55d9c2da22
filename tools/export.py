"""Export a trained model of any method for TF Serving and for downstream Keras apps.

  python tools/export.py --model_dir=runs/cifar100_resnet32
  python tools/export.py --model=ffl.keras --dataset=cifar100 --name=c100

writes a SavedModel per head, <export_dir>/<name>_<head>/<version>/ (sub1..subn and the
method's combined head: FFL's fused, ONE's gated, the ensemble's, DualNet's avg),
<name>_sub<k>.keras, <name>_sub<k>_backbone.keras, <name>_<head>.keras and
models.config; with --litert also <export_dir>/litert/<name>_<head>_<variant>.tflite,
verified on the run's test split; see export/README.md.
"""

import os
import sys

from absl import app, flags, logging

from keras_ffl import quiet

quiet.start_up()  # TensorFlow's C++ start-up lines hidden, unless asked for.

import keras  # noqa: E402

from keras_ffl import export  # noqa: E402
from keras_ffl import run_dir  # noqa: E402
from keras_ffl.arguments import flag_message  # noqa: E402
from keras_ffl.export import litert  # noqa: E402
from keras_ffl.export.layout import safe_name  # noqa: E402
from keras_ffl.run_dir import NotARunError, RunError  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("model_dir", None, "A training run's directory (config.json, *.keras).")
flags.DEFINE_enum(
    "checkpoint",
    None,
    ["best", "last"],
    "With --model_dir: the checkpoint (default: best.keras if present, else last.keras).",
)
flags.DEFINE_string("model", None, "A saved model of any method (.keras); needs --dataset or --mean/--std.")
flags.DEFINE_string("dataset", None, "With --model: the dataset whose mean/std/image shape to use.")
flags.DEFINE_list("mean", None, "With --model: per-channel mean in 0..255 pixel units.")
flags.DEFINE_list("std", None, "With --model: per-channel std in 0..255 pixel units.")
flags.DEFINE_list("image_shape", None, "With --model: H,W,C clients send (default: the model's).")
flags.DEFINE_string("export_dir", "export", "TF Serving model root to write into.")
flags.DEFINE_string("name", None, "Model name prefix (default: the run dir's or dataset's name).")
flags.DEFINE_integer("version", None, "Version to write (default: the next one).", lower_bound=1)
flags.DEFINE_bool("overwrite", False, "Replace an existing --version instead of refusing.")
flags.DEFINE_bool(
    "litert", False, "Also write every head as LiteRT (.tflite) models, verified on the test split."
)
flags.DEFINE_list(
    "litert_variants",
    list(litert.VARIANTS),
    f"With --litert: the variants to write, some of {','.join(litert.VARIANTS)}.",
)
flags.register_validator(
    "litert_variants",
    lambda variants: bool(variants) and set(variants) <= set(litert.VARIANTS),
    f"--litert_variants takes one or more of {','.join(litert.VARIANTS)}",
)
flags.DEFINE_integer(
    "verify_images", None, "With --litert: verify on the first N test images (default: all).",
    lower_bound=1,
)
flags.DEFINE_integer(
    "representative_images", 200, "With --litert: training images calibrating the int8 variant.",
    lower_bound=1,
)
flags.DEFINE_float(
    "max_accuracy_drop", 1.0, "With --litert: the top-1 accuracy a variant may lose, in points.",
    lower_bound=0.0,
)
flags.DEFINE_bool(
    "allow_accuracy_drop", False, "With --litert: install variants beyond --max_accuracy_drop too."
)
flags.DEFINE_string("data_dir", None, "With --litert: where the dataset's files are (TFDS, IDX).")
flags.mark_flags_as_mutual_exclusive(["model_dir", "model"], required=True)
_LITERT_FLAGS = (
    "litert_variants",
    "verify_images",
    "representative_images",
    "max_accuracy_drop",
    "allow_accuracy_drop",
    "data_dir",
)


def _export_keras_file():
    """--model: normalisation from --dataset or from --mean/--std."""
    if FLAGS.dataset:
        if FLAGS.mean or FLAGS.std:
            raise app.UsageError("Pass either --dataset or --mean/--std, not both.")
        from keras_ffl.data import get_spec

        spec = get_spec(FLAGS.dataset)
        mean, std, image_shape = spec.mean, spec.std, FLAGS.image_shape or spec.image_shape
    elif FLAGS.mean and FLAGS.std:
        mean, std, image_shape = FLAGS.mean, FLAGS.std, FLAGS.image_shape
    else:
        raise app.UsageError(
            "--model needs the normalisation it was trained with: --dataset=NAME, or "
            "--mean=R,G,B --std=R,G,B (0..255 pixel units)."
        )
    name = FLAGS.name or safe_name(
        FLAGS.dataset or os.path.splitext(os.path.basename(FLAGS.model))[0]
    )
    run_dir.check_keras_archive(FLAGS.model, fix="pass a .keras file saved by Keras")
    return export.export_savedmodels(
        keras.saving.load_model(FLAGS.model, compile=False),
        FLAGS.export_dir,
        name,
        mean=[float(v) for v in mean],
        std=[float(v) for v in std],
        image_shape=image_shape and [int(v) for v in image_shape],
        version=FLAGS.version,
        overwrite=FLAGS.overwrite,
        formats=_formats(FLAGS.dataset),
    )


def _formats(dataset):
    """[LiteRTFormat] with --litert (verified on `dataset`'s images), else []."""
    if not FLAGS.litert:
        return []
    if dataset is None:
        raise app.UsageError(
            "--litert verifies on the training run's test split: pass --model_dir, or "
            "--dataset with --model."
        )
    return [
        litert.LiteRTFormat(
            dataset,
            variants=tuple(FLAGS.litert_variants),
            verify_images=FLAGS.verify_images,
            representative_images=FLAGS.representative_images,
            max_accuracy_drop=FLAGS.max_accuracy_drop,
            allow_accuracy_drop=FLAGS.allow_accuracy_drop,
            data_dir=FLAGS.data_dir,
        )
    ]


def _run_dataset(model_dir):
    """The dataset a training run's config.json names (None without one: the export says so)."""
    return (run_dir.read_json(os.path.join(model_dir, run_dir.CONFIG_FILE)) or {}).get("dataset")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    if not FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)  # TensorFlow's INFO lines would bury the summary.
    if FLAGS.model_dir is None and FLAGS.checkpoint:
        raise app.UsageError("--checkpoint picks a checkpoint of --model_dir; --model names one.")
    litert_only = [name for name in _LITERT_FLAGS if FLAGS[name].present]
    if litert_only and not FLAGS.litert:
        raise app.UsageError(f"--{litert_only[0]} applies to LiteRT models: add --litert.")
    try:
        if FLAGS.model_dir:
            result = export.export_model_dir(
                FLAGS.model_dir,
                FLAGS.export_dir,
                checkpoint=FLAGS.checkpoint,
                name=FLAGS.name,
                version=FLAGS.version,
                overwrite=FLAGS.overwrite,
                formats=_formats(dataset) if (dataset := _run_dataset(FLAGS.model_dir)) else [],
            )
        else:
            result = _export_keras_file()
    except (ValueError, OSError, ImportError, export.ExportVerificationError, RunError) as error:
        message = flag_message(error)
        if isinstance(error, NotARunError):
            message += "; for a bare .keras file use --model"
        sys.exit(f"export failed: {' '.join(message.split())}")
    print(result.summary())


if __name__ == "__main__":
    app.run(main)
