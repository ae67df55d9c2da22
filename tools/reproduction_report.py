"""The reproduction's protocol and its report: docs/RESULTS.md and plots from the runs.

`RUNS` is the protocol (what tools/reproduce.py trains, once per seed); the rest
reads the runs' model directories (the training command's history.csv) and
writes the paper's tables, a claim-by-claim reading and one plot per table.
"""

import csv
import json
import os

import numpy as np

#: Case 1's architecture, and case 2's pair: a ResNet and a WRN of this machine's
#: scale (the paper's Pair1 is ResNet-32 & WRN-16-2, the WRN 1.5x the ResNet's size).
ARCH = "resnet8"
CASE2_ARCH = ("resnet8", "wrn16_1")

#: Run name -> (method, the training command's flags besides the default recipe's).
#: Every run uses the Fashion-MNIST recipe ("small"). DualNet's iterative stage
#: ends at the first learning-rate drop, as Table VII's does (256 of 307 epochs).
RUNS = {
    "ffl": ("ffl", {}),
    "vanilla": ("vanilla", {}),
    "dualnet": ("dualnet", {"iterative_epochs": 3}),
    "ensemble": ("ensemble", {}),
    "ffl_average": ("ffl", {"fusion": "average"}),
    "ffl_no_ekd": ("ffl", {"ekd": False}),
    "ffl_no_kd": ("ffl", {"ekd": False, "fkd": False}),
    "ffl3": ("ffl", {"branches": 3}),
    "one3": ("one", {"branches": 3}),
    "vanilla_wrn": ("vanilla", {"arch": CASE2_ARCH[1]}),
    "ffl_case2": ("ffl", {"arch": CASE2_ARCH}),
    "dml_case2": ("dml", {"arch": CASE2_ARCH}),
}

#: keras_ffl.heads' names, spelled here because importing keras_ffl starts TensorFlow,
#: which the runner (alive beside the training processes) and the report do without.
SUB1, SUB2, FUSED, ENSEMBLE, GATED, AVG, SUB_MEAN = (
    "sub1", "sub2", "fused", "ensemble", "gated", "avg", "sub_mean"
)

#: The paper's claims: (text, table, (worse run, head), (better run, head), the
#: paper's gain in points of CIFAR-100 top-1 error with ResNet-32 and where it is).
CLAIMS = [
    ("FFL's fused classifier beats DualNet's Z_avg", "I",
     ("dualnet", AVG), ("ffl", FUSED), "1.93 (Table I(a))"),
    ("FFL's sub-networks beat DualNet's", "I",
     ("dualnet", SUB_MEAN), ("ffl", SUB_MEAN), "7.85 (Table I(b))"),
    ("The fusion module beats averaging: fused (A vs B)", "II",
     ("ffl_average", FUSED), ("ffl", FUSED), "0.54 (Table II)"),
    ("The fusion module beats averaging: sub-networks (A vs B)", "II",
     ("ffl_average", SUB_MEAN), ("ffl", SUB_MEAN), "0.40 (Table II)"),
    ("EKD helps the fused classifier (A vs C)", "II",
     ("ffl_no_ekd", FUSED), ("ffl", FUSED), "1.47 (Table II)"),
    ("EKD helps the sub-networks (A vs C)", "II",
     ("ffl_no_ekd", SUB_MEAN), ("ffl", SUB_MEAN), "1.30 (Table II)"),
    ("FKD helps the sub-networks (C vs D)", "II",
     ("ffl_no_kd", SUB_MEAN), ("ffl_no_ekd", SUB_MEAN), "2.68 (Table II)"),
    ("3 branches: FFL's fused classifier beats ONE's gated teacher (FFL vs ONE-E)", "III",
     ("one3", GATED), ("ffl3", FUSED), "0.37 (Table III, mean)"),
    ("3 branches: FFL's sub-networks beat ONE's (FFL-S vs ONE)", "III",
     ("one3", SUB_MEAN), ("ffl3", SUB_MEAN), "0.28 (Table III, mean)"),
    ("Case 2: FFL's net 1 (ResNet) beats DML's", "V",
     ("dml_case2", SUB1), ("ffl_case2", SUB1), "1.25 (Table V, Pair1)"),
    ("Case 2: FFL's net 2 (WRN) beats DML's", "V",
     ("dml_case2", SUB2), ("ffl_case2", SUB2), "0.52 (Table V, Pair1)"),
    ("Case 2: FFL's fused classifier beats DML's ensemble of peers", "V",
     ("dml_case2", ENSEMBLE), ("ffl_case2", FUSED), "not given (§IV-B: \"a stronger teacher\")"),
    ("FFL's fused classifier beats the 2-net ensemble, with fewer parameters", "VI",
     ("ensemble", ENSEMBLE), ("ffl", FUSED), "0.85 (Table VI)"),
    ("FFL's sub-networks beat a vanilla network", "IV",
     ("vanilla", SUB1), ("ffl", SUB_MEAN), "1.11 (Table IV, ImageNet)"),
    ("FFL's fused classifier beats its own sub-networks", "II",
     ("ffl", SUB_MEAN), ("ffl", FUSED), "1.50 (Table II, A)"),
]

