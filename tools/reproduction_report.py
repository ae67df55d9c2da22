"""The reproduction's protocol and its report: docs/RESULTS.md and plots from the runs.

`PROTOCOL`, `RUNS` and `CONVERGENCE_RUNS` are the protocol (what
tools/reproduce.py trains); the rest reads the runs' model directories (the
training command's history.csv) and writes the convergence check, the paper's
tables, a claim-by-claim reading and one plot per table.
"""

import csv
import json
import os

import numpy as np

#: Case 1's architecture, and case 2's pair: a ResNet and a WRN of this machine's
#: scale. ResNet-8 at half width (8/16/32 channels) is the scale at which 11
#: configurations x 3 seeds train in one working session on 2 cores (docs/RESULTS.md
#: gives the cost); case 2 pairs it with
#: the pre-activation WRN-10 at the same widths (the paper's Pair1 is ResNet-32 &
#: WRN-16-2).
ARCH = "resnet8x0.5"
CASE2_ARCH = (ARCH, "wrn10_0.5")

#: The training command's flags every run gets, on top of the Fashion-MNIST recipe
#: ("small": batch 128, Nesterov SGD 0.1, L2 1e-4 / fusion 1e-5, T = 3): the paper's
#: CIFAR schedule (300 epochs, x0.1 at 50% and 75%, ramp-up over 27%) scaled to 8
#: full passes over the training set, spelled out so that the protocol does not
#: change with the recipe; 8 rather than the recipe's own 6, which the convergence
#: check trains to compare the two.
PROTOCOL = {"arch": ARCH, "epochs": 8, "lr_milestones": (4, 6), "rampup_epochs": 2}

#: Run name -> (method, flags besides PROTOCOL's). DualNet's iterative stage ends at
#: the first learning-rate drop, as Table VII's does (256 of 307 epochs): the
#: extractors alternate pass by pass. The vanilla network of case 1 is the 2-net's members: each is
#: trained alone with cross-entropy on the same batches, which is what vanilla
#: training is, so a separate vanilla run would repeat them.
RUNS = {
    "ffl": ("ffl", {}),
    "ensemble": ("ensemble", {}),
    "dualnet": ("dualnet", {"iterative_epochs": PROTOCOL["lr_milestones"][0]}),
    "ffl_average": ("ffl", {"fusion": "average"}),
    "ffl_no_ekd": ("ffl", {"ekd": False}),
    "ffl_no_kd": ("ffl", {"ekd": False, "fkd": False}),
    "ffl3": ("ffl", {"branches": 3}),
    "one3": ("one", {"branches": 3}),
    "vanilla_wrn": ("vanilla", {"arch": CASE2_ARCH[1]}),
    "ffl_case2": ("ffl", {"arch": CASE2_ARCH}),
    "dml_case2": ("dml", {"arch": CASE2_ARCH}),
}


def _rescheduled(method, options, schedule):
    """A run of RUNS under another schedule (DualNet's iterative stage still ending at
    the first drop)."""
    if "iterative_epochs" in options:
        options = {**options, "iterative_epochs": schedule["lr_milestones"][0]}
    return method, {**options, **schedule}


#: The convergence check, trained once every run of RUNS has finished, with the
#: first CONVERGENCE_SEEDS seeds: every run of RUNS again under the schedule scaled
#: to 6 passes (the small recipe's own), so that each head and each claim is read
#: after both schedules. Run "<name>_short" is RUNS' "<name>" with _SHORT's flags.
_SHORT = {"epochs": 6, "lr_milestones": (3, 5), "rampup_epochs": 2}
CONVERGENCE_SEEDS = 3
_SHORT_SUFFIX = "_short"
CONVERGENCE_RUNS = {
    f"{name}{_SHORT_SUFFIX}": _rescheduled(*RUNS[name], _SHORT) for name in RUNS
}
ALL_RUNS = {**RUNS, **CONVERGENCE_RUNS}


def short_run(name):
    """The convergence check's run of RUNS' `name`, or None when it has none."""
    shorter = f"{name}{_SHORT_SUFFIX}"
    return shorter if shorter in CONVERGENCE_RUNS else None

#: keras_ffl.heads' names, spelled here because importing keras_ffl starts TensorFlow,
#: which the runner (alive beside the training processes) and the report do without.
SUB1, SUB2, FUSED, ENSEMBLE, GATED, AVG, SUB_MEAN = (
    "sub1", "sub2", "fused", "ensemble", "gated", "avg", "sub_mean"
)

