"""What the runs say of the paper's claims: final errors, gains paired by seed with
their standard error, the verdict, mean test-accuracy curves, and how the report
shows them."""

import numpy as np

from reproduction.protocol import shorter

VERDICTS = ("holds", "same direction but unresolved", "does not hold")


def final_errors(curves, name, head):
    """{seed: top-1 error (%) at the last epoch} of one head of one run."""
    return {
        seed: 100.0 * (1.0 - by_head[head][-1])
        for seed, by_head in sorted(curves.get(name, {}).items())
        if head in by_head
    }


def paired_gain(worse, better):
    """(mean, standard error, seeds) of worse - better, paired by seed; None when unpaired."""
    seeds = sorted(set(worse) & set(better))
    if not seeds:
        return None
    gains = np.array([worse[s] - better[s] for s in seeds])
    error = gains.std(ddof=1) / np.sqrt(len(gains)) if len(gains) > 1 else float("nan")
    return float(gains.mean()), float(error), len(seeds)


def verdict(mean, error):
    """holds: the gain exceeds twice its standard error; same direction but
    unresolved: positive but within that; does not hold: zero or negative."""
    if mean <= 0:
        return VERDICTS[2]
    return VERDICTS[0] if mean > 2 * error else VERDICTS[1]


def of_seeds(errors, seeds):
    """The entries of `errors` ({seed: error}) for `seeds`, in their order."""
    return {seed: errors[seed] for seed in seeds if seed in errors}


def both_gains(curves, worse, better, seeds):
    """(mean, standard error) of a claim's paired gain after the convergence check's
    schedule and after the protocol's, each over the seeds of `seeds` that all four
    runs have (None, None if none)."""
    runs = (shorter(worse), shorter(better), worse, better)
    errors = [final_errors(curves, *run) for run in runs]
    common = [seed for seed in seeds if all(seed in e for e in errors)]
    if not common:
        return None, None
    errors = [of_seeds(e, common) for e in errors]
    return paired_gain(*errors[:2])[:2], paired_gain(*errors[2:])[:2]


def mean_curve(curves, name, head):
    """Test accuracy (%) per epoch of one head of one run, mean over its seeds (None if none)."""
    runs = [by_head[head] for by_head in curves.get(name, {}).values() if head in by_head]
    return 100.0 * np.mean(runs, axis=0) if runs else None


def fmt(errors):
    """Mean ± sample standard deviation over seeds."""
    values = list(errors.values())
    if not values:
        return "—"
    if len(values) == 1:
        return f"{values[0]:.2f} (1 seed)"
    return f"{np.mean(values):.2f} ± {np.std(values, ddof=1):.2f}"


def signed(value):
    """`value` with its sign, to 2 decimals, never "-0.00"."""
    return f"{round(value, 2) + 0.0:+.2f}"


def shown_gain(mean, error):
    """A gain with its standard error ("+1.20 ± 0.30"; the mean alone with one seed)."""
    return f"{signed(mean)} ± {error:.2f}" if np.isfinite(error) else signed(mean)