#: The smallest of the paper's gains in CLAIMS (Table III, FFL-S vs ONE).
SMALLEST_PAPER_GAIN = 0.28

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
    """{run: {seed: {head: test accuracy per epoch}}} of the finished runs."""
    curves = {}
    for name in RUNS:
        for seed in seeds:
            if not is_finished(output_dir, name, seed):
                continue
            with open(os.path.join(run_path(output_dir, name, seed), _HISTORY_FILE)) as f:
                rows = list(csv.DictReader(f))
            heads = [k[len("val_"):-len("_acc")] for k in rows[0]
                     if k.startswith("val_") and k.endswith("_acc")]
            curves.setdefault(name, {})[seed] = {
                head: np.array([float(row[f"val_{head}_acc"]) for row in rows]) for head in heads
            }
    return curves


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


def write_report(output_dir, docs_dir, seeds, command, parameters=None):
    """Writes RESULTS.md and one accuracy plot per table to docs_dir; returns RESULTS.md's path.

    `parameters` maps run names to trainable parameter counts (computed from the
    registry when None).
    """
    os.makedirs(docs_dir, exist_ok=True)
    curves = load_curves(output_dir, seeds)
    parameters = parameters if parameters is not None else count_parameters()
    err = {name: {} for name in RUNS}
    for name, by_seed in curves.items():
        heads = set().union(*(set(h) for h in by_seed.values()))
        err[name] = {head: final_errors(curves, name, head) for head in heads}

    def cell(name, head):
        return fmt(err[name].get(head, {}))

    def params(name):
        return f"{parameters[name]:,}" if name in parameters else "—"

    finished = sum(len(by_seed) for by_seed in curves.values())
    timing = read_timing(output_dir)
    cpu_hours = sum(entry["cpu_s"] for entry in timing.values()) / 3600
    lines = [
        "# Results: the paper's comparisons on Fashion-MNIST",
        "",
        "## Protocol",
        "",
        "Real Fashion-MNIST (60,000 training / 10,000 test images, offline from Debian's "
        "`dataset-fashion-mnist`), trained by the training command with its default recipe "
        "for the dataset (`small`): 6 full passes over the training set at batch 128, "
        "Nesterov SGD 0.1 ×0.1 after epochs 3 and 5, L2 1e-4 (fusion module 1e-5), "
        "T = 3, ramp-up of the distillation weight over 2 epochs; the paper's CIFAR "
        f"recipe scaled to 6 epochs. Case 1 uses {ARCH} sub-networks (FFL and ONE "
        f"share its first two stages); case 2 pairs {CASE2_ARCH[0]} with {CASE2_ARCH[1]}. "
        "DualNet's iterative stage covers the 3 epochs before the first learning-rate drop, "
        "as Table VII's 256 of 307 epochs do. Every head is read at the last epoch "
        "(no best-epoch picking): top-1 test error (%), mean ± sample standard "
        f"deviation over seeds {', '.join(str(s) for s in seeds)}.",
        "",
        f"Finished runs: {finished} of {len(RUNS) * len(seeds)}. The runs have recorded "
        f"{cpu_hours:.1f} CPU-hours of training so far (two runs at a time, one thread "
        "each, on this machine's 2 cores). A table cell with fewer seeds than the "
        "others shows what has finished so far.",
        "",
        "Regenerate (finished runs are reused, a stopped one resumes at its last epoch):",
        "",
        f"    {command}",
        "    python tools/reproduce.py --report_only   # redraw this page from the runs",
        "",
        "Each run is the training command, e.g. `python -m keras_ffl.fit "
        "--dataset=fashion_mnist --method=ffl --branches=3 --seed=0 "
        "--model_dir=results/reproduction/ffl3/seed0`.",
        "",
        "## Table I: FFL vs DualNet",
        "",
        "| network | params | (a) fused: DualNet (Z_avg) | (a) fused: FFL "
        "| (b) sub-networks: DualNet | (b) sub-networks: FFL |",
        "|---|---|---|---|---|---|",
        f"| {ARCH} ×2 | {params('dualnet')} / {params('ffl')} | {cell('dualnet', AVG)} "
        f"| {cell('ffl', FUSED)} | {cell('dualnet', SUB_MEAN)} | {cell('ffl', SUB_MEAN)} |",
        f"| vanilla {ARCH} | {params('vanilla')} | | | {cell('vanilla', SUB1)} | |",
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
        f"| vanilla | | | | | {cell('vanilla', SUB1)} |",
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
        f"| vanilla | {params('vanilla')} | {cell('vanilla', SUB1)} |",
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
        f"| vanilla | {params('vanilla')} / {params('vanilla_wrn')} | {cell('vanilla', SUB1)} "
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
        f"| 2-net's members (mean) | | {cell('ensemble', SUB_MEAN)} |",
        f"| FFL (fused classifier) | {params('ffl')} | {cell('ffl', FUSED)} |",
        f"| vanilla | {params('vanilla')} | {cell('vanilla', SUB1)} |",
        "",
        "The paper's case 2 rows of Table VI (a 2-net deepened to FFL's size) were not run.",
        "",
        "![Table VI curves](results_table6.png)",
        "",
        "## The paper's claims, one by one",
        "",
        "Gain: the error reduction in points, paired by seed, mean ± standard error "
        "(sample standard deviation / √seeds). Verdict: *holds* when the gain exceeds "
        "twice its standard error; *same direction but unresolved* when it is positive "
        "but within that; *does not hold* when it is zero or negative.",
        "",
        "| claim | table | paper's gain (CIFAR-100) | gain here | seeds | verdict |",
        "|---|---|---|---|---|---|",
    ]
    counts = dict.fromkeys(VERDICTS, 0)
    errors = []
    for text, table, (worse, worse_head), (better, better_head), paper in CLAIMS:
        gain = paired_gain(err[worse].get(worse_head, {}), err[better].get(better_head, {}))
        if gain is None:
            lines.append(f"| {text} | {table} | {paper} | — | 0 | not run yet |")
            continue
        mean, error, n = gain
        errors.append((error, text))
        counts[verdict(mean, error)] += 1
        shown = f"{mean:+.2f} ± {error:.2f}" if np.isfinite(error) else f"{mean:+.2f}"
        lines.append(f"| {text} | {table} | {paper} | {shown} | {n} | {verdict(mean, error)} |")
    lines += [
        "",
        f"Of {len(CLAIMS)} claims: " + ", ".join(f"{counts[v]} {v}" for v in VERDICTS) + ".",
        "",
    ]
    resolved = [(e, t) for e, t in errors if np.isfinite(e)]
    if resolved:
        largest, claim = max(resolved)
        lines += [
            f"Seeds: the largest standard error of a gain is {largest:.2f} points ({claim}); "
            f"the smallest gain the paper reports above is {SMALLEST_PAPER_GAIN:.2f}. A "
            "standard error well below that resolves the paper's gains with these seeds; "
            "more seeds (`--seeds=0,1,2,3,4`) shrink it by √(seeds).",
            "",
        ]
    path = os.path.join(docs_dir, "RESULTS.md")
    with open(path, "w") as f:
        f.write("\n".join(lines))
    _plot_tables(curves, docs_dir)
    return path