#: The vanilla network of case 1 and the head that reads it (see RUNS).
VANILLA = ("ensemble", SUB_MEAN)

#: The paper's claims: (text, table, (worse run, head), (better run, head), the
#: paper's gain in points of CIFAR-100 top-1 error with ResNet-32 (None where it
#: gives no number), where the paper gives it).
CLAIMS = [
    ("FFL's fused classifier beats DualNet's Z_avg", "I",
     ("dualnet", AVG), ("ffl", FUSED), 1.93, "Table I(a)"),
    ("FFL's sub-networks beat DualNet's", "I",
     ("dualnet", SUB_MEAN), ("ffl", SUB_MEAN), 7.85, "Table I(b)"),
    ("The fusion module beats averaging: fused (A vs B)", "II",
     ("ffl_average", FUSED), ("ffl", FUSED), 0.54, "Table II"),
    ("The fusion module beats averaging: sub-networks (A vs B)", "II",
     ("ffl_average", SUB_MEAN), ("ffl", SUB_MEAN), 0.40, "Table II"),
    ("EKD helps the fused classifier (A vs C)", "II",
     ("ffl_no_ekd", FUSED), ("ffl", FUSED), 1.47, "Table II"),
    ("EKD helps the sub-networks (A vs C)", "II",
     ("ffl_no_ekd", SUB_MEAN), ("ffl", SUB_MEAN), 1.30, "Table II"),
    ("FKD helps the sub-networks (C vs D)", "II",
     ("ffl_no_kd", SUB_MEAN), ("ffl_no_ekd", SUB_MEAN), 2.68, "Table II"),
    ("3 branches: FFL's fused classifier beats ONE's gated teacher (FFL vs ONE-E)", "III",
     ("one3", GATED), ("ffl3", FUSED), 0.37, "Table III, mean"),
    ("3 branches: FFL's sub-networks beat ONE's (FFL-S vs ONE)", "III",
     ("one3", SUB_MEAN), ("ffl3", SUB_MEAN), 0.28, "Table III, mean"),
    ("Case 2: FFL's net 1 (ResNet) beats DML's", "V",
     ("dml_case2", SUB1), ("ffl_case2", SUB1), 1.25, "Table V, Pair1"),
    ("Case 2: FFL's net 2 (WRN) beats DML's", "V",
     ("dml_case2", SUB2), ("ffl_case2", SUB2), 0.52, "Table V, Pair1"),
    ("Case 2: FFL's fused classifier beats DML's ensemble of peers", "V",
     ("dml_case2", ENSEMBLE), ("ffl_case2", FUSED), None, "§IV-B: \"a stronger teacher\""),
    ("FFL's fused classifier beats the 2-net ensemble, with fewer parameters", "VI",
     ("ensemble", ENSEMBLE), ("ffl", FUSED), 0.85, "Table VI"),
    ("FFL's sub-networks beat a vanilla network", "IV",
     VANILLA, ("ffl", SUB_MEAN), 1.11, "Table IV, ImageNet"),
    ("FFL's fused classifier beats its own sub-networks", "II",
     ("ffl", SUB_MEAN), ("ffl", FUSED), 1.50, "Table II, A"),
]

#: What rules out a defect of ours behind a claim about a run's method: the tests
#: that pin its objective and training against the paper and its reference code.
METHOD_CHECKS = {
    "ffl": "FFL's loss terms (CE + w·T²·(EKD + FKD), teachers held constant) against NumPy "
           "(tests/test_losses.py), the fusion module against NumPy (tests/test_fusion.py), "
           "the official code's parameter counts (tests/test_models.py, "
           "tests/test_parameter_counts.py)",
    "ensemble": "the 2-net's loss is the sum of independent cross-entropies and its networks "
                "do not interact (tests/test_method_ensemble.py)",
    "dualnet": "DualNet's loss and Z_avg against NumPy, each stage updating only its own "
               "variables (tests/test_method_dualnet.py)",
    "one": "ONE's loss terms against NumPy, the gate trained only by the teacher's "
           "cross-entropy, the reference's parameter count (tests/test_method_one.py)",
    "dml": "DML's CE + KL per peer against NumPy, each sub-step updating only its own peer "
           "after a fresh forward pass (tests/test_method_dml.py)",
    "vanilla": "the cross-entropy alone (tests/test_method_vanilla.py)",
}

VERDICTS = ("holds", "same direction but unresolved", "does not hold")

