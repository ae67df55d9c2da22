"""The reproduction's report: docs/RESULTS.md from the runs, rendered as markdown.

It reads the runs' model directories (`runs`), judges the claims (`verdicts`) and
writes the protocol, the convergence check, the paper's tables and a claim-by-claim
reading, with a plot per table (`plots`); what is compared is `protocol`'s data. The
mobile study's section follows (`mobile_report`).
"""

import os

import numpy as np

from reproduction.mobile_report import mobile_section
from reproduction.plots import plot_tables
from reproduction.protocol import (
    ALL_RUNS,
    ARCH,
    CASE2_ARCH,
    CLAIMS,
    CONVERGENCE_RUNS,
    CONVERGENCE_SEEDS,
    DISTILLING_METHODS,
    Error,
    METHOD_CHECKS,
    PROTOCOL,
    Params,
    RUNS,
    RUN_LABELS,
    SHORT,
    TABLES,
    compared_heads,
    count_parameters,
    flag_args,
    label,
    shorter,
)
from reproduction.runs import TIMING_FILE, cost, is_finished, load_curves, ramp_up
from reproduction.verdicts import (
    VERDICTS,
    both_gains,
    final_errors,
    fmt,
    mean_curve,
    of_seeds,
    paired_gain,
    shown_gain,
    signed,
    verdict,
)


def write_report(output_dir, docs_dir, seeds, command, parameters=None,
                 mobile_parameters=None):
    """Writes RESULTS.md and its plots to docs_dir; returns RESULTS.md's path.

    `parameters` and `mobile_parameters` map the reproduction's and the mobile study's
    run names (and "vanilla") to trainable parameter counts (computed when None).
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
        *mobile_section(output_dir, docs_dir, seeds, err, mobile_parameters),
    ]
    path = os.path.join(docs_dir, "RESULTS.md")
    with open(path, "w") as f:
        f.write("\n".join(lines))
    plot_tables(curves, docs_dir)
    return path


def _protocol_section(output_dir, seeds, curves, command):
    epochs, (first, second) = PROTOCOL["epochs"], PROTOCOL["lr_milestones"]
    protocol_cost, check_cost = (cost(output_dir, runs) for runs in (RUNS, CONVERGENCE_RUNS))
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
        f"{_passes(epochs)}, rather than the `small` recipe's own {SHORT['epochs']}: the "
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


def _flags(options):
    return " ".join(flag_args(options))


def _passes(n):
    return f"{n} pass" if n == 1 else f"{n} passes"


def _convergence_section(curves, seeds):
    rows = compared_heads()
    trained = [len(c) for c in (mean_curve(curves, *row) for row in rows) if c is not None]
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
        curve = mean_curve(curves, name, head)
        if curve is None:
            lines.append(f"| {label(name, head)} |" + " — |" * (epochs + 1))
            continue
        cells = " | ".join(f"{a:.2f}" for a in curve)
        lines.append(f"| {label(name, head)} | {cells} | {signed(curve[-1] - curve[-2])} |")
    lines += ["", *_schedules_compared(curves, seeds),
              "![Convergence](results_convergence.png)", ""]
    return lines


def _schedules_compared(curves, seeds):
    """The convergence check: each head and each claim it covers, at SHORT's length
    and at PROTOCOL's, over the same seeds."""
    check_seeds = seeds[:CONVERGENCE_SEEDS]
    epochs, short_epochs = PROTOCOL["epochs"], SHORT["epochs"]
    lines = [
        f"The convergence check trains every configuration again with seeds "
        f"{', '.join(map(str, check_seeds))} under the schedule scaled to "
        f"{short_epochs} passes (`{_flags(SHORT)}`, the `small` recipe's own). Top-1 "
        "error (%) at the end of each schedule, mean over the check's seeds, and what "
        "the last pass of the shorter one added:",
        "",
        f"| head | {_passes(short_epochs)} | {_passes(epochs)} | difference "
        f"| last of {_passes(short_epochs)} added |",
        "|---|---|---|---|---|",
    ]
    last_passes = {short_epochs: [], epochs: []}  # |last pass's change| of heads with both
    for run in filter(shorter, compared_heads()):
        short_curve, full_curve = mean_curve(curves, *shorter(run)), mean_curve(curves, *run)
        if short_curve is not None and full_curve is not None:
            for length, curve in ((short_epochs, short_curve), (epochs, full_curve)):
                last_passes[length].append(abs(curve[-1] - curve[-2]))
        short, full = (of_seeds(final_errors(curves, *r), check_seeds) for r in (shorter(run), run))
        paired = sorted(set(short) & set(full))
        if not paired:
            lines.append(f"| {label(*run)} | — | — | — | — |")
            continue
        a, b = (np.mean([e[s] for s in paired]) for e in (short, full))
        lines.append(f"| {label(*run)} | {a:.2f} | {b:.2f} | {signed(b - a)} "
                     f"| {signed(short_curve[-1] - short_curve[-2])} |")
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
    for claim in CLAIMS:
        if not (shorter(claim.worse) and shorter(claim.better)):
            continue
        short, full = both_gains(curves, claim.worse, claim.better, check_seeds)
        cells = [f"{shown_gain(*g)} | {verdict(*g)}" if g else "— | not run yet"
                 for g in (short, full)]
        lines.append(f"| {claim.text} | {' | '.join(cells)} |")
    return lines + [""]


def _table_sections(err, parameters):
    """The paper's tables (protocol.TABLES), each followed by its note and its plot."""

    def text(cell):
        if isinstance(cell, Error):
            return fmt(err.get(cell.run, {}).get(cell.head, {}))
        if isinstance(cell, Params):
            return " / ".join(f"{parameters[n]:,}" if n in parameters else "—" for n in cell.runs)
        return cell

    lines = []
    for table in TABLES:
        lines += [
            f"## {table.title}",
            "",
            "| " + " | ".join(table.columns) + " |",
            "|" + "---|" * len(table.columns),
            *("|" + "".join(f" {text(cell)} |" if cell else " |" for cell in row)
              for row in table.rows),
            "",
        ]
        if table.note:
            lines += ["".join(text(part) for part in table.note), ""]
        lines += [f"![{table.title.split(':')[0]} curves]({table.plot})", ""]
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
        shown = shown_gain(mean, error)
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
    if not (shorter(worse) and shorter(better)):
        return ""
    check_seeds = seeds[:CONVERGENCE_SEEDS]
    short, full = both_gains(curves, worse, better, check_seeds)
    if short is None or full is None:
        return ""
    return (f" Schedule: after {_passes(SHORT['epochs'])} instead of "
            f"{PROTOCOL['epochs']} (the convergence check, seeds "
            f"{', '.join(map(str, check_seeds))}) the gain is {shown_gain(*short)} "
            f"({verdict(*short)}), against {shown_gain(*full)} after "
            f"{_passes(PROTOCOL['epochs'])} on the same seeds.")
