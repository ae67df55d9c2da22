"""The benchmark's sections: training (`fit` and a bare loop, interleaved), the input
pipeline, serving and the op profile. Each returns the statistics tools/benchmark.py
writes to its JSON."""

import dataclasses
import math
import shutil
import tempfile
import time

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from benchmarking import op_profile
from benchmarking.memory import MIB, allocator_memory, max_rss_bytes, reset_allocator_peak
from benchmarking.models import (
    IMAGE_SHAPE,
    StepTimer,
    bare_step,
    build,
    count_params,
    synthetic_batches,
)
from benchmarking.timing import clocks, intervals, summarize
from keras_ffl import data
from keras_ffl.export import export_savedmodels, serving

#: Training modes: `model.fit` as users run it, and the bare loop (`models.bare_step`).
MODES = ("fit", "loop")
#: Serving: untimed calls per endpoint and batch size before timing (kernels are built
#: on the first calls), and the interleaved rounds the timed calls are spread over.
SERVING_WARMUP_CALLS = 3
SERVING_ROUNDS = 5


@dataclasses.dataclass(frozen=True)
class Settings:
    """What every section is run with (tools/benchmark.py's flags of the same names)."""

    batch_size: int = 128
    num_classes: int = 100
    seed: int = 0
    steps: int = 40
    warmup: int = 5
    chunk: int = 5
    pipeline_images: int = 50_000
    pipeline_epochs: int = 3
    serving_steps: int = 30
    serving_batch: int = 128
    serving_heads: tuple = ("fused", "sub1", "sub2")
    profile_steps: int = 5


# Training ------------------------------------------------------------------------------------


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


def benchmark_training(specs, modes, settings, device, sampler, jit_compile, log=print):
    """Builds and warms every model of `specs`, then runs all (model, mode) pairs interleaved.

    Returns ({model name: statistics}, {model name: the trained model}).
    """
    batch = settings.batch_size
    dataset = synthetic_batches(batch, settings.num_classes, settings.seed)
    runners, results = [], {}
    for spec in specs:
        before_hwm = max_rss_bytes()
        start = time.perf_counter()
        with tf.device(device):
            model = build(spec, settings.num_classes, jit_compile)
            runner = TrainingRunner(spec.name, model, dataset, modes, jit_compile, device)
            with sampler.labelled(f"{spec.name}/warmup"):
                for mode in modes:
                    runner.run(mode, settings.warmup)
        runner.reset()
        results[spec.name] = {
            "model": spec.key,
            "trainable_params": count_params(model),
            "build_and_warmup_s": time.perf_counter() - start,
            # Growth of the process's RSS high-water mark while this model was built
            # and warmed up (models are warmed up one after another, in --models order).
            "rss_high_water_growth_mib": (max_rss_bytes() - before_hwm) / MIB,
        }
        memory = allocator_memory(device)
        if memory is not None:  # Everything TF holds: all models built so far, their state.
            results[spec.name]["allocator_current_after_warmup_mib"] = memory["current"] / MIB
        runners.append(runner)
        log(f"  built and warmed up {spec.name} ({results[spec.name]['build_and_warmup_s']:.0f} s)")

    rounds = math.ceil(settings.steps / settings.chunk)
    for r in range(rounds):
        steps = min(settings.chunk, settings.steps - r * settings.chunk)
        # Reverse the order every other round so that no configuration always
        # follows the same one.
        for runner in runners if r % 2 == 0 else runners[::-1]:
            for mode in modes if r % 2 == 0 else modes[::-1]:
                with sampler.labelled(f"{runner.name}/{mode}"), tf.device(device):
                    runner.run(mode, steps)
        log(f"  round {r + 1}/{rounds}")

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


# Input pipeline ------------------------------------------------------------------------------