#: Accumulated training wall time per run, across invocations: {name/seedK: seconds}.
TIMING_FILE = "timing.json"
_RESULTS_FILE = "results.json"  # keras_ffl.run_dir.RESULTS_FILE; read without importing TF.
_HISTORY_FILE = "history.csv"


def run_path(output_dir, name, seed):
    """The model directory of run `name` with `seed`."""
    return os.path.join(output_dir, name, f"seed{seed}")


def is_finished(output_dir, name, seed):
    """Whether the run trained all its epochs (the command writes results.json then)."""
    return os.path.exists(os.path.join(run_path(output_dir, name, seed), _RESULTS_FILE))


def read_timing(output_dir):
    path = os.path.join(output_dir, TIMING_FILE)
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        return json.load(f)


def load_curves(output_dir, seeds):
    """{run: {seed: {head: test accuracy per epoch}}} of the finished runs; the runs of
    CONVERGENCE_RUNS with the first CONVERGENCE_SEEDS seeds, as tools/reproduce.py
    trains them."""
    curves = {}
    for name in ALL_RUNS:
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


def ramp_up(output_dir, name, seed):
    """The distillation weight w of each epoch of a run, as its history.csv records it."""
    return [float(row["distill_weight"]) for row in _history(output_dir, name, seed)]


def _history(output_dir, name, seed):
    with open(os.path.join(run_path(output_dir, name, seed), _HISTORY_FILE)) as f:
        return list(csv.DictReader(f))


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


def fmt(errors):
    """Mean ± sample standard deviation over seeds."""
    values = list(errors.values())
    if not values:
        return "—"
    if len(values) == 1:
        return f"{values[0]:.2f} (1 seed)"
    return f"{np.mean(values):.2f} ± {np.std(values, ddof=1):.2f}"


#: How the report names runs and heads.
RUN_LABELS = {
    "ffl": "FFL", "ensemble": "2-net", "dualnet": "DualNet", "ffl_average": "FFL B (averaging)",
    "ffl_no_ekd": "FFL C (no EKD)", "ffl_no_kd": "FFL D (no KD)", "ffl3": "FFL, 3 branches",
    "one3": "ONE, 3 branches", "vanilla_wrn": f"vanilla {CASE2_ARCH[1]}",
    "ffl_case2": "FFL case 2", "dml_case2": "DML case 2",
}
RUN_LABELS.update({
    short_run(name): f"{RUN_LABELS[name]}, {_SHORT['epochs']} passes"
    for name in RUNS if short_run(name)
})
HEAD_LABELS = {
    FUSED: "fused", SUB_MEAN: "sub-networks", ENSEMBLE: "ensemble", GATED: "ONE-E",
    AVG: "Z_avg", SUB1: "net 1", SUB2: "net 2",
}


def label(name, head):
    """A run's head as the report names it ("FFL fused", "vanilla" for VANILLA)."""
    if (name, head) == VANILLA:
        return f"vanilla {ARCH} (2-net members)"
    if (name, head) == _shorter(VANILLA):
        return f"vanilla {ARCH} (2-net members), {_SHORT['epochs']} passes"
    return f"{RUN_LABELS[name]} {HEAD_LABELS[head]}"


def write_report(output_dir, docs_dir, seeds, command, parameters=None):
    """Writes RESULTS.md and its plots to docs_dir; returns RESULTS.md's path.

    `parameters` maps run names (and "vanilla") to trainable parameter counts
    (computed from the registry when None).
    """
    os.makedirs(docs_dir, exist_ok=True)
    curves = load_curves(output_dir, seeds)
    parameters = parameters if parameters is not None else count_parameters()
    err = {
        name: {head: final_errors(curves, name, head)
               for head in set().union(*(set(h) for h in by_seed.values()))}
        for name, by_seed in curves.items()
    }
    lines = [
        "# Results: the paper's comparisons on Fashion-MNIST",
        "",
        *_protocol_section(output_dir, seeds, curves, command),
        *_convergence_section(curves, seeds),
        *_table_sections(err, parameters),
        *_claims_section(err, curves, output_dir, seeds),
    ]
    path = os.path.join(docs_dir, "RESULTS.md")
    with open(path, "w") as f:
        f.write("\n".join(lines))
    _plot_tables(curves, docs_dir)
    return path


def _flags(options):
    return " ".join(
        f"--{key}={','.join(map(str, value)) if isinstance(value, tuple) else value}"
        for key, value in options.items()
    )


