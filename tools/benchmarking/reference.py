"""keras_ffl against the official PyTorch FFL code, paired, in one process tree.

  python tools/benchmark.py --reference=../shared/reference/FFL-pytorch

`--reference` is a checkout of github.com/Jangho-Kim/FFL-pytorch and PyTorch
must be installed; what each side runs is in `reference_workers`.

Each (framework, model) runs in a worker process of its own
(tools/reference_benchmark.py), so that peak RSS is per framework and model; the
parent sends every worker the same commands in interleaved rounds (order
reversed every other round), so load from other processes lands on both
frameworks alike. Every worker builds the same batch (same seed; NCHW for
PyTorch), uses the same number of threads, and reports per-step wall and
process-CPU times. Ratios are per round (official time / keras_ffl time of
chunks that ran back to back), with median and quartiles.
"""

import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

from benchmarking.timing import load_average, per_round_ratio

#: The worker's command line, beside this package.
TOOLS_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKER_SCRIPT = os.path.join(TOOLS_DIR, "reference_benchmark.py")
WORKERS = (("official", "ffl"), ("keras_ffl", "ffl"), ("official", "vanilla"), ("keras_ffl", "vanilla"))
#: (framework, eval mode) pairs timed on the FFL workers.
EVALS = (("official", "eval"), ("official", "no_grad"), ("keras_ffl", "savedmodel"))
#: The targets the comparison judges: the official step time / keras_ffl's (at least),
#: keras_ffl's FFL step / its vanilla step (at most), the official eval forward /
#: keras_ffl's fused SavedModel at the training batch (at least), and keras_ffl's peak
#: RSS / the official code's while training FFL (at most).
TRAINING_TARGETS = {"ffl": 1.5, "vanilla": 1.3}
FFL_OVER_VANILLA_TARGET = 1.15
INFERENCE_TARGET = 2
MEMORY_TARGET = 1.2


class Worker:
    """A worker process and its command channel."""

    def __init__(self, framework, model, reference, batch_size, num_classes, threads, seed, warmup):
        self.name = f"{framework}/{model}"
        self.log = tempfile.TemporaryFile(mode="w+")
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [TOOLS_DIR, os.environ.get("PYTHONPATH")])))
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        options = {
            "framework": framework, "model": model, "reference": reference,
            "batch_size": batch_size, "num_classes": num_classes, "threads": threads,
            "seed": seed, "warmup": warmup,
        }  # fmt: skip
        self.process = subprocess.Popen(
            [sys.executable, WORKER_SCRIPT, *(f"--{key}={value}" for key, value in options.items())],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, text=True, env=env,
        )  # fmt: skip
        self.ready = self._reply()

    def _reply(self):
        line = self.process.stdout.readline()
        if not line:
            self.log.seek(0)
            raise RuntimeError(f"The {self.name} worker failed:\n{self.log.read()[-4000:]}")
        return json.loads(line)

    def send(self, **command):
        self.process.stdin.write(json.dumps(command) + "\n")
        self.process.stdin.flush()
        return self._reply()

    def close(self):
        if self.process.poll() is None:
            self.process.stdin.close()
            self.process.wait(timeout=60)
        self.log.close()


