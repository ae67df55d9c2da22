"""Clocks, the machine's load, step intervals and their statistics; no framework is
imported here, so that the PyTorch worker of the reference comparison measures itself
without TensorFlow."""

import os
import time

import numpy as np


def clocks():
    """(wall, process CPU) seconds now; CPU time counts all of the process's threads."""
    return time.perf_counter(), time.process_time()


def load_average():
    """The 1, 5 and 15 minute load averages, or None where the OS has none."""
    return os.getloadavg() if hasattr(os, "getloadavg") else None


def intervals(starts):
    """Times between consecutive start times."""
    return list(np.diff(np.asarray(starts)))


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


def quartiles(values):
    """Median, p25, p75 and count of `values`."""
    stats = summarize(values)
    return {key: stats[key] for key in ("median", "p25", "p75", "n")}


def per_round_ratio(numerator_medians, denominator_medians):
    """Quartiles over rounds of the ratio of two configurations' chunk medians.

    Chunks of one round ran back to back, so a slow spell of the machine hits
    both; this cancels more of the load noise than the ratio of overall medians.
    """
    return quartiles([a / b for a, b in zip(numerator_medians, denominator_medians)])


def timed(fn, calls):
    """{"wall": [...], "cpu": [...]}: seconds of each of `calls` calls of `fn`."""
    wall, cpu = [], []
    for _ in range(calls):
        w, c = clocks()
        fn()
        w_end, c_end = clocks()
        wall.append(w_end - w)
        cpu.append(c_end - c)
    return {"wall": wall, "cpu": cpu}