def _protocol_section(output_dir, seeds, curves, command):
    epochs, (first, second) = PROTOCOL["epochs"], PROTOCOL["lr_milestones"]
    protocol_cost, check_cost = (_cost(output_dir, runs) for runs in (RUNS, CONVERGENCE_RUNS))
    finished = sum(len(curves.get(name, {})) for name in RUNS)
    checks = sum(len(curves.get(name, {})) for name in CONVERGENCE_RUNS)
    return [
        "## Protocol",
        "",
        "Real Fashion-MNIST (60,000 training / 10,000 test images, offline from Debian's "
        "`dataset-fashion-mnist`). Every run is the training command with the dataset's "
        "recipe (`small`: batch 128, Nesterov SGD from 0.1, L2 1e-4 with 1e-5 on the fusion "
        f"layers, T = 3) and the flags `{_flags(PROTOCOL)}`: {epochs} full passes over the "
        f"training set, the learning rate ×0.1 after passes {first} and {second}, the "
        f"distillation weight ramped up over the first {_passes(PROTOCOL['rampup_epochs'])} — the "
        "paper's CIFAR schedule (300 epochs, ×0.1 at 150 and 225, ramp-up 80) scaled to "
        f"{_passes(epochs)}, rather than the `small` recipe's own {_SHORT['epochs']}: the "
        f"convergence check below compares the two. Case 1 uses `{ARCH}` sub-networks (the "
        "CIFAR ResNet-8 at half "
        "width, 8/16/32 channels; FFL and ONE share its stem and first two stages); case 2 "
        f"pairs it with `{CASE2_ARCH[1]}` (the pre-activation WRN-10 at the same widths). "
        f"DualNet's iterative stage ends at the first learning-rate drop, as Table VII's "
        "does (256 of 307 epochs): the extractors alternate pass by pass, sub-network 1 "
        "first, then joint training. The "
        f"vanilla {ARCH} is each member of the 2-net: trained alone with cross-entropy on "
        "the same batches, which is vanilla training, so its cells are the mean of two "
        "vanilla networks per seed. Every head is read at the last pass (no best-epoch "
        "picking): top-1 test error (%), mean ± sample standard deviation over seeds "
        f"{', '.join(str(s) for s in seeds)}. The half-width networks are this machine's "
        "scale: what the protocol costs at that scale follows.",
        "",
        f"Finished runs: {finished} of {len(RUNS) * len(seeds)}, and {checks} of "
        f"{len(CONVERGENCE_RUNS) * len(seeds[:CONVERGENCE_SEEDS])} runs of the convergence "
        f"check. Their cost (each run's CPU time from the OS and its wall time, in "
        f"`{os.path.join(output_dir, TIMING_FILE)}`), trained two at a time with one thread "
        "each on this machine's 2 cores, so that start to end takes about half the sum "
        "of the wall times:",
        "",
        "| runs | CPU-hours | wall hours, summed | wall hours, start to end |",
        "|---|---|---|---|",
        *(f"| {what} | {cpu:.1f} | {wall:.1f} | {wall / 2:.1f} |" for what, (cpu, wall) in (
            ("the protocol", protocol_cost), ("the convergence check", check_cost))),
        "",
        "A cell with fewer seeds than the others shows what has finished so far.",
        "",
        "Regenerate (finished runs are reused, a stopped one resumes at its last pass):",
        "",
        f"    {command}",
        "    python tools/reproduce.py --report_only   # redraw this page from the runs",
        "",
        "Each run is the training command, e.g. `python -m keras_ffl.fit "
        f"--dataset=fashion_mnist --method=ffl --branches=3 --seed=0 {_flags(PROTOCOL)} "
        "--model_dir=results/reproduction/ffl3/seed0`.",
        "",
    ]


def _cost(output_dir, runs):
    """(CPU hours, summed wall hours) the timing file records for the runs of `runs`."""
    entries = [entry for key, entry in read_timing(output_dir).items()
               if key.split("/")[0] in runs]
    return (sum(e["cpu_s"] for e in entries) / 3600, sum(e["wall_s"] for e in entries) / 3600)


def _passes(n):
    return f"{n} pass" if n == 1 else f"{n} passes"


def _signed(value):
    """`value` with its sign, to 2 decimals, never "-0.00"."""
    return f"{round(value, 2) + 0.0:+.2f}"


def _mean_curve(curves, name, head):
    runs = [by_head[head] for by_head in curves.get(name, {}).values() if head in by_head]
    return 100.0 * np.mean(runs, axis=0) if runs else None


