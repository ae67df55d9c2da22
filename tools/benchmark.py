"""Benchmark every method's training, a bare training loop, the input pipeline and serving, in one run.

  python tools/benchmark.py                       # everything, CIFAR-100 shapes, batch 128
  python tools/benchmark.py --models=vanilla,ffl,dml --steps=60 --sections=fit,loop
  python tools/benchmark.py --reference=../shared/reference/FFL-pytorch   # paired with PyTorch

With --reference (a checkout of the official FFL-pytorch code; PyTorch installed)
it runs only the paired comparison of tools/reference_benchmark.py instead: the
official and keras_ffl FFL and vanilla ResNet-32 training steps and FFL inference,
in worker processes of their own, interleaved.

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
            of each model, as op time per step by category (tools/step_profile.py).

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
"""

import contextlib
import json
import math
import os
import platform
import resource
import shutil
import sys
import tempfile
import threading
import time

from absl import app, flags, logging

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_datasets as tfds  # noqa: E402

import keras_ffl  # noqa: E402
from keras_ffl import data  # noqa: E402
from keras_ffl.export import export_savedmodels, serving  # noqa: E402

import reference_benchmark  # noqa: E402  (tools/, beside this file)
import step_profile  # noqa: E402

FLAGS = flags.FLAGS
#: The baseline every model's step is compared with: one --arch network trained alone.
BASELINE = "vanilla"
SECTIONS = ("fit", "loop", "pipeline", "serving")
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
    "XLA for fit and the bare loop. auto: off on CPU (measured 1.8-2.4x slower), on on GPU, "
    'as Keras\'s own jit_compile="auto" decides.',
)
# Why --jit_compile=auto is off on CPU. Measured with this file's bare loop, TF 2.21,
# 2-core AMD EPYC, batch 128, quiet machine: vanilla ResNet-32 0.247 s/step without XLA,
# 0.432 s with (1.76x); FFL ResNet-32 x2 0.304 s vs 0.714 s (2.35x); 1.8x / 2.9x the
# CPU time. TF's oneDNN convolutions beat XLA:CPU's code for these small convolutions.
# On GPU, XLA fuses BatchNorm's many elementwise ops into few kernels, which is why
# Keras turns it on there; that was not measured here (no GPU).
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


# Statistics, timing and memory -----------------------------------------------------------


def summarize(values):
    """Median, quartiles, p10/p90, mean and count of `values` (seconds or any unit)."""
    values = np.asarray(values, dtype=np.float64)
    p10, p25, p50, p75, p90 = np.percentile(values, [10, 25, 50, 75, 90])
    return {
        "median": float(p50),
        "p10": float(p10),
        "p25": float(p25),
        "p75": float(p75),
        "p90": float(p90),
        "iqr": float(p75 - p25),
        "mean": float(values.mean()),
        "n": int(values.size),
    }


def intervals(starts):
    """Times between consecutive start times."""
    return list(np.diff(np.asarray(starts)))


class MemorySampler:
    """Samples this process's RSS every few ms in a thread; keeps the maximum per label.

    TensorFlow releases the GIL while it runs a step, so the samples land inside
    steps, where the activations are alive.
    """

    def __init__(self, interval=0.01):
        self.interval = interval
        self.label = None
        self.peaks = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        try:
            import psutil

            self._rss = psutil.Process().memory_info
            self.source = "psutil"
        except ImportError:  # /proc fallback (Linux).
            self._rss = None
            self.source = "/proc/self/statm"

    def rss(self):
        if self._rss is not None:
            return self._rss().rss
        with open("/proc/self/statm") as file:
            return int(file.read().split()[1]) * resource.getpagesize()

    def _run(self):
        while not self._stop.wait(self.interval):
            label = self.label
            if label is not None:
                value = self.rss()
                if value > self.peaks.get(label, 0):
                    self.peaks[label] = value

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    @contextlib.contextmanager
    def labelled(self, label):
        self.label = label
        try:
            yield
        finally:
            self.label = None


