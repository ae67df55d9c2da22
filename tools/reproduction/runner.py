"""The reproduction's runs: each one the training command, trained side by side.

Every run of `COMMANDS` (the paper's comparisons, `protocol.ALL_RUNS`, and the
mobile study, `mobile.RUNS`) is `python -m keras_ffl.fit` in its own model
directory, so a stopped run resumes at its last finished epoch and a finished one
(results.json written) is not trained again.
"""

import os
import subprocess
import sys
import time

from reproduction import mobile, runs
from reproduction.protocol import ALL_RUNS, CONVERGENCE_RUNS, CONVERGENCE_SEEDS, PROTOCOL, flag_args

#: Every run tools/reproduce.py trains: name -> (method, its flags), each study's
#: PROTOCOL with the run's own flags on top.
COMMANDS = {
    **{name: (method, {**PROTOCOL, **options}) for name, (method, options) in ALL_RUNS.items()},
    **{name: (method, {**mobile.PROTOCOL, **options})
       for name, (method, options) in mobile.RUNS.items()},
}


def run_command(name, seed, output_dir, data_dir=None):
    """The training command of run `name` with `seed` (`COMMANDS`)."""
    method, options = COMMANDS[name]
    command = [
        sys.executable, "-m", "keras_ffl.fit",
        "--dataset=fashion_mnist",
        f"--method={method}",
        f"--seed={seed}",
        f"--model_dir={runs.run_path(output_dir, name, seed)}",
        "--verbose=2",
        *flag_args(options),
    ]
    if data_dir:
        command.append(f"--data_dir={data_dir}")
    return command


def pending(names, seeds, output_dir):
    """(name, seed) of the runs without results, seed by seed so that every seed's
    comparisons complete before the next seed starts; the runs of CONVERGENCE_RUNS
    among `names` come last, with the first CONVERGENCE_SEEDS seeds."""
    order = [(name, seed) for seed in seeds for name in names if name not in CONVERGENCE_RUNS]
    order += [(name, seed) for seed in seeds[:CONVERGENCE_SEEDS]
              for name in names if name in CONVERGENCE_RUNS]
    return [run for run in order if not runs.is_finished(output_dir, *run)]


def train_missing(todo, output_dir, workers, threads, data_dir=None):
    """Trains `todo` with up to `workers` commands at once; returns the failed runs.

    Each run's CPU time (all its threads, from the OS) and wall time are added
    to the timing file (`runs.TIMING_FILE`): the CPU time is the cost of the run
    whatever else the machine was doing, or if it was paused.
    """
    timing = runs.read_timing(output_dir)
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
        runs.write_timing(output_dir, timing)
        return name, seed, os.waitstatus_to_exitcode(status), time.time() - started

    try:
        while queue or running:
            while queue and len(running) < workers:
                name, seed = queue.pop(0)
                run_path = runs.run_path(output_dir, name, seed)
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
                          f"{runs.run_path(output_dir, name, seed)}.log",
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

