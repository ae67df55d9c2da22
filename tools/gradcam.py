"""Grad-CAM heat maps of every head of a trained run, laid out as the paper's Fig. 3.

  python tools/gradcam.py --model_dir=runs/fashion_mnist --compare=runs/fashion_mnist_vanilla
  python tools/gradcam.py --model_dir=runs/fashion_mnist --indices=0,7,42 --output=cams.png

One row per test image. Columns: the image; the --compare run's network (when
given); every head of --model_dir's network that has a feature map of its own
(each sub-network, the fused classifier). Each heat map (Selvaraju et al., ICCV
2017, for the head's predicted class) is titled with that class and its
probability: green with a tick when right, red with a cross when wrong.

With --compare and without --indices, the rows are test images of the paper's
three cases, in turn: every column right; the run's primary head (FFL's fused
classifier) right and the compared network wrong; every column wrong. Without
--compare they are the first --images test images. See
`keras_ffl.analysis.cam_figure`.
"""

import sys

from absl import app, flags

from keras_ffl import quiet

quiet.start_up()  # TensorFlow's C++ start-up lines hidden, unless asked for.

from keras_ffl.analysis.cam_figure import DEFAULT_IMAGES, draw_gradcam  # noqa: E402
from keras_ffl.arguments import flag_message  # noqa: E402
from keras_ffl.run_dir import CHECKPOINTS, RunError  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("model_dir", None, "The training run to explain (config.json, *.keras).")
flags.DEFINE_string(
    "compare", None, "Another run on the same dataset (e.g. a vanilla network), drawn first."
)
flags.DEFINE_integer(
    "images",
    None,
    f"How many test images (rows); default {DEFAULT_IMAGES}, one per case with --compare.",
    lower_bound=1,
)
flags.DEFINE_list("indices", None, "Which test images: 0-based indices in the test split.")
flags.DEFINE_string("output", "gradcam.png", "The PNG file to write.")
flags.DEFINE_enum(
    "checkpoint",
    None,
    list(CHECKPOINTS),
    "The checkpoint of each run (default: best.keras if present, else last.keras).",
)
flags.DEFINE_string("data_dir", None, "Where the dataset's files are, if not the default.")
flags.mark_flag_as_required("model_dir")
flags.mark_flags_as_mutual_exclusive(["images", "indices"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    try:
        indices = None if FLAGS.indices is None else [int(i) for i in FLAGS.indices]
    except ValueError:
        raise app.UsageError(f"--indices must be integers; got {','.join(FLAGS.indices)}.")
    try:
        lines = draw_gradcam(
            FLAGS.model_dir,
            FLAGS.output,
            compare=FLAGS.compare,
            images=FLAGS.images,
            indices=indices,
            checkpoint=FLAGS.checkpoint,
            data_dir=FLAGS.data_dir,
        )
    except (RunError, ValueError, OSError, ImportError) as error:
        sys.exit(f"gradcam failed: {' '.join(flag_message(error).split())}")
    print("\n".join(lines))


if __name__ == "__main__":
    app.run(main)
