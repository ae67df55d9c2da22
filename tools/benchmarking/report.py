"""The benchmark's report: the machine it ran on, the ratios it exists for, the printed tables."""

import contextlib
import os
import platform

import keras
import tensorflow as tf

from benchmarking import op_profile
from benchmarking.timing import load_average, per_round_ratio


def machine_info(device, jit_compile, settings):
    """The machine, the libraries and the settings of a run (`settings`: a sections.Settings)."""
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
        "batch_size": settings.batch_size,
        "steps": settings.steps,
        "warmup": settings.warmup,
        "chunk": settings.chunk,
        "steps_per_execution": 1,
        "load_average_start": load_average(),
    }


def _ratio(numerator, denominator):
    paired = per_round_ratio(
        *([wall for wall, _ in entry["chunk_medians"]] for entry in (numerator, denominator))
    )
    return {
        "wall": numerator["step_s"]["median"] / denominator["step_s"]["median"],
        "wall_paired": {key: paired[key] for key in ("median", "p25", "p75")},
        "cpu": numerator["cpu_s"]["median"] / denominator["cpu_s"]["median"],
    }


def ratios(results, baseline, batch_size):
    """The ratios the benchmark exists for, where their inputs were measured.

    Step-time ratios come three ways: of wall-time medians, paired per round
    (`timing.per_round_ratio`), and of process-CPU-time medians, the steadiest on
    a shared machine. `baseline` is the name of the model the others are compared with.
    """
    out = {}
    train = results.get("training", {})
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
                / (entry["fit"]["cpu_s"]["median"] / batch_size),
            }
    return out


def ms(seconds):
    return f"{1000 * seconds:8.1f}"


def print_report(results, baseline, serving_batch):
    """Prints the tables of `results` (as tools/benchmark.py writes them); `baseline` is the
    name of the model the others are compared with."""
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
        base = train.get(baseline, {}).get("fit")
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
            f"x vanilla: vs {baseline} fit;\n   step MiB: TF allocator peak of a "
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
        b = serving_batch
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


def print_profile(profile):
    """Prints each model's op time per `fit` step by category (sections.benchmark_profile)."""
    names = list(profile)
    print("\nOp time per `fit` step by category (tf.profiler; ms, % of the model's op time)")
    print(f"{'category':<22}" + "".join(f"{name:>24}" for name in names))
    totals = {name: sum(profile[name]["ms_per_step"].values()) for name in names}
    for category in op_profile.CATEGORIES:
        cells = "".join(
            f"{profile[n]['ms_per_step'][category]:15.1f} ({100 * profile[n]['ms_per_step'][category] / totals[n]:4.1f}%)"
            for n in names
        )
        print(f"{category:<22}{cells}")
    print(f"{'total op time':<22}" + "".join(f"{totals[n]:15.1f}        " for n in names))
    for name in names:
        parts = ", ".join(f"{part} {value:.0f}" for part, value in profile[name]["by_part"].items())
        print(f"  {name} by part (ms): {parts}")