def count_parameters():
    """Trainable parameters of every run's network on Fashion-MNIST (28x28x1, 10 classes)."""
    from keras_ffl.parameter_counts import trainable_parameters

    counts = {}
    for name, (method, options) in RUNS.items():
        arch = options.get("arch", ARCH)
        counts[name] = trainable_parameters(
            method, arch, options.get("branches", 2), num_classes=10, input_shape=(28, 28, 1)
        )
    return counts


#: Plot file -> (title, [(run, head, label)]).
PLOTS = {
    "results_table1.png": ("Table I: FFL vs DualNet", [
        ("ffl", FUSED, "FFL fused"), ("ffl", SUB_MEAN, "FFL sub-networks"),
        ("dualnet", AVG, "DualNet Z_avg"), ("dualnet", SUB_MEAN, "DualNet sub-networks"),
        ("vanilla", SUB1, "vanilla"),
    ]),
    "results_table2.png": ("Table II: ablations", [
        ("ffl", FUSED, "A fused"), ("ffl", SUB_MEAN, "A sub-networks"),
        ("ffl_average", FUSED, "B fused"), ("ffl_average", SUB_MEAN, "B sub-networks"),
        ("ffl_no_ekd", FUSED, "C fused"), ("ffl_no_ekd", SUB_MEAN, "C sub-networks"),
        ("ffl_no_kd", FUSED, "D fused"), ("ffl_no_kd", SUB_MEAN, "D sub-networks"),
    ]),
    "results_table3.png": ("Table III: three branches", [
        ("ffl3", FUSED, "FFL"), ("ffl3", SUB_MEAN, "FFL-S"),
        ("one3", GATED, "ONE-E"), ("one3", SUB_MEAN, "ONE"), ("vanilla", SUB1, "vanilla"),
    ]),
    "results_table5.png": ("Table V: case 2, FFL vs DML", [
        ("ffl_case2", FUSED, "FFL fused"), ("ffl_case2", SUB1, "FFL net 1"),
        ("ffl_case2", SUB2, "FFL net 2"), ("dml_case2", SUB1, "DML net 1"),
        ("dml_case2", SUB2, "DML net 2"), ("vanilla", SUB1, "vanilla net 1"),
        ("vanilla_wrn", SUB1, "vanilla net 2"),
    ]),
    "results_table6.png": ("Table VI: FFL vs the 2-net ensemble", [
        ("ffl", FUSED, "FFL fused"), ("ensemble", ENSEMBLE, "2-net"),
        ("ensemble", SUB_MEAN, "2-net members"), ("vanilla", SUB1, "vanilla"),
    ]),
}


def _plot_tables(curves, docs_dir):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for filename, (title, series) in PLOTS.items():
        fig, (whole, end) = plt.subplots(1, 2, figsize=(11, 4))
        for name, head, label in series:
            runs = [c[head] for c in curves.get(name, {}).values() if head in c]
            if not runs:
                continue
            mean = 100.0 * np.mean(runs, axis=0)
            epochs = np.arange(1, len(mean) + 1)
            style = "--" if head in (SUB_MEAN, SUB1, SUB2) else "-"
            whole.plot(epochs, mean, style, marker=".", label=label)
            end.plot(epochs[len(epochs) // 2:], mean[len(mean) // 2:], style, marker=".",
                     label=label)
        whole.set_title(f"{title}: test accuracy (mean over seeds)")
        end.set_title("second half of training")
        for axis in (whole, end):
            axis.set_xlabel("epoch")
            axis.grid(alpha=0.3)
        whole.set_ylabel("test accuracy (%)")
        if end.lines:
            end.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(os.path.join(docs_dir, filename), dpi=100)
        plt.close(fig)