def max_rss_bytes():
    """The process's RSS high-water mark (getrusage; KiB on Linux)."""
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def allocator_memory(device):
    """TensorFlow's allocator statistics {"current", "peak"} (bytes) on `device`, or None.

    Available for CPU and GPU in recent TensorFlow versions; it counts what TF
    allocates (weights, activations, gradients), not Python's or the libraries' own memory.
    """
    try:
        return tf.config.experimental.get_memory_info(device.lstrip("/"))
    except (ValueError, tf.errors.OpError):
        return None


def reset_allocator_peak(device):
    try:
        tf.config.experimental.reset_memory_stats(device.lstrip("/"))
    except (ValueError, tf.errors.OpError):
        pass


MIB = 1 << 20


# Models ----------------------------------------------------------------------------------


def parse_model(key):
    """(method, architectures, branches) of a --models entry such as "dml", "ffl:3" or
    "ffl@case2"."""
    method, _, variant = key.partition("@")
    method, _, branches = method.partition(":")
    method_class = keras_ffl.get_method(method)
    if variant and variant != "case2":
        raise ValueError(f"Unknown variant @{variant} in --models={key}; the one variant is @case2.")
    if variant:
        return method, [FLAGS.arch, FLAGS.arch2], 2
    default = method_class.fixed_subnetworks or 2
    return method, FLAGS.arch, int(branches) if branches else default


def model_name(key):
    """The descriptive name of model `key` under --arch/--arch2, e.g. "ffl_resnet32_x2"."""
    method, architectures, branches = parse_model(key)
    if isinstance(architectures, list):
        return f"{method}_{'_'.join(architectures)}"
    return f"{method}_{architectures}" + (f"_x{branches}" if branches > 1 else "")


def build(key, num_classes, jit_compile):
    """Compiled model `key` as the training command builds it, from the method registry."""
    method, architectures, branches = parse_model(key)
    model = keras_ffl.get_method(method).create(
        architectures, num_classes, (32, 32, 3), branches=branches, rampup_epochs=80
    )
    model.compile(optimizer=model.make_optimizer(0.1), jit_compile=jit_compile)
    return model


def synthetic_batches(batch_size, num_classes, seed, count=8):
    """A repeating cycle of `count` normalised-looking batches held in memory."""
    rng = np.random.default_rng(seed)
    images = rng.standard_normal((count, batch_size, 32, 32, 3), dtype=np.float32)
    labels = rng.integers(0, num_classes, (count, batch_size), dtype=np.int32)
    return tf.data.Dataset.from_tensor_slices((images, labels)).repeat().prefetch(2)


def bare_step(model, jit_compile):
    """A compiled training step on `model` without Keras's trainer: the method's joint
    loss, gradients, apply (no metrics)."""
    variables = model.trainable_variables

    def loss_fn(x, y):
        _, terms = model.forward(x, y, training=True)
        return tf.nn.compute_average_loss(terms["total"])

    # As in Keras's trainer: XLA cannot compile the iterator, so the compiled
    # computation is an inner function of the one that reads the data.
    @tf.function(jit_compile=jit_compile)
    def compute(x, y):
        with tf.GradientTape() as tape:
            loss = loss_fn(x, y)
        model.optimizer.apply(tape.gradient(loss, variables), variables)
        return loss

    @tf.function
    def step(iterator):
        x, y = next(iterator)
        return compute(x, y)

    return step


def clocks():
    """(wall, process CPU) seconds now."""
    return time.perf_counter(), time.process_time()


class StepTimer(keras.callbacks.Callback):
    """Wall and CPU clocks at the start of every training batch, and the last loss."""

    def __init__(self):
        super().__init__()
        self.starts = []
        self.loss = float("nan")

    def on_train_batch_begin(self, batch, logs=None):
        self.starts.append(clocks())

    def on_train_batch_end(self, batch, logs=None):
        # Reading the loss waits for the step on asynchronous devices (GPU).
        self.loss = float(logs["loss"])