def _convergence_section(curves, seeds):
    rows = []
    for *_, worse, better, _, _ in CLAIMS:
        rows += [run for run in (worse, better) if run not in rows]
    trained = [len(c) for c in (_mean_curve(curves, *row) for row in rows) if c is not None]
    epochs = max(trained, default=PROTOCOL["epochs"])
    lines = [
        "## Convergence",
        "",
        "Test accuracy (%) after each pass, mean over seeds, of every head the claims "
        "compare, and what the last pass (at the last learning rate) added:",
        "",
        "| head | " + " | ".join(f"pass {e}" for e in range(1, epochs + 1))
        + " | last pass added |",
        "|---|" + "---|" * (epochs + 1),
    ]
    for name, head in rows:
        curve = _mean_curve(curves, name, head)
        if curve is None:
            lines.append(f"| {label(name, head)} |" + " — |" * (epochs + 1))
            continue
        cells = " | ".join(f"{a:.2f}" for a in curve)
        lines.append(f"| {label(name, head)} | {cells} | {_signed(curve[-1] - curve[-2])} |")
    lines += ["", *_schedules_compared(curves, seeds),
              "![Convergence](results_convergence.png)", ""]
    return lines


def _shorter(run):
    """(its convergence-check run, head) of a (run, head) of RUNS, or None."""
    name, head = run
    return (short_run(name), head) if short_run(name) else None


def _convergence_heads():
    """The (run, head) of RUNS that the claims compare and the convergence check trains shorter."""
    heads = []
    for *_, worse, better, _, _ in CLAIMS:
        heads += [run for run in (worse, better) if _shorter(run) and run not in heads]
    return heads


def _schedules_compared(curves, seeds):
    """The convergence check: each head and each claim it covers, at _SHORT's length
    and at PROTOCOL's, over the same seeds."""
    check_seeds = seeds[:CONVERGENCE_SEEDS]
    epochs, short_epochs = PROTOCOL["epochs"], _SHORT["epochs"]
    lines = [
        f"The convergence check trains every configuration again with seeds "
        f"{', '.join(map(str, check_seeds))} under the schedule scaled to "
        f"{short_epochs} passes (`{_flags(_SHORT)}`, the `small` recipe's own). Top-1 "
        "error (%) at the end of each schedule, mean over the check's seeds, and what "
        "the last pass of the shorter one added:",
        "",
        f"| head | {_passes(short_epochs)} | {_passes(epochs)} | difference "
        f"| last of {_passes(short_epochs)} added |",
        "|---|---|---|---|---|",
    ]
    last_passes = {short_epochs: [], epochs: []}  # |last pass's change| of heads with both
    for run in _convergence_heads():
        short_curve, full_curve = _mean_curve(curves, *_shorter(run)), _mean_curve(curves, *run)
        if short_curve is not None and full_curve is not None:
            for length, curve in ((short_epochs, short_curve), (epochs, full_curve)):
                last_passes[length].append(abs(curve[-1] - curve[-2]))
        short, full = (_seeds(final_errors(curves, *r), check_seeds) for r in (_shorter(run), run))
        paired = sorted(set(short) & set(full))
        if not paired:
            lines.append(f"| {label(*run)} | — | — | — | — |")
            continue
        a, b = (np.mean([e[s] for s in paired]) for e in (short, full))
        lines.append(f"| {label(*run)} | {a:.2f} | {b:.2f} | {_signed(b - a)} "
                     f"| {_signed(short_curve[-1] - short_curve[-2])} |")
    if last_passes[epochs]:
        lines += ["", "What the last pass changed, over these heads: " + "; ".join(
            f"after {_passes(length)}, at most {max(changes):.2f} points (median "
            f"{np.median(changes):.2f})" for length, changes in last_passes.items()) + "."]
    lines += [
        "",
        "The claims after each schedule, paired by seed over the same seeds, mean ± "
        "standard error:",
        "",
        f"| claim | gain at {_passes(short_epochs)} | verdict at {_passes(short_epochs)} "
        f"| gain at {_passes(epochs)} | verdict at {_passes(epochs)} |",
        "|---|---|---|---|---|",
    ]
    for text, _, worse, better, *_ in CLAIMS:
        if not (_shorter(worse) and _shorter(better)):
            continue
        short, full = _both_gains(curves, worse, better, check_seeds)
        cells = [f"{_shown_gain(*g)} | {verdict(*g)}" if g else "— | not run yet"
                 for g in (short, full)]
        lines.append(f"| {text} | {' | '.join(cells)} |")
    return lines + [""]


def _seeds(errors, seeds):
    return {seed: errors[seed] for seed in seeds if seed in errors}


