"""Reproduces every comparison of the paper on real Fashion-MNIST, offline.

The protocol (docs/RESULTS.md; `PROTOCOL`, `RUNS` and `CONVERGENCE_RUNS` of
tools/reproduction/protocol.py): every configuration of `RUNS` trained once per
seed with the Fashion-MNIST recipe and PROTOCOL's flags (8 full passes over the
60,000 training images, half-width ResNet-8s), then the convergence check (every
configuration again under the schedule scaled to 6 passes). The mobile study
(tools/reproduction/mobile.py) trains FFL and its baselines the same way with
MobileNetV3Small sub-networks; its runs are named "mobile_*". Each run is the
training command itself,
`python -m keras_ffl.fit ... --model_dir=OUTPUT_DIR/<run>/seed<k>`, so a run
stopped at any point resumes at its last finished epoch when this tool is
started again, and finished runs are reused. `--workers` runs train side by
side, the cores split between them. The report (the paper's tables, a
claim-by-claim reading, plots) is written by tools/reproduction/report.py.

    python tools/reproduce.py                  # train what is missing, then report
    python tools/reproduce.py --report_only    # redraw the report from the runs
"""

import os
import signal

from absl import app, flags

from reproduction import report, runner  # beside this file
from reproduction.protocol import CASE2_ARCH

_FLAGS = flags.FLAGS
flags.DEFINE_string(
    "output_dir", "results/reproduction",
    "Where each run's model directory goes (its results are committed; checkpoints are not).",
)
flags.DEFINE_string("docs_dir", "docs", "Where RESULTS.md and its plots are written.")
flags.DEFINE_string("data_dir", None, "Directory with Fashion-MNIST's files, if not the default.")
flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds; every run is trained once per seed.")
flags.DEFINE_list(
    "runs", None, f"Only these runs (default: all of {', '.join(runner.COMMANDS)})."
)
flags.DEFINE_integer("workers", 2, "Runs trained at the same time.")
flags.DEFINE_integer(
    "threads", None, "TensorFlow threads per run (default: the CPU cores / --workers)."
)
flags.DEFINE_bool("report_only", False, "Only rebuild the report from the runs on disk.")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    names = _FLAGS.runs or list(runner.COMMANDS)
    unknown = sorted(set(names) - set(runner.COMMANDS))
    if unknown:
        raise app.UsageError(f"Unknown --runs {unknown}; known: {', '.join(runner.COMMANDS)}.")
    try:
        seeds = [int(s) for s in _FLAGS.seeds]
    except ValueError:
        raise app.UsageError(f"--seeds must be integers; got {_FLAGS.seeds}.") from None
    if _FLAGS.workers < 1:
        raise app.UsageError(f"--workers must be at least 1; got {_FLAGS.workers}.")
    failed = []
    # Stopped by SIGTERM (kill, a session's end) as by Ctrl-C: stop the runs, keep the timing.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    if not _FLAGS.report_only:
        os.makedirs(_FLAGS.output_dir, exist_ok=True)
        threads = _FLAGS.threads or max(1, (os.cpu_count() or 1) // _FLAGS.workers)
        todo = runner.pending(names, seeds, _FLAGS.output_dir)
        print(f"{len(todo)} runs to train, {_FLAGS.workers} at a time with "
              f"{threads} threads each; case 2 is {' & '.join(CASE2_ARCH)}.", flush=True)
        failed = runner.train_missing(todo, _FLAGS.output_dir, _FLAGS.workers, threads, _FLAGS.data_dir)
    path = report.write_report(
        _FLAGS.output_dir, _FLAGS.docs_dir, seeds, command=_command_line()
    )
    print(f"Wrote {path}.")
    if failed:
        raise SystemExit(f"{len(failed)} runs failed: "
                         + ", ".join(f"{name} seed {seed}" for name, seed in failed))


def _command_line():
    """The command that regenerates the report, with the flags that differ from defaults."""
    args = [
        f"--{name}={','.join(value) if isinstance(value, list) else value}"
        for name, value in sorted(_FLAGS.flag_values_dict().items())
        if name in _OWN_FLAGS and _FLAGS[name].present
    ]
    return " ".join(["python tools/reproduce.py", *args])


_OWN_FLAGS = {"output_dir", "docs_dir", "data_dir", "seeds"}


if __name__ == "__main__":
    app.run(main)