class TrainingRunner:
    """One model trained two ways, `fit` and the bare loop, in chunks of steps.

    For every step it keeps the wall time and the process CPU time between the
    starts of two consecutive steps, and per chunk their medians (for ratios
    paired by round). On a machine shared with other jobs, wall time swings
    with their load while CPU time moves much less; wall p10 approximates a
    quiet machine.
    """

    def __init__(self, name, model, dataset, modes, jit_compile, device):
        self.name = name
        self.device = device
        self.model = model
        self.dataset = dataset
        self.jit_compile = jit_compile
        self.modes = modes
        self.fit_call_overhead = []
        self.losses = {}
        self._iterator = None
        self._step = None
        self.reset()

    def reset(self):
        self.wall = {mode: [] for mode in self.modes}
        self.cpu = {mode: [] for mode in self.modes}
        self.chunks = {mode: [] for mode in self.modes}  # (wall median, CPU median) per chunk
        self.step_memory = {mode: 0 for mode in self.modes}
        self.fit_call_overhead = []

    def _record(self, mode, starts):
        wall = [float(t) for t in intervals([w for w, _ in starts])]
        cpu = [float(t) for t in intervals([c for _, c in starts])]
        self.wall[mode].extend(wall)
        self.cpu[mode].extend(cpu)
        self.chunks[mode].append((float(np.median(wall)), float(np.median(cpu))))
        return wall

    def run(self, mode, steps):
        """Runs `steps` + 1 steps; records the `steps` intervals between step starts.

        Also records the TF allocator's peak above what was allocated before the
        chunk: the transient memory (activations, gradients) of one step.
        """
        reset_allocator_peak(self.device)
        before = allocator_memory(self.device)
        self._run(mode, steps)
        after = allocator_memory(self.device)
        if before is not None and after is not None:
            transient = after["peak"] - before["current"]
            self.step_memory[mode] = max(self.step_memory[mode], transient)

    def _run(self, mode, steps):
        if mode == "fit":
            timer = StepTimer()
            start = time.perf_counter()
            self.model.fit(
                self.dataset,
                epochs=1,
                steps_per_epoch=steps + 1,
                verbose=0,
                callbacks=[timer],
            )
            total = time.perf_counter() - start
            wall = self._record(mode, timer.starts)
            # fit's once-per-call cost: everything but the steps it ran (the last
            # step counted as long as the median one).
            self.fit_call_overhead.append(total - sum(wall) - float(np.median(wall)))
            self.losses[mode] = timer.loss
        else:
            if self._step is None:
                self._iterator = iter(self.dataset)
                self._step = bare_step(self.model, self.jit_compile)
            starts = []
            for _ in range(steps + 1):
                starts.append(clocks())
                loss = float(self._step(self._iterator))  # float() waits on async devices.
            self._record(mode, starts)
            self.losses[mode] = loss


def count_params(model):
    return int(sum(np.prod(v.shape) for v in model.trainable_variables))