def _both_gains(curves, worse, better, seeds):
    """(mean, standard error) of a claim's paired gain after _SHORT's schedule and after
    PROTOCOL's, each over the seeds of `seeds` that all four runs have (None if none)."""
    runs = (_shorter(worse), _shorter(better), worse, better)
    errors = [final_errors(curves, *run) for run in runs]
    common = [seed for seed in seeds if all(seed in e for e in errors)]
    if not common:
        return None, None
    errors = [_seeds(e, common) for e in errors]
    return paired_gain(*errors[:2])[:2], paired_gain(*errors[2:])[:2]


def _shown_gain(mean, error):
    return f"{_signed(mean)} ± {error:.2f}" if np.isfinite(error) else _signed(mean)


def _table_sections(err, parameters):
    def cell(name, head):
        return fmt(err.get(name, {}).get(head, {}))

    def params(name):
        return f"{parameters[name]:,}" if name in parameters else "—"

    vanilla = cell(*VANILLA)
    lines = [
        "## Table I: FFL vs DualNet",
        "",
        "| network | params | (a) fused: DualNet (Z_avg) | (a) fused: FFL "
        "| (b) sub-networks: DualNet | (b) sub-networks: FFL |",
        "|---|---|---|---|---|---|",
        f"| {ARCH} ×2 | {params('dualnet')} / {params('ffl')} | {cell('dualnet', AVG)} "
        f"| {cell('ffl', FUSED)} | {cell('dualnet', SUB_MEAN)} | {cell('ffl', SUB_MEAN)} |",
        f"| vanilla {ARCH} | {params('vanilla')} | | | {vanilla} | |",
        "",
        "DualNet's own fused classifier (without the auxiliary logits): "
        f"{cell('dualnet', FUSED)}.",
        "",
        "![Table I curves](results_table1.png)",
        "",
        "## Table II: ablations",
        "",
        "| case | FM | EKD | FKD | fused | sub-network |",
        "|---|---|---|---|---|---|",
    ]
    for case, name, marks in (
        ("A", "ffl", "✓ | ✓ | ✓"),
        ("B", "ffl_average", " | ✓ | ✓"),
        ("C", "ffl_no_ekd", "✓ | | ✓"),
        ("D", "ffl_no_kd", "✓ | |"),
    ):
        lines.append(f"| {case} | {marks} | {cell(name, FUSED)} | {cell(name, SUB_MEAN)} |")
    lines += [
        f"| vanilla | | | | | {vanilla} |",
        "",
        "![Table II curves](results_table2.png)",
        "",
        f"## Table III: three branches, FFL vs ONE ({ARCH})",
        "",
        "| method | params | error |",
        "|---|---|---|",
        f"| ONE (mean of branches) | {params('one3')} | {cell('one3', SUB_MEAN)} |",
        f"| FFL-S (mean of sub-networks) | {params('ffl3')} | {cell('ffl3', SUB_MEAN)} |",
        f"| ONE-E (gated teacher) | | {cell('one3', GATED)} |",
        f"| FFL (fused classifier) | | {cell('ffl3', FUSED)} |",
        f"| vanilla | {params('vanilla')} | {vanilla} |",
        "",
        "![Table III curves](results_table3.png)",
        "",
        f"## Table V: case 2, {CASE2_ARCH[0]} & {CASE2_ARCH[1]}, FFL vs DML",
        "",
        "| method | params | net 1 | net 2 | fused | ensemble of nets |",
        "|---|---|---|---|---|---|",
        f"| DML | {params('dml_case2')} | {cell('dml_case2', SUB1)} | {cell('dml_case2', SUB2)} "
        f"| | {cell('dml_case2', ENSEMBLE)} |",
        f"| FFL | {params('ffl_case2')} | {cell('ffl_case2', SUB1)} | {cell('ffl_case2', SUB2)} "
        f"| {cell('ffl_case2', FUSED)} | {cell('ffl_case2', ENSEMBLE)} |",
        f"| vanilla | {params('vanilla')} / {params('vanilla_wrn')} | {vanilla} "
        f"| {cell('vanilla_wrn', SUB1)} | | |",
        "",
        "![Table V curves](results_table5.png)",
        "",
        f"## Table VI: FFL vs the 2-net ensemble ({ARCH})",
        "",
        "| method | params | error |",
        "|---|---|---|",
        f"| 2-net (two independent networks, averaged logits) | {params('ensemble')} "
        f"| {cell('ensemble', ENSEMBLE)} |",
        f"| FFL (fused classifier) | {params('ffl')} | {cell('ffl', FUSED)} |",
        f"| vanilla (the 2-net's members) | {params('vanilla')} | {vanilla} |",
        "",
        "The paper's case 2 rows of Table VI (a 2-net deepened to FFL's size) were not run.",
        "",
        "![Table VI curves](results_table6.png)",
        "",
    ]
    return lines


