"""Benchmark every method's training, a bare training loop, the input pipeline and serving, in one run.

  python tools/benchmark.py                       # everything, CIFAR-100 shapes, batch 128
  python tools/benchmark.py --models=vanilla,ffl,dml --steps=60 --sections=fit,loop
  python tools/benchmark.py --reference=../shared/reference/FFL-pytorch   # paired with PyTorch

With --reference (a checkout of the official FFL-pytorch code; PyTorch installed)
it runs only the paired comparison instead (`benchmarking.reference`): the
official and keras_ffl FFL and vanilla ResNet-32 training steps and FFL inference,
in worker processes of their own (tools/reference_benchmark.py), interleaved.

Sections (--sections), all in one process:
  fit       `model.fit` as users run it (steps_per_execution=1), per-step times from a
            callback, for the vanilla baseline and every method's model (--models).
  loop      a bare `tf.function` training step (GradientTape around the same model's
            loss, then `optimizer.apply`, no metrics) on the same model and optimizer:
            what `fit` costs on top of the compiled step.
  pipeline  `keras_ffl.data`'s CIFAR-100 training pipeline (cache, shuffle, reflect-pad
            crop, flip, normalise, prefetch) on in-memory uint8 images, alone.
  serving   every model exported for TF Serving (`keras_ffl.export`), loaded back and
            called through its `serving_default` signature at batch 1 and --serving_batch.
  profile   (not in the default) TensorFlow's op profile of --profile_steps `fit` steps
            of each model, as op time per step by category (`benchmarking.op_profile`).

Fit and loop run on a fixed cycle of 8 in-memory batches, so they time the model
and not the input pipeline. All (model, mode) pairs run in short interleaved
chunks (--chunk steps, round-robin, order reversed every other round), so that
load from other processes lands on all of them alike. A step's time is the
interval between the starts of two consecutive steps: it includes every
per-step cost of `fit` (callbacks, iterator, Python) but not its once-per-call
start and end (reported separately as call_overhead_s).

Every step is timed in wall time and in process CPU time (all threads). On a
machine shared with other jobs wall times swing by 2x; CPU time moves much less
(though idle cores let TF's threads spin, so it is not load-proof either), and
the ratios are given three ways: of wall medians, paired per round (the ratio
of two chunks that ran back to back, median over rounds) and of CPU medians.
Compare ratios within a run, not absolute numbers across runs.

Memory: TF's allocator peak during a step above what was allocated before it
(tf.config.experimental.get_memory_info, CPU or GPU), the process RSS sampled
during each configuration, and the RSS high-water mark (getrusage).

Prints a table and writes --output (JSON) with machine info and every statistic.
This file is the command line; the measurements are the `benchmarking` package
beside it (timing, memory, models, sections, report).
"""

import dataclasses
import json
import os

from absl import app, flags, logging

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras_ffl  # noqa: E402
from benchmarking import models, reference, report, sections  # noqa: E402  (beside this file)
from benchmarking.memory import MIB, MemorySampler, max_rss_bytes  # noqa: E402
from benchmarking.sections import MODES  # noqa: E402
from benchmarking.timing import load_average  # noqa: E402

FLAGS = flags.FLAGS
SECTIONS = (*MODES, "pipeline", "serving")
OPTIONAL_SECTIONS = ("profile",)

flags.DEFINE_enum("device", None, ["cpu", "gpu"], "Device to run on (default: gpu if present).")
flags.DEFINE_integer("batch_size", 128, "Training batch size.", lower_bound=1)
flags.DEFINE_integer("steps", 40, "Timed training steps per model and mode.", lower_bound=2)
flags.DEFINE_integer("warmup", 5, "Untimed steps per model and mode (tracing, warm caches).", lower_bound=1)
flags.DEFINE_integer(
    "chunk", 5, "Steps per turn when interleaving models and modes.", lower_bound=1
)
flags.DEFINE_list(
    "models",
    [*keras_ffl.method_names(), "ffl:3", "ffl@case2"],
    "Models to benchmark, each a registered method (keras_ffl.method_names()) on --arch, "
    "optionally with a number of sub-networks (ffl:3) or on --arch and --arch2 (ffl@case2). "
    "Default: every method with 2 sub-networks (vanilla: 1), FFL with 3, FFL case 2.",
)
flags.DEFINE_string("arch", "resnet32", "Sub-network architecture (keras_ffl.get_architecture).")
flags.DEFINE_string("arch2", "wrn16_2", "The second architecture of the case2 model.")
flags.DEFINE_list(
    "sections", list(SECTIONS), f"What to benchmark, a subset of {SECTIONS + OPTIONAL_SECTIONS}."
)
flags.DEFINE_integer("profile_steps", 5, "Traced `fit` steps per model (profile section).", lower_bound=1)
flags.DEFINE_string("output", "benchmark.json", "Where to write the JSON results.")
flags.DEFINE_enum(
    "jit_compile",
    "auto",
    ["auto", "true", "false"],
    "XLA for fit and the bare loop. auto: off on CPU, where it measured slower "
    "(docs/PERFORMANCE.md), on on GPU.",
)
flags.DEFINE_integer("num_classes", 100, "Classes (CIFAR-100: 100).", lower_bound=2)
flags.DEFINE_integer(
    "pipeline_images", 50_000, "In-memory uint8 training images for the pipeline section.", lower_bound=1
)
flags.DEFINE_integer("pipeline_epochs", 3, "Timed pipeline epochs (after one untimed).", lower_bound=1)
flags.DEFINE_integer("serving_steps", 30, "Timed calls per exported model at batch 1.", lower_bound=2)
flags.DEFINE_integer(
    "serving_batch", 128, "The larger serving batch size (besides 1).", lower_bound=1
)
flags.DEFINE_list(
    "serving_heads", ["fused", "sub1", "sub2"], "Heads to serve, of the models that have them."
)
flags.DEFINE_integer("intra_op_threads", 0, "TF intra-op threads (0: TF's default).", lower_bound=0)
flags.DEFINE_integer("inter_op_threads", 0, "TF inter-op threads (0: TF's default).", lower_bound=0)
flags.DEFINE_integer("seed", 0, "Random seed.")
flags.DEFINE_string(
    "reference",
    None,
    "A checkout of the official FFL-pytorch code: run the paired comparison with it "
    "(tools/reference_benchmark.py; needs PyTorch) instead of the sections.",
)
flags.DEFINE_integer("reference_rounds", 10, "Interleaved rounds of the --reference comparison.", lower_bound=1)
flags.DEFINE_integer("reference_threads", 2, "Threads of each framework with --reference.", lower_bound=1)


