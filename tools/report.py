"""A report on trained runs: accuracy curves, schedules, calibration, diversity of sub-networks.

  python tools/report.py --model_dir=runs/fashion_mnist
  python tools/report.py --model_dir=runs/fashion_mnist runs/fashion_mnist_vanilla --output_dir=report

writes <output_dir>/report.md with accuracy.png, schedule.png and
calibration.png next to it; see `keras_ffl.analysis.report`. Only the run
directories and their datasets are read.
"""

import sys

from absl import app, flags

from keras_ffl import quiet

quiet.start_up()  # TensorFlow's C++ start-up lines hidden, unless asked for.

from keras_ffl.analysis.calibration import DEFAULT_BINS  # noqa: E402
from keras_ffl.analysis.report import write_report  # noqa: E402
from keras_ffl.arguments import flag_message  # noqa: E402
from keras_ffl.run_dir import CHECKPOINTS, RunError  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_list(
    "model_dir", None, "The runs to report on; more may follow as arguments: --model_dir=A B C."
)
flags.DEFINE_string("output_dir", "report", "Where report.md and its PNG files are written.")
flags.DEFINE_enum(
    "checkpoint",
    None,
    list(CHECKPOINTS),
    "The checkpoint of each run (default: best.keras if present, else last.keras).",
)
flags.DEFINE_string("data_dir", None, "Where the datasets' files are, if not the default.")
flags.DEFINE_integer("bins", DEFAULT_BINS, "Confidence bins of the ECE.", lower_bound=1)
flags.mark_flag_as_required("model_dir")


def main(argv):
    model_dirs = FLAGS.model_dir + argv[1:]
    try:
        files = write_report(
            model_dirs,
            FLAGS.output_dir,
            checkpoint=FLAGS.checkpoint,
            data_dir=FLAGS.data_dir,
            bins=FLAGS.bins,
        )
    except (RunError, ValueError, OSError, ImportError) as error:
        sys.exit(f"report failed: {' '.join(flag_message(error).split())}")
    print("Wrote " + ", ".join(files))


if __name__ == "__main__":
    app.run(main)