def _claims_section(err, curves, output_dir, seeds):
    lines = [
        "## The paper's claims, one by one",
        "",
        "Gain: the error reduction in points, paired by seed, mean ± standard error "
        "(sample standard deviation / √seeds). Verdict: *holds* when the gain exceeds "
        "twice its standard error; *same direction but unresolved* when it is positive "
        "but within that; *does not hold* when it is zero or negative. The paper's gains "
        "are CIFAR-100 top-1 error points with ResNet-32 (Table IV's, ImageNet with "
        "ResNet-34).",
        "",
        "| claim | table | paper's gain | gain here | standard error / paper's gain "
        "| seeds | verdict |",
        "|---|---|---|---|---|---|---|",
    ]
    counts = dict.fromkeys(VERDICTS, 0)
    resolved, failing = [], []
    for text, table, worse, better, paper, where in CLAIMS:
        shown_paper = f"{paper:.2f} ({where})" if paper is not None else f"not given ({where})"
        gain = paired_gain(err.get(worse[0], {}).get(worse[1], {}),
                           err.get(better[0], {}).get(better[1], {}))
        if gain is None:
            lines.append(f"| {text} | {table} | {shown_paper} | — | — | 0 | not run yet |")
            continue
        mean, error, n = gain
        outcome = verdict(mean, error)
        counts[outcome] += 1
        if outcome == VERDICTS[2]:
            failing.append((text, worse, better))
        if np.isfinite(error):
            resolved.append((error, paper, text))
        shown = _shown_gain(mean, error)
        ratio = f"{error / paper:.2f}" if paper is not None and np.isfinite(error) else "—"
        lines.append(f"| {text} | {table} | {shown_paper} | {shown} | {ratio} | {n} "
                     f"| {outcome} |")
    lines += [
        "",
        f"Of {len(CLAIMS)} claims: " + ", ".join(f"{counts[v]} {v}" for v in VERDICTS) + ".",
        "",
    ]
    if resolved:
        largest, _, claim = max(resolved)
        with_paper = [(e, p) for e, p, _ in resolved if p is not None]
        below = sum(e < p / 3 for e, p in with_paper)
        lines += [
            f"Seeds: the largest standard error of a gain is {largest:.2f} points ({claim}); "
            f"it is below a third of the paper's gain for {below} of the {len(with_paper)} "
            "claims with a number in the paper. More seeds (`--seeds=0,1,2,3,4`) shrink "
            "every standard error by √(seeds).",
            "",
        ]
    if failing:
        lines += [
            "### What rules out a defect of ours where a claim does not hold",
            "",
            "Each method's objective and training are pinned by tests against the paper and "
            "its reference code, and each distilling run records the ramp-up weight it "
            "trained with. What they do not pin is the regime, which differs from the "
            f"paper's: 10 classes instead of CIFAR-100's 100 (fewer wrong classes for the "
            f"soft targets to rank), networks of about 20k parameters, {_passes(PROTOCOL['epochs'])}.",
            "",
        ]
        for text, worse, better in failing:
            names = (worse[0], better[0])
            methods = sorted({ALL_RUNS[name][0] for name in names})
            checks = "; ".join(METHOD_CHECKS[m] for m in methods)
            weights = [f"{RUN_LABELS[name]}: w = "
                       + ", ".join(f"{w:.3g}" for w in ramp_up(output_dir, name, seeds[0]))
                       for name in dict.fromkeys(names)
                       if is_finished(output_dir, name, seeds[0])
                       and ALL_RUNS[name][0] in DISTILLING_METHODS]
            lines.append(f"- *{text}*: {checks}."
                         + (f" The ramp-up weight per pass (seed {seeds[0]}, history.csv): "
                            + "; ".join(weights) + "." if weights else "")
                         + _schedule_reading(curves, worse, better, seeds))
        lines.append("")
    return lines