def benchmark_training(keys, modes, device, sampler, jit_compile):
    """Builds and warms every model, then runs all (model, mode) pairs interleaved.

    Returns ({model name: statistics}, {model name: the trained model}).
    """
    batch = FLAGS.batch_size
    dataset = synthetic_batches(batch, FLAGS.num_classes, FLAGS.seed)
    runners, results = [], {}
    for key in keys:
        name = model_name(key)
        before_hwm = max_rss_bytes()
        start = time.perf_counter()
        with tf.device(device):
            model = build(key, FLAGS.num_classes, jit_compile)
            runner = TrainingRunner(name, model, dataset, modes, jit_compile, device)
            with sampler.labelled(f"{name}/warmup"):
                for mode in modes:
                    runner.run(mode, FLAGS.warmup)
        runner.reset()
        results[name] = {
            "model": key,
            "trainable_params": count_params(model),
            "build_and_warmup_s": time.perf_counter() - start,
            # Growth of the process's RSS high-water mark while this model was built
            # and warmed up (models are warmed up one after another, in --models order).
            "rss_high_water_growth_mib": (max_rss_bytes() - before_hwm) / MIB,
        }
        memory = allocator_memory(device)
        if memory is not None:  # Everything TF holds: all models built so far, their state.
            results[name]["allocator_current_after_warmup_mib"] = memory["current"] / MIB
        runners.append(runner)
        print(f"  built and warmed up {name} ({results[name]['build_and_warmup_s']:.0f} s)", flush=True)

    rounds = math.ceil(FLAGS.steps / FLAGS.chunk)
    for r in range(rounds):
        steps = min(FLAGS.chunk, FLAGS.steps - r * FLAGS.chunk)
        # Reverse the order every other round so that no configuration always
        # follows the same one.
        for runner in runners if r % 2 == 0 else runners[::-1]:
            for mode in modes if r % 2 == 0 else modes[::-1]:
                with sampler.labelled(f"{runner.name}/{mode}"), tf.device(device):
                    runner.run(mode, steps)
        print(f"  round {r + 1}/{rounds}", flush=True)

    for runner in runners:
        entry = results[runner.name]
        for mode in modes:
            wall = summarize(runner.wall[mode])
            entry[mode] = {
                "step_s": wall,
                "cpu_s": summarize(runner.cpu[mode]),
                "images_per_s": batch / wall["median"],
                "images_per_s_p10_p90": [batch / wall["p90"], batch / wall["p10"]],
                "chunk_medians": runner.chunks[mode],
                "wall_steps_s": runner.wall[mode],  # In order; --chunk steps per chunk.
                "peak_rss_mib": sampler.peaks.get(f"{runner.name}/{mode}", 0) / MIB,
                # TF allocator (device memory on GPU) used by a step beyond what was
                # allocated before it: activations, gradients, temporaries.
                "step_memory_mib": runner.step_memory[mode] / MIB,
                "final_loss": runner.losses.get(mode),
            }
        if "fit" in modes:
            entry["fit"]["call_overhead_s"] = summarize(runner.fit_call_overhead)
            entry["fit"]["steps_per_execution"] = runner.model.steps_per_execution
        entry["jit_compile"] = bool(runner.model.jit_compile)
    return results, {runner.name: runner.model for runner in runners}


# Input pipeline ---------------------------------------------------------------------------


def benchmark_pipeline(sampler):
    """keras_ffl.data's CIFAR-100 training pipeline on in-memory uint8 images.

    TFDS's `mock_data` replaces only the prepared-files reader, with the images
    given here; everything after it (cache, shuffle, batch, crop, flip,
    normalise, prefetch) is the pipeline `fit` gets.
    """
    spec = data.get_spec("cifar100")
    count = FLAGS.pipeline_images
    rng = np.random.default_rng(FLAGS.seed)
    images = rng.integers(0, 256, (count, *spec.image_shape), dtype=np.uint8)
    labels = rng.integers(0, spec.num_classes, count, dtype=np.int64)

    def as_dataset(builder, *args, **kwargs):
        return tf.data.Dataset.from_tensor_slices({"image": images, "label": labels})

    batch = FLAGS.batch_size
    epochs, batch_times, first_batch, cpu_per_image = [], [], [], []
    with tfds.testing.mock_data(as_dataset_fn=as_dataset), sampler.labelled("pipeline"):
        dataset = data.make_dataset(spec, "train", batch, training=True, seed=FLAGS.seed)
        for epoch in range(FLAGS.pipeline_epochs + 1):  # The first fills the cache.
            seen, (start, cpu_start) = 0, clocks()
            last = start
            for x, _ in dataset:
                now = time.perf_counter()
                if seen == 0:
                    first = now - start
                elif epoch > 0:
                    batch_times.append((now - last) / int(x.shape[0]) * batch)
                seen += int(x.shape[0])
                last = now
            if epoch > 0:
                wall, cpu = clocks()
                epochs.append(seen / (wall - start))
                cpu_per_image.append((cpu - cpu_start) / seen)
                first_batch.append(first)
    epoch_stats = summarize(epochs)
    return {
        "dataset": "cifar100 (in-memory uint8 through keras_ffl.data.make_dataset)",
        "images": count,
        "batch_size": batch,
        "epochs": FLAGS.pipeline_epochs,
        "images_per_s": epoch_stats["median"],
        "epoch_images_per_s": epoch_stats,
        "batch_s": summarize(batch_times),
        "first_batch_s": summarize(first_batch),
        # CPU seconds the pipeline spends per image (all its threads): what it takes
        # away from training when both share the CPU.
        "cpu_s_per_image": summarize(cpu_per_image),
        "peak_rss_mib": sampler.peaks.get("pipeline", 0) / MIB,
    }


