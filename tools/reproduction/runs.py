"""The reproduction's runs on disk: where each run's model directory is, whether it
finished, its test accuracy per epoch, and the timing file of their cost."""

import os

import numpy as np

from keras_ffl import run_dir
from reproduction.protocol import ALL_RUNS, CONVERGENCE_RUNS, CONVERGENCE_SEEDS

#: Accumulated training wall time per run, across invocations: {name/seedK: seconds}.
TIMING_FILE = "timing.json"


def run_path(output_dir, name, seed):
    """The model directory of run `name` with `seed`."""
    return os.path.join(output_dir, name, f"seed{seed}")


def is_finished(output_dir, name, seed):
    """Whether the run trained all its epochs (the command writes results.json then)."""
    return os.path.exists(os.path.join(run_path(output_dir, name, seed), run_dir.RESULTS_FILE))


def read_timing(output_dir):
    """{"<run>/seed<k>": {"cpu_s", "wall_s"}} of the runs trained so far ({} before any)."""
    return run_dir.read_json(os.path.join(output_dir, TIMING_FILE)) or {}


def write_timing(output_dir, timing):
    """Replaces the timing file atomically, its runs in sorted order."""
    run_dir.write_json(os.path.join(output_dir, TIMING_FILE), dict(sorted(timing.items())))


def cost(output_dir, runs):
    """(CPU hours, summed wall hours) the timing file records for the runs of `runs`."""
    entries = [entry for key, entry in read_timing(output_dir).items()
               if key.split("/")[0] in runs]
    return (sum(e["cpu_s"] for e in entries) / 3600, sum(e["wall_s"] for e in entries) / 3600)


def load_curves(output_dir, seeds, names=ALL_RUNS):
    """{run: {seed: {head: test accuracy per epoch}}} of the finished runs of `names`; the
    runs of CONVERGENCE_RUNS with the first CONVERGENCE_SEEDS seeds, as tools/reproduce.py
    trains them."""
    curves = {}
    for name in names:
        for seed in seeds[:CONVERGENCE_SEEDS] if name in CONVERGENCE_RUNS else seeds:
            if not is_finished(output_dir, name, seed):
                continue
            rows = _history(output_dir, name, seed)
            heads = [k[len("val_"):-len("_acc")] for k in rows[0]
                     if k.startswith("val_") and k.endswith("_acc")]
            curves.setdefault(name, {})[seed] = {
                head: np.array([float(row[f"val_{head}_acc"]) for row in rows]) for head in heads
            }
    return curves


def training_accuracy(output_dir, name, seed, head):
    """A head's training accuracy in the run's last epoch (%), as history.csv records it:
    the running mean over that epoch's augmented batches, in training mode."""
    return 100.0 * float(_history(output_dir, name, seed)[-1][f"{head}_acc"])


def ramp_up(output_dir, name, seed):
    """The distillation weight w of each epoch of a run, as its history.csv records it."""
    return [float(row["distill_weight"]) for row in _history(output_dir, name, seed)]


def _history(output_dir, name, seed):
    path = os.path.join(run_path(output_dir, name, seed), run_dir.HISTORY_FILE)
    return run_dir.read_history(path)