def _schedule_reading(curves, worse, better, seeds):
    """What the convergence check says of a claim, as a sentence ("" when it has no runs)."""
    if not (_shorter(worse) and _shorter(better)):
        return ""
    check_seeds = seeds[:CONVERGENCE_SEEDS]
    short, full = _both_gains(curves, worse, better, check_seeds)
    if short is None or full is None:
        return ""
    return (f" Schedule: after {_passes(_SHORT['epochs'])} instead of "
            f"{PROTOCOL['epochs']} (the convergence check, seeds "
            f"{', '.join(map(str, check_seeds))}) the gain is {_shown_gain(*short)} "
            f"({verdict(*short)}), against {_shown_gain(*full)} after "
            f"{_passes(PROTOCOL['epochs'])} on the same seeds.")


#: Methods whose loss has the ramp-up weight w(epoch).
DISTILLING_METHODS = ("ffl", "one", "dml")


def count_parameters():
    """Trainable parameters of every run's network on Fashion-MNIST (28x28x1, 10 classes),
    and of the vanilla network ("vanilla")."""
    from keras_ffl.parameter_counts import trainable_parameters

    counts = {"vanilla": trainable_parameters("vanilla", ARCH, 1, 10, (28, 28, 1))}
    for name, (method, options) in RUNS.items():
        counts[name] = trainable_parameters(
            method, options.get("arch", ARCH), options.get("branches", 2),
            num_classes=10, input_shape=(28, 28, 1),
        )
    return counts


#: Plot file -> (title, [(run, head)]).
PLOTS = {
    "results_table1.png": ("Table I: FFL vs DualNet", [
        ("ffl", FUSED), ("ffl", SUB_MEAN), ("dualnet", AVG), ("dualnet", SUB_MEAN), VANILLA,
    ]),
    "results_table2.png": ("Table II: ablations", [
        ("ffl", FUSED), ("ffl", SUB_MEAN), ("ffl_average", FUSED), ("ffl_average", SUB_MEAN),
        ("ffl_no_ekd", FUSED), ("ffl_no_ekd", SUB_MEAN), ("ffl_no_kd", FUSED),
        ("ffl_no_kd", SUB_MEAN), VANILLA,
    ]),
    "results_table3.png": ("Table III: three branches", [
        ("ffl3", FUSED), ("ffl3", SUB_MEAN), ("one3", GATED), ("one3", SUB_MEAN), VANILLA,
    ]),
    "results_table5.png": ("Table V: case 2, FFL vs DML", [
        ("ffl_case2", FUSED), ("ffl_case2", SUB1), ("ffl_case2", SUB2), ("dml_case2", SUB1),
        ("dml_case2", SUB2), VANILLA, ("vanilla_wrn", SUB1),
    ]),
    "results_table6.png": ("Table VI: FFL vs the 2-net ensemble", [
        ("ffl", FUSED), ("ensemble", ENSEMBLE), VANILLA,
    ]),
    "results_convergence.png": (f"{_SHORT['epochs']} and {PROTOCOL['epochs']} passes", [
        series for run in (("ffl", FUSED), ("ffl", SUB_MEAN), ("ffl_no_ekd", FUSED),
                           ("ensemble", ENSEMBLE), VANILLA)
        for series in (_shorter(run), run)
    ]),
}


def _plot_tables(curves, docs_dir):
    """One PNG per entry of PLOTS: test accuracy per pass, whole and last half."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    for filename, (title, series) in PLOTS.items():
        fig, (whole, end) = plt.subplots(1, 2, figsize=(14, 4))
        colors = {}  # A head has one colour at both lengths of the convergence check.
        for name, head in series:
            mean = _mean_curve(curves, name, head)
            if mean is None:
                continue
            passes = np.arange(1, len(mean) + 1)
            style = "--" if head in (SUB_MEAN, SUB1, SUB2) else "-"
            color = colors.setdefault((name.removesuffix(_SHORT_SUFFIX), head), f"C{len(colors)}")
            half = len(mean) // 2
            for axis, start in ((whole, 0), (end, half)):
                axis.plot(passes[start:], mean[start:], style, color=color,
                          marker="x" if name in CONVERGENCE_RUNS else ".",
                          label=label(name, head))
        whole.set_title(f"{title}: test accuracy (mean over seeds)")
        end.set_title("second half of each schedule")
        for axis in (whole, end):
            axis.set_xlabel("pass over the training set")
            axis.xaxis.set_major_locator(MaxNLocator(integer=True))
            axis.grid(alpha=0.3)
        whole.set_ylabel("test accuracy (%)")
        if end.lines:
            end.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.02, 0.5))
        fig.tight_layout()
        fig.savefig(os.path.join(docs_dir, filename), dpi=100)
        plt.close(fig)