def run(reference, *, batch_size=128, num_classes=100, threads=2, rounds=10, chunk=3, warmup=3,
        eval_calls=5, seed=0, log=print):  # fmt: skip
    """Runs the paired comparison; returns its results (see `report`)."""
    if not os.path.isfile(os.path.join(reference, "our_network.py")):
        raise FileNotFoundError(
            f"{reference} has no our_network.py: --reference must be a checkout of the official "
            "FFL-pytorch repository."
        )
    load_start = load_average()
    workers = {}
    try:
        for framework, model in WORKERS:
            start = time.perf_counter()
            workers[(framework, model)] = Worker(
                framework, model, reference, batch_size, num_classes, threads, seed, warmup
            )
            log(f"  {framework}/{model} ready ({time.perf_counter() - start:.0f} s)")
        chunks = {key: [] for key in workers}
        for r in range(rounds):
            for key in WORKERS if r % 2 == 0 else WORKERS[::-1]:
                reply = workers[key].send(cmd="train", steps=chunk)
                chunks[key].append(reply)
            log(f"  round {r + 1}/{rounds}")
        training_rss = {key: chunks[key][-1]["max_rss_mib"] for key in workers}
        evals = {}
        for size in (batch_size, 1):
            calls = eval_calls if size > 1 else 5 * eval_calls
            for r in range(rounds):
                for framework, mode in EVALS if r % 2 == 0 else EVALS[::-1]:
                    reply = workers[(framework, "ffl")].send(
                        cmd="eval", mode=mode, batch_size=size, calls=max(1, calls // rounds)
                    )
                    evals.setdefault((framework, mode, size), []).append(reply)
            log(f"  eval at batch {size}")
    finally:
        for worker in workers.values():
            worker.close()
    return {
        "training": {f"{f}/{m}": chunks[(f, m)] for f, m in WORKERS},
        "training_max_rss_mib": {f"{f}/{m}": training_rss[(f, m)] for f, m in WORKERS},
        "import_rss_mib": {f"{f}/{m}": workers[(f, m)].ready["import_rss_mib"] for f, m in WORKERS},
        "eval": {f"{f}/{mode}/{size}": v for (f, mode, size), v in evals.items()},
        "settings": {
            "batch_size": batch_size, "num_classes": num_classes, "threads": threads,
            "rounds": rounds, "chunk": chunk, "warmup": warmup, "seed": seed,
            "load_average_start": load_start, "load_average_end": load_average(),
        },
    }  # fmt: skip


def _chunk_medians(chunks, clock):
    return [float(np.median(c[clock])) for c in chunks]


def paired_ratio(numerator_chunks, denominator_chunks, clock="wall"):
    """Per-round ratios of two configurations' chunk medians: median, p25, p75, count."""
    return per_round_ratio(
        _chunk_medians(numerator_chunks, clock), _chunk_medians(denominator_chunks, clock)
    )


def report(results):
    """The paired table: rows of (what, official, keras_ffl, ratio stats, target, met)."""
    train, evals = results["training"], results["eval"]
    batch_size = results["settings"]["batch_size"]

    def step(key, clock="wall"):
        return float(np.median(_chunk_medians(train[key], clock)))

    rows = []
    for model, target in TRAINING_TARGETS.items():
        official, ours = train[f"official/{model}"], train[f"keras_ffl/{model}"]
        rows.append({
            "what": f"{model} ResNet-32 training step (throughput ratio)",
            "official_ms": 1000 * step(f"official/{model}"),
            "keras_ffl_ms": 1000 * step(f"keras_ffl/{model}"),
            "ratio": paired_ratio(official, ours),
            "cpu_ratio": paired_ratio(official, ours, "cpu"),
            "target": f">= {target}",
            "met": paired_ratio(official, ours)["median"] >= target,
        })  # fmt: skip
    for framework in ("official", "keras_ffl"):
        ratio = paired_ratio(train[f"{framework}/ffl"], train[f"{framework}/vanilla"])
        judged = framework == "keras_ffl"
        rows.append({
            "what": f"{framework}: FFL step / vanilla step",
            "official_ms": None, "keras_ffl_ms": None, "ratio": ratio,
            "cpu_ratio": paired_ratio(train[f"{framework}/ffl"], train[f"{framework}/vanilla"], "cpu"),
            "target": f"<= {FFL_OVER_VANILLA_TARGET}" if judged else "",
            "met": ratio["median"] <= FFL_OVER_VANILLA_TARGET if judged else None,
        })  # fmt: skip
    for size in (batch_size, 1):
        ours = evals[f"keras_ffl/savedmodel/{size}"]
        for mode in ("eval", "no_grad"):
            official = evals[f"official/{mode}/{size}"]
            ratio = paired_ratio(official, ours)
            judged = size == batch_size and mode == "eval"
            rows.append({
                "what": f"FFL inference, batch {size}: official {mode} forward vs fused SavedModel",
                "official_ms": 1000 * float(np.median(_chunk_medians(official, "wall"))),
                "keras_ffl_ms": 1000 * float(np.median(_chunk_medians(ours, "wall"))),
                "ratio": ratio, "cpu_ratio": paired_ratio(official, ours, "cpu"),
                "target": f">= {INFERENCE_TARGET}" if judged else "",
                "met": ratio["median"] >= INFERENCE_TARGET if judged else None,
            })  # fmt: skip
    rss, imported = results["training_max_rss_mib"], results["import_rss_mib"]
    for model in ("ffl", "vanilla"):
        for what, official, ours in (
            (f"peak RSS while training {model} (MiB; keras_ffl / official)",
             rss[f"official/{model}"], rss[f"keras_ffl/{model}"]),
            (f"  of which above the framework's import ({model})",
             rss[f"official/{model}"] - imported[f"official/{model}"],
             rss[f"keras_ffl/{model}"] - imported[f"keras_ffl/{model}"]),
        ):  # fmt: skip
            judged = model == "ffl" and what.startswith("peak")
            ratio = ours / official
            rows.append({
                "what": what, "official_ms": official, "keras_ffl_ms": ours,
                "ratio": {"median": ratio, "p25": ratio, "p75": ratio}, "cpu_ratio": None,
                "target": f"<= {MEMORY_TARGET}" if judged else "",
                "met": ratio <= MEMORY_TARGET if judged else None,
            })  # fmt: skip
    return rows


def print_report(results, rows):
    s = results["settings"]
    print(
        f"\nPaired with the official PyTorch code: batch {s['batch_size']}, CIFAR-100 shapes, "
        f"{s['threads']} threads each, {s['rounds']} interleaved rounds of {s['chunk']} steps; "
        f"load average {s['load_average_start'][0]:.1f} at start, {s['load_average_end'][0]:.1f} at end"
    )
    header = (
        f"{'':<66} {'official':>9} {'keras_ffl':>9} {'ratio':>6} {'[p25, p75]':>13} "
        f"{'CPU ratio':>9}  target"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        ratio, cpu = row["ratio"], row["cpu_ratio"]
        official = "" if row["official_ms"] is None else f"{row['official_ms']:9.1f}"
        ours = "" if row["keras_ffl_ms"] is None else f"{row['keras_ffl_ms']:9.1f}"
        verdict = "" if row["met"] is None else ("met" if row["met"] else "NOT MET")
        print(
            f"{row['what']:<66} {official:>9} {ours:>9} {ratio['median']:6.2f} "
            f"[{ratio['p25']:5.2f}, {ratio['p75']:5.2f}] "
            f"{'' if cpu is None else format(cpu['median'], '9.2f'):>9}  {row['target']} {verdict}"
        )
    print(
        "  (ms: median step or call, wall time; ratio: per round, official time / keras_ffl "
        "time, so > 1 means keras_ffl is faster,\n   except FFL/vanilla rows (step-time "
        "ratios) and RSS rows (keras_ffl / official); CPU ratio: the same of process CPU time)"
    )