# Serving ----------------------------------------------------------------------------------


def export_for_serving(name, model, export_dir):
    """{head: SavedModel path} of `model`'s --serving_heads, exported with keras_ffl.export."""
    spec = data.get_spec("cifar100")
    result = export_savedmodels(model, export_dir, name, mean=spec.mean, std=spec.std, version=1)
    paths = {m.name.removeprefix(f"{name}_"): m.path for m in result.models}
    return {h: p for h, p in paths.items() if h in FLAGS.serving_heads}


def benchmark_serving(models, device, sampler):
    """Batch-1 latency and batch-N throughput of every exported head's serving_default."""
    export_dir = tempfile.mkdtemp(prefix="ffl_benchmark_export_")
    try:
        endpoints = {}
        for name, model in models.items():
            start = time.perf_counter()
            for head, path in export_for_serving(name, model, export_dir).items():
                with tf.device(device):
                    loaded = tf.saved_model.load(path)
                endpoints[f"{name}/{head}"] = (loaded, loaded.signatures[serving.SERVING_SIGNATURE])
            print(f"  exported {name} ({time.perf_counter() - start:.0f} s)", flush=True)
        rng = np.random.default_rng(FLAGS.seed)
        batches = {
            b: tf.constant(rng.integers(0, 256, (b, 32, 32, 3), dtype=np.uint8))
            for b in (1, FLAGS.serving_batch)
        }
        calls = {1: FLAGS.serving_steps, FLAGS.serving_batch: max(2, FLAGS.serving_steps // 5)}
        times = {(key, b): [] for key in endpoints for b in batches}

        def call(fn, images):
            outputs = fn(images=images)
            return outputs["probabilities"].numpy()  # Waits for the result.

        for key, (_, fn) in endpoints.items():  # Warm-up: the first calls build kernels.
            for images in batches.values():
                for _ in range(3):
                    call(fn, images)
        rounds = 5
        for r in range(rounds):
            for key, (_, fn) in endpoints.items():
                with sampler.labelled(f"serving/{key}"), tf.device(device):
                    for b, images in batches.items():
                        n = math.ceil(calls[b] / rounds)
                        for _ in range(n):
                            start = time.perf_counter()
                            call(fn, images)
                            times[(key, b)].append(time.perf_counter() - start)
        results = {}
        for key in endpoints:
            entry = {"peak_rss_mib": sampler.peaks.get(f"serving/{key}", 0) / MIB}
            for b in batches:
                stats = summarize(times[(key, b)])
                entry[f"batch_{b}"] = {"latency_s": stats, "images_per_s": b / stats["median"]}
            results[key] = entry
        return results
    finally:
        shutil.rmtree(export_dir, ignore_errors=True)


# Profile ---------------------------------------------------------------------------------


def benchmark_profile(models, device):
    """{model name: op time per step by category} of `fit` on each model (tools/step_profile.py)."""
    dataset = synthetic_batches(FLAGS.batch_size, FLAGS.num_classes, FLAGS.seed)
    results = {}
    for name, model in models.items():

        def run():
            with tf.device(device):
                model.fit(dataset, epochs=1, steps_per_epoch=FLAGS.profile_steps, verbose=0)

        run()  # Untimed: traces the step if the training section did not.
        network = getattr(model, "network", model)
        results[name] = step_profile.profile_steps(
            run, FLAGS.profile_steps, network.name, model.optimizer.name
        )
    return results


def print_profile(profile):
    names = list(profile)
    print("\nOp time per `fit` step by category (tf.profiler; ms, % of the model's op time)")
    print(f"{'category':<22}" + "".join(f"{name:>24}" for name in names))
    totals = {name: sum(profile[name]["ms_per_step"].values()) for name in names}
    for category in step_profile.CATEGORIES:
        cells = "".join(
            f"{profile[n]['ms_per_step'][category]:15.1f} ({100 * profile[n]['ms_per_step'][category] / totals[n]:4.1f}%)"
            for n in names
        )
        print(f"{category:<22}{cells}")
    print(f"{'total op time':<22}" + "".join(f"{totals[n]:15.1f}        " for n in names))
    for name in names:
        parts = ", ".join(f"{part} {ms:.0f}" for part, ms in profile[name]["by_part"].items())
        print(f"  {name} by part (ms): {parts}")


# Machine, report --------------------------------------------------------------------------


def machine_info(device, jit_compile):
    cpu_model = platform.processor()
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as file:
            for line in file:
                if line.startswith("model name"):
                    cpu_model = line.split(":", 1)[1].strip()
                    break
    build = tf.sysconfig.get_build_info()
    return {
        "device": device,
        "gpus": [d.name for d in tf.config.list_physical_devices("GPU")],
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cpu_model": cpu_model,
        "memory_gib": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / (1 << 30)
        if hasattr(os, "sysconf")
        else None,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "keras_backend": keras.backend.backend(),
        "cuda": build.get("cuda_version"),
        "onednn_opts_env": os.environ.get("TF_ENABLE_ONEDNN_OPTS"),
        "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
        "inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads(),
        "jit_compile": jit_compile,
        "batch_size": FLAGS.batch_size,
        "steps": FLAGS.steps,
        "warmup": FLAGS.warmup,
        "chunk": FLAGS.chunk,
        "steps_per_execution": 1,
        "load_average_start": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }


def _paired(numerator, denominator):
    """Median and quartiles over rounds of the ratio of two chunks' wall medians.

    Chunks of one round ran back to back, so a slow spell of the machine hits
    both; this cancels more of the load noise than the ratio of overall medians.
    """
    pairs = [a[0] / b[0] for a, b in zip(numerator["chunk_medians"], denominator["chunk_medians"])]
    stats = summarize(pairs)
    return {"median": stats["median"], "p25": stats["p25"], "p75": stats["p75"]}


def _ratio(numerator, denominator):
    return {
        "wall": numerator["step_s"]["median"] / denominator["step_s"]["median"],
        "wall_paired": _paired(numerator, denominator),
        "cpu": numerator["cpu_s"]["median"] / denominator["cpu_s"]["median"],
    }


def ratios(results):
    """The ratios the benchmark exists for, where their inputs were measured.

    Step-time ratios come three ways: of wall-time medians, paired per round
    (`_paired`), and of process-CPU-time medians, the steadiest on a shared machine.
    """
    out = {}
    train = results.get("training", {})
    baseline = model_name(BASELINE)
    base = train.get(baseline, {}).get("fit")
    for name, entry in train.items():
        if base and "fit" in entry and name != baseline:
            out[f"{name} fit / {baseline} fit"] = _ratio(entry["fit"], base)
    for name, entry in train.items():
        if "fit" in entry and "loop" in entry:
            out[f"{name} fit / loop"] = _ratio(entry["fit"], entry["loop"])
    pipeline = results.get("pipeline")
    for name, entry in train.items():
        if pipeline and "fit" in entry:
            out[f"pipeline / {name} fit images per s"] = {
                # Both measured alone, in wall time.
                "wall": pipeline["images_per_s"] / entry["fit"]["images_per_s"],
                # The pipeline's CPU per image over training's: the share of CPU it
                # adds when it feeds this model on the same cores.
                "cpu_share": pipeline["cpu_s_per_image"]["median"]
                / (entry["fit"]["cpu_s"]["median"] / FLAGS.batch_size),
            }
    return out


def ms(seconds):
    return f"{1000 * seconds:8.1f}"


def print_report(results):
    info = results["machine"]
    print()
    print(
        f"keras_ffl benchmark: {info['device']}, {info['cpu_count']} CPUs ({info['cpu_model']}), "
        f"TF {info['tensorflow']}, Keras {info['keras']}, jit_compile={info['jit_compile']}, "
        f"batch {info['batch_size']}"
    )
    train = results.get("training")
    if train:
        print(
            f"\nTraining, steps_per_execution=1, {info['steps']} timed steps per row "
            f"(interleaved in chunks of {info['chunk']}); step = start-to-start interval"
        )
        header = (
            f"{'model':<21} {'mode':<4} {'params':>7} {'median ms':>9} {'p10':>6} {'p90':>6} "
            f"{'IQR':>5} {'img/s':>6} {'x vanilla':>9} {'CPU s':>6} {'x vanilla':>9} {'step MiB':>8}"
        )
        print(header)
        print("-" * len(header))
        base = train.get(model_name(BASELINE), {}).get("fit")
        for name, entry in train.items():
            for mode in ("fit", "loop"):
                if mode not in entry:
                    continue
                s, c = entry[mode]["step_s"], entry[mode]["cpu_s"]
                if base:
                    rel = f"{s['median'] / base['step_s']['median']:9.2f}"
                    rel_cpu = f"{c['median'] / base['cpu_s']['median']:9.2f}"
                else:
                    rel = rel_cpu = f"{'':>9}"
                print(
                    f"{name:<21} {mode:<4} {entry['trainable_params'] / 1e3:6.0f}k "
                    f"{ms(s['median'])[-9:]} {ms(s['p10']).strip():>6} {ms(s['p90']).strip():>6} "
                    f"{ms(s['iqr']).strip():>5} {entry[mode]['images_per_s']:6.1f} {rel} "
                    f"{c['median']:6.3f} {rel_cpu} {entry[mode]['step_memory_mib']:8.0f}"
                )
        print(
            "  (ms: wall time per step; CPU s: process CPU seconds per step, all threads; "
            f"x vanilla: vs {model_name(BASELINE)} fit;\n   step MiB: TF allocator peak of a "
            "step above what was allocated before it)"
        )
    pipeline = results.get("pipeline")
    if pipeline:
        e = pipeline["epoch_images_per_s"]
        print(
            f"\nInput pipeline ({pipeline['dataset']}, {pipeline['images']} images, batch "
            f"{pipeline['batch_size']}): {e['median']:,.0f} img/s per epoch "
            f"(p10 {e['p10']:,.0f}, p90 {e['p90']:,.0f}, {e['n']} epochs), "
            f"{1e6 * pipeline['cpu_s_per_image']['median']:.1f} CPU us per image; first batch "
            f"of an epoch {ms(pipeline['first_batch_s']['median']).strip()} ms"
        )
    serve = results.get("serving")
    if serve:
        print("\nServing (SavedModel serving_default, uint8 images in, probabilities out)")
        b = FLAGS.serving_batch
        header = (
            f"{'model/head':<32} {'b=1 median ms':>13} {'p10':>7} {'p90':>7} {'b=1 img/s':>9} "
            f"{f'b={b} median ms':>15} {f'b={b} img/s':>11}"
        )
        print(header)
        print("-" * len(header))
        for key, entry in serve.items():
            one, big = entry["batch_1"], entry[f"batch_{b}"]
            print(
                f"{key:<32} {ms(one['latency_s']['median']):>13} {ms(one['latency_s']['p10']).strip():>7} "
                f"{ms(one['latency_s']['p90']).strip():>7} {one['images_per_s']:9.1f} "
                f"{ms(big['latency_s']['median']):>15} {big['images_per_s']:11.1f}"
            )
    if results.get("ratios"):
        print("\nRatios (wall: of medians; paired: median [p25, p75] over rounds; cpu: of CPU medians)")
        for key, value in results["ratios"].items():
            if "wall_paired" in value:
                p = value["wall_paired"]
                print(
                    f"  {key:<44} wall {value['wall']:5.2f}  paired {p['median']:5.2f} "
                    f"[{p['p25']:.2f}, {p['p75']:.2f}]  cpu {value['cpu']:5.2f}"
                )
            else:
                print(
                    f"  {key:<44} wall {value['wall']:5.1f}  (pipeline CPU = "
                    f"{100 * value['cpu_share']:.1f}% of training's)"
                )
    print(
        f"\nProcess RSS high-water mark {results['memory']['max_rss_mib']:.0f} MiB; load average "
        f"{info['load_average_start']} at start, {results['memory'].get('load_average_end')} at end."
    )


# Main -------------------------------------------------------------------------------------


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


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    try:
        for key in FLAGS.models:
            parse_model(key)
    except ValueError as err:
        raise app.UsageError(f"--models: {err}") from err
    unknown = set(FLAGS.sections) - set(SECTIONS + OPTIONAL_SECTIONS)
    if unknown:
        raise app.UsageError(
            f"Unknown --sections {sorted(unknown)}; choose from {SECTIONS + OPTIONAL_SECTIONS}."
        )
    logging.set_verbosity(logging.WARNING)  # TF's and TFDS's INFO lines would bury the table.
    tf.get_logger().setLevel("ERROR")
    if FLAGS.reference:
        run_reference()
        return
    device_type = configure(FLAGS.device)
    device = "/GPU:0" if device_type == "gpu" else "/CPU:0"
    # auto: off on CPU, on on GPU (measurements in the comment above --jit_compile).
    jit_compile = {"true": True, "false": False}.get(FLAGS.jit_compile, device_type == "gpu")
    keras.utils.set_random_seed(FLAGS.seed)
    keys = list(dict.fromkeys([BASELINE, *FLAGS.models]))
    modes = [m for m in ("fit", "loop") if m in FLAGS.sections]
    results = {"machine": machine_info(device_type, jit_compile)}
    with MemorySampler() as sampler:
        if modes:
            print("Training", flush=True)
            results["training"], models = benchmark_training(
                keys, modes, device, sampler, jit_compile
            )
        elif {"serving", "profile"} & set(FLAGS.sections):  # Serve or profile untrained models.
            with tf.device(device):
                models = {model_name(k): build(k, FLAGS.num_classes, jit_compile) for k in keys}
        if "pipeline" in FLAGS.sections:
            print("Input pipeline", flush=True)
            results["pipeline"] = benchmark_pipeline(sampler)
        if "serving" in FLAGS.sections:
            print("Serving", flush=True)
            results["serving"] = benchmark_serving(models, device, sampler)
        if "profile" in FLAGS.sections:
            print("Profile", flush=True)
            results["profile"] = benchmark_profile(models, device)
    results["ratios"] = ratios(results)
    results["memory"] = {
        "max_rss_mib": max_rss_bytes() / MIB,
        "rss_source": sampler.source,
        "load_average_end": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }
    print_report(results)
    if results.get("profile"):
        print_profile(results["profile"])
    directory = os.path.dirname(os.path.abspath(FLAGS.output))
    os.makedirs(directory, exist_ok=True)
    with open(FLAGS.output, "w", encoding="utf-8") as file:
        json.dump(results, file, indent=2)
    print(f"\nWrote {FLAGS.output}")


def run_reference():
    """The paired comparison with the official code (tools/reference_benchmark.py)."""
    print("Paired with the official code", flush=True)
    results = reference_benchmark.run(
        FLAGS.reference,
        batch_size=FLAGS.batch_size,
        num_classes=FLAGS.num_classes,
        threads=FLAGS.reference_threads,
        rounds=FLAGS.reference_rounds,
        chunk=FLAGS.chunk,
        warmup=FLAGS.warmup,
        seed=FLAGS.seed,
    )
    results["machine"] = machine_info("cpu", False)
    results["table"] = reference_benchmark.report(results)
    reference_benchmark.print_report(results, results["table"])
    with open(FLAGS.output, "w", encoding="utf-8") as file:
        json.dump(results, file, indent=2)
    print(f"\nWrote {FLAGS.output}")


if __name__ == "__main__":
    app.run(main)