def benchmark_pipeline(settings, sampler):
    """keras_ffl.data's CIFAR-100 training pipeline on in-memory uint8 images.

    TFDS's `mock_data` replaces only the prepared-files reader, with the images
    given here; everything after it (cache, shuffle, batch, crop, flip,
    normalise, prefetch) is the pipeline `fit` gets.
    """
    spec = data.get_spec("cifar100")
    count = settings.pipeline_images
    rng = np.random.default_rng(settings.seed)
    images = rng.integers(0, 256, (count, *spec.image_shape), dtype=np.uint8)
    labels = rng.integers(0, spec.num_classes, count, dtype=np.int64)

    def as_dataset(builder, *args, **kwargs):
        return tf.data.Dataset.from_tensor_slices({"image": images, "label": labels})

    batch = settings.batch_size
    epochs, batch_times, first_batch, cpu_per_image = [], [], [], []
    with tfds.testing.mock_data(as_dataset_fn=as_dataset), sampler.labelled("pipeline"):
        dataset = data.make_dataset(spec, "train", batch, training=True, seed=settings.seed)
        for epoch in range(settings.pipeline_epochs + 1):  # The first fills the cache.
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
        "epochs": settings.pipeline_epochs,
        "images_per_s": epoch_stats["median"],
        "epoch_images_per_s": epoch_stats,
        "batch_s": summarize(batch_times),
        "first_batch_s": summarize(first_batch),
        # CPU seconds the pipeline spends per image (all its threads): what it takes
        # away from training when both share the CPU.
        "cpu_s_per_image": summarize(cpu_per_image),
        "peak_rss_mib": sampler.peaks.get("pipeline", 0) / MIB,
    }


# Serving -------------------------------------------------------------------------------------


def export_for_serving(name, model, export_dir, heads):
    """{head: SavedModel path} of `model`'s `heads` (those it has), exported with
    keras_ffl.export."""
    spec = data.get_spec("cifar100")
    result = export_savedmodels(model, export_dir, name, mean=spec.mean, std=spec.std, version=1)
    paths = {m.name.removeprefix(f"{name}_"): m.path for m in result.models}
    return {h: p for h, p in paths.items() if h in heads}


def benchmark_serving(models, settings, device, sampler, log=print):
    """Batch-1 latency and batch-N throughput of every exported head's serving_default."""
    export_dir = tempfile.mkdtemp(prefix="ffl_benchmark_export_")
    try:
        endpoints = {}
        for name, model in models.items():
            start = time.perf_counter()
            exported = export_for_serving(name, model, export_dir, settings.serving_heads)
            for head, path in exported.items():
                with tf.device(device):
                    loaded = tf.saved_model.load(path)
                endpoints[f"{name}/{head}"] = (loaded, loaded.signatures[serving.SERVING_SIGNATURE])
            log(f"  exported {name} ({time.perf_counter() - start:.0f} s)")
        rng = np.random.default_rng(settings.seed)
        large = settings.serving_batch
        batches = {
            b: tf.constant(rng.integers(0, 256, (b, *IMAGE_SHAPE), dtype=np.uint8))
            for b in (1, large)
        }
        # A fifth as many calls at the large batch as at batch 1.
        calls = {1: settings.serving_steps, large: max(2, settings.serving_steps // 5)}
        times = {(key, b): [] for key in endpoints for b in batches}

        def call(fn, images):
            outputs = fn(images=images)
            return outputs["probabilities"].numpy()  # Waits for the result.

        for key, (_, fn) in endpoints.items():
            for images in batches.values():
                for _ in range(SERVING_WARMUP_CALLS):
                    call(fn, images)
        for _ in range(SERVING_ROUNDS):
            for key, (_, fn) in endpoints.items():
                with sampler.labelled(f"serving/{key}"), tf.device(device):
                    for b, images in batches.items():
                        for _ in range(math.ceil(calls[b] / SERVING_ROUNDS)):
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


# Profile -------------------------------------------------------------------------------------


def benchmark_profile(models, settings, device):
    """{model name: op time per step by category} of `fit` on each model (op_profile)."""
    dataset = synthetic_batches(settings.batch_size, settings.num_classes, settings.seed)
    results = {}
    for name, model in models.items():

        def run():
            with tf.device(device):
                model.fit(dataset, epochs=1, steps_per_epoch=settings.profile_steps, verbose=0)

        run()  # Untimed: traces the step if the training section did not.
        network = getattr(model, "network", model)
        results[name] = op_profile.profile_steps(
            run, settings.profile_steps, network.name, model.optimizer.name
        )
    return results
