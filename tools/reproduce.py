"""Reproduces every comparison of the paper on real Fashion-MNIST, offline.

The protocol (docs/RESULTS.md): every configuration of `RUNS` trained with the
training command's default Fashion-MNIST recipe ("small": 6 full passes over the
60,000 training images) once per seed. Each run is the training command itself,
`python -m keras_ffl.fit ... --model_dir=OUTPUT_DIR/<run>/seed<k>`, so a run
stopped at any point resumes at its last finished epoch when this tool is
started again, and finished runs are reused. `--workers` runs train side by
side, the cores split between them. The report (the paper's tables, a
claim-by-claim reading, plots) is written by tools/reproduction_report.py.

    python tools/reproduce.py                  # train what is missing, then report
    python tools/reproduce.py --report_only    # redraw the report from the runs
"""

import json
import os
import signal
import subprocess
import sys
import time

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reproduction_report  # noqa: E402  (beside this file)
from reproduction_report import CASE2_ARCH, RUNS  # noqa: E402

_FLAGS = flags.FLAGS
flags.DEFINE_string(
    "output_dir", "results/reproduction",
    "Where each run's model directory goes (its results are committed; checkpoints are not).",
)
flags.DEFINE_string("docs_dir", "docs", "Where RESULTS.md and its plots are written.")
flags.DEFINE_string("data_dir", None, "Directory with Fashion-MNIST's files, if not the default.")
flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds; every run is trained once per seed.")
flags.DEFINE_list("runs", None, f"Only these runs (default: all of {', '.join(RUNS)}).")
flags.DEFINE_integer("workers", 2, "Runs trained at the same time.")
flags.DEFINE_integer(
    "threads", None, "TensorFlow threads per run (default: the CPU cores / --workers)."
)
flags.DEFINE_bool("report_only", False, "Only rebuild the report from the runs on disk.")


def run_command(name, seed, output_dir, data_dir=None):
    """The training command of run `name` with `seed`."""
    method, options = RUNS[name]
    command = [
        sys.executable, "-m", "keras_ffl.fit",
        "--dataset=fashion_mnist",
        f"--method={method}",
        f"--seed={seed}",
        f"--model_dir={reproduction_report.run_path(output_dir, name, seed)}",
        "--verbose=2",
    ]
    command += [f"--{key}={_flag_value(value)}" for key, value in options.items()]
    if data_dir:
        command.append(f"--data_dir={data_dir}")
    return command


def _flag_value(value):
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, tuple):
        return ",".join(value)
    return str(value)


def pending(names, seeds, output_dir):
    """(name, seed) of the runs without results, seed by seed so that every seed's
    comparisons complete before the next seed starts."""
    return [
        (name, seed)
        for seed in seeds
        for name in names
        if not reproduction_report.is_finished(output_dir, name, seed)
    ]


def train_missing(todo, output_dir, workers, threads, data_dir=None):
    """Trains `todo` with up to `workers` commands at once; returns the failed runs.

    Each run's CPU time (all its threads, from the OS) and wall time are added
    to TIMING_FILE: the CPU time is the cost of the run whatever else the
    machine was doing, or if it was paused.
    """
    timing_path = os.path.join(output_dir, reproduction_report.TIMING_FILE)
    timing = reproduction_report.read_timing(output_dir)
    env = dict(
        os.environ,
        TF_NUM_INTRAOP_THREADS=str(threads),
        TF_NUM_INTEROP_THREADS=str(threads),
        TF_CPP_MIN_LOG_LEVEL="2",
    )
    queue, running, failed = list(todo), {}, []
    total = len(todo)

    def record(process, status, usage):
        name, seed, started, log = running.pop(process)
        log.close()
        entry = timing.setdefault(f"{name}/seed{seed}", {"cpu_s": 0.0, "wall_s": 0.0})
        entry["cpu_s"] += usage.ru_utime + usage.ru_stime
        entry["wall_s"] += time.time() - started
        _write_json(timing_path, timing)
        return name, seed, os.waitstatus_to_exitcode(status), time.time() - started

    try:
        while queue or running:
            while queue and len(running) < workers:
                name, seed = queue.pop(0)
                run_path = reproduction_report.run_path(output_dir, name, seed)
                os.makedirs(run_path, exist_ok=True)
                log = open(f"{run_path}.log", "a")
                process = subprocess.Popen(
                    run_command(name, seed, output_dir, data_dir),
                    stdout=log, stderr=subprocess.STDOUT, env=env,
                )
                running[process] = (name, seed, time.time(), log)
                done = total - len(queue) - len(running)
                print(f"[{done}/{total} done] started {name} seed {seed} "
                      f"(log: {run_path}.log)", flush=True)
            time.sleep(2)
            for process in list(running):
                pid, status, usage = os.wait4(process.pid, os.WNOHANG)
                if not pid:
                    continue
                process.returncode = os.waitstatus_to_exitcode(status)  # reaped here
                name, seed, code, seconds = record(process, status, usage)
                if code:
                    failed.append((name, seed))
                    print(f"FAILED {name} seed {seed} (exit {code}); see "
                          f"{reproduction_report.run_path(output_dir, name, seed)}.log",
                          flush=True)
                else:
                    print(f"finished {name} seed {seed} in {seconds / 60:.1f} min",
                          flush=True)
    finally:
        for process in list(running):
            # The training command commits whole epochs only, so a run stopped at any
            # moment resumes at its last finished epoch next time. (SIGTERM, since
            # a background job ignores SIGINT.)
            process.terminate()
            _, status, usage = os.wait4(process.pid, 0)
            process.returncode = os.waitstatus_to_exitcode(status)
            record(process, status, usage)
    return failed


def _write_json(path, value):
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(value, f, indent=2, sort_keys=True)
    os.replace(tmp, path)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    names = _FLAGS.runs or list(RUNS)
    unknown = sorted(set(names) - set(RUNS))
    if unknown:
        raise app.UsageError(f"Unknown --runs {unknown}; known: {', '.join(RUNS)}.")
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
        todo = pending(names, seeds, _FLAGS.output_dir)
        print(f"{len(todo)} runs to train, {_FLAGS.workers} at a time with "
              f"{threads} threads each; case 2 is {' & '.join(CASE2_ARCH)}.", flush=True)
        failed = train_missing(todo, _FLAGS.output_dir, _FLAGS.workers, threads, _FLAGS.data_dir)
    path = reproduction_report.write_report(
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