def settings_from_flags():
    """The sections' settings, from the flags of the same names."""
    names = [field.name for field in dataclasses.fields(sections.Settings)]
    values = {name: FLAGS[name].value for name in names}
    values["serving_heads"] = tuple(values["serving_heads"])
    return sections.Settings(**values)


def configure(device_flag):
    """Applies thread and device settings before TensorFlow initialises; returns the device."""
    if FLAGS.intra_op_threads:
        tf.config.threading.set_intra_op_parallelism_threads(FLAGS.intra_op_threads)
    if FLAGS.inter_op_threads:
        tf.config.threading.set_inter_op_parallelism_threads(FLAGS.inter_op_threads)
    gpus = tf.config.list_physical_devices("GPU")
    device_type = device_flag or ("gpu" if gpus else "cpu")
    if device_type == "gpu" and not gpus:
        raise app.UsageError("--device=gpu but TensorFlow sees no GPU.")
    if device_type == "cpu" and gpus:
        tf.config.set_visible_devices([], "GPU")
    return device_type


def log(message):
    print(message, flush=True)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    try:
        specs = {
            key: models.parse_model(key, FLAGS.arch, FLAGS.arch2)
            for key in dict.fromkeys([models.BASELINE, *FLAGS.models])
        }
    except ValueError as err:
        raise app.UsageError(f"--models: {err}") from err
    unknown = set(FLAGS.sections) - set(SECTIONS + OPTIONAL_SECTIONS)
    if unknown:
        raise app.UsageError(
            f"Unknown --sections {sorted(unknown)}; choose from {SECTIONS + OPTIONAL_SECTIONS}."
        )
    logging.set_verbosity(logging.WARNING)  # TF's and TFDS's INFO lines would bury the table.
    tf.get_logger().setLevel("ERROR")
    settings = settings_from_flags()
    if FLAGS.reference:
        run_reference(settings)
        return
    device_type = configure(FLAGS.device)
    device = "/GPU:0" if device_type == "gpu" else "/CPU:0"
    jit_compile = {"true": True, "false": False}.get(FLAGS.jit_compile, device_type == "gpu")
    keras.utils.set_random_seed(FLAGS.seed)
    modes = [m for m in MODES if m in FLAGS.sections]
    baseline = specs[models.BASELINE].name
    results = {"machine": report.machine_info(device_type, jit_compile, settings)}
    with MemorySampler() as sampler:
        if modes:
            log("Training")
            results["training"], trained = sections.benchmark_training(
                list(specs.values()), modes, settings, device, sampler, jit_compile, log
            )
        elif {"serving", "profile"} & set(FLAGS.sections):  # Serve or profile untrained models.
            with tf.device(device):
                trained = {
                    spec.name: models.build(spec, settings.num_classes, jit_compile)
                    for spec in specs.values()
                }
        if "pipeline" in FLAGS.sections:
            log("Input pipeline")
            results["pipeline"] = sections.benchmark_pipeline(settings, sampler)
        if "serving" in FLAGS.sections:
            log("Serving")
            results["serving"] = sections.benchmark_serving(trained, settings, device, sampler, log)
        if "profile" in FLAGS.sections:
            log("Profile")
            results["profile"] = sections.benchmark_profile(trained, settings, device)
    results["ratios"] = report.ratios(results, baseline, settings.batch_size)
    results["memory"] = {
        "max_rss_mib": max_rss_bytes() / MIB,
        "rss_source": sampler.source,
        "load_average_end": load_average(),
    }
    report.print_report(results, baseline, settings.serving_batch)
    if results.get("profile"):
        report.print_profile(results["profile"])
    write_results(results)


def run_reference(settings):
    """The paired comparison with the official code (benchmarking.reference)."""
    log("Paired with the official code")
    results = reference.run(
        FLAGS.reference,
        batch_size=FLAGS.batch_size,
        num_classes=FLAGS.num_classes,
        threads=FLAGS.reference_threads,
        rounds=FLAGS.reference_rounds,
        chunk=FLAGS.chunk,
        warmup=FLAGS.warmup,
        seed=FLAGS.seed,
    )
    results["machine"] = report.machine_info("cpu", False, settings)
    results["table"] = reference.report(results)
    reference.print_report(results, results["table"])
    write_results(results)


def write_results(results):
    directory = os.path.dirname(os.path.abspath(FLAGS.output))
    os.makedirs(directory, exist_ok=True)
    with open(FLAGS.output, "w", encoding="utf-8") as file:
        json.dump(results, file, indent=2)
    print(f"\nWrote {FLAGS.output}")


if __name__ == "__main__":
    app.run(main)
