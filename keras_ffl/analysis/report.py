"""A report on trained runs: accuracy per epoch, schedules, calibration, diversity.

`write_report` writes report.md and, next to it, accuracy.png (every head's
test accuracy per epoch, one panel per run, side by side), schedule.png
(learning rate and distillation ramp-up weight per epoch) and calibration.png
(a reliability diagram per head). The expected calibration error and the
sub-networks' pairwise disagreement and KL divergence are computed over each
run's whole test split with its checkpoint. Only the run directories
(config.json, state.json, history.csv, a checkpoint) and the datasets are read.
"""

import dataclasses
import os
import re

from keras_ffl import heads, run_dir
from keras_ffl.analysis import calibration, diversity, figures, predictions
from keras_ffl.run_dir import CHECKPOINTS, HISTORY_FILE, STATE_FILE

REPORT_FILE = "report.md"
ACCURACY_PNG = "accuracy.png"
SCHEDULE_PNG = "schedule.png"
CALIBRATION_PNG = "calibration.png"
#: history.csv's test accuracy of a head: "val_<head>_acc".
_TEST_ACCURACY = re.compile(r"^val_(.+)_acc$")
#: history.csv's schedule columns, and how to plot them.
_SCHEDULES = {
    "learning_rate": ("learning rate", True),
    "distill_weight": ("ramp-up weight w", False),
}


@dataclasses.dataclass(frozen=True)
class RunSummary:
    """What the report shows of one run: its checkpoint's predictions and its files."""

    label: str
    run: predictions.TrainedRun
    history: list
    state: dict
    predictions: predictions.Predictions
    calibration: dict  # head -> calibration.ReliabilityDiagram


def write_report(model_dirs, output_dir, *, checkpoint=None, data_dir=None, bins=None):
    """Writes report.md and its figures for the runs in `model_dirs`; returns the files written.

    Raises:
      RunError, FileNotFoundError: a run directory cannot be read (see
        `predictions.load_run`).
      ImportError: matplotlib is not installed.
    """
    figures.pyplot()  # Without matplotlib, fail before the slow work.
    bins = bins or calibration.DEFAULT_BINS
    summaries = [
        _summarize(model_dir, label, checkpoint, data_dir, bins)
        for model_dir, label in zip(model_dirs, _labels(model_dirs))
    ]
    os.makedirs(output_dir, exist_ok=True)
    written = []

    def save(figure, name):
        figures.save_png(figure, os.path.join(output_dir, name))
        written.append(os.path.join(output_dir, name))
        return name

    lines = _overview(summaries, model_dirs)
    lines += _accuracy_section(summaries, save)
    lines += _schedule_section(summaries, save)
    lines += _calibration_section(summaries, save, bins)
    lines += _diversity_section(summaries)
    report = os.path.join(output_dir, REPORT_FILE)
    run_dir.replace_atomically(report, lambda temp: _write_text(temp, "\n".join(lines) + "\n"))
    return [report, *written]


def _summarize(model_dir, label, checkpoint, data_dir, bins):
    run = predictions.load_run(model_dir, checkpoint)
    test = predictions.predict_test_split(run, data_dir=data_dir)
    return RunSummary(
        label,
        run,
        run_dir.read_history(os.path.join(model_dir, HISTORY_FILE)),
        run_dir.read_json(os.path.join(model_dir, STATE_FILE)) or {},
        test,
        {
            head: calibration.reliability_diagram(probabilities, test.labels, bins)
            for head, probabilities in test.probabilities.items()
        },
    )


def _labels(model_dirs):
    """Each run's name in the report: its directory's name, or its path when names clash."""
    names = [os.path.basename(os.path.normpath(d)) for d in model_dirs]
    return [n if names.count(n) == 1 else os.path.normpath(d) for n, d in zip(names, model_dirs)]


def _overview(summaries, model_dirs):
    command = " ".join(["python tools/report.py", f"--model_dir={' '.join(model_dirs)}"])
    lines = [
        "# Run report",
        "",
        f"Written by `{command}` from each run's directory and its dataset's test split.",
        "",
        "| run | dataset | method | architecture | sub-networks | epochs | checkpoint | test images |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for s in summaries:
        config = s.run.config
        epoch = s.state.get("best_epoch" if s.run.checkpoint == "best" else "epoch")
        at = f" (epoch {epoch})" if epoch else ""
        lines.append(
            f"| {s.label} | {config['dataset']} | {config['method']} | "
            f"{', '.join(config['arch'])} | {len(heads.sub_heads(s.predictions.probabilities))} | "
            f"{len(s.history)} of {config['epochs']} | {CHECKPOINTS[s.run.checkpoint]}{at} | "
            f"{len(s.predictions.labels)} |"
        )
    return lines


def _test_accuracy(summary):
    """{head: (epochs, accuracies)} from history.csv, sub-networks first."""
    columns = {}
    for key in summary.history[0]:
        match = _TEST_ACCURACY.match(key)
        if match:
            columns[match.group(1)] = key
    order = sorted(columns, key=lambda h: (heads.sub_index(h) is None, heads.sub_index(h) or 0, h))
    epochs = [int(row["epoch"]) + 1 for row in summary.history]
    return {h: (epochs, [100 * float(row[columns[h]]) for row in summary.history]) for h in order}


def _accuracy_section(summaries, save):
    lines = ["", "## Test accuracy per epoch", ""]
    with_history = [s for s in summaries if s.history]
    if with_history:
        panels = [
            figures.Panel(s.label, "test accuracy (%)", _test_accuracy(s)) for s in with_history
        ]
        name = save(figures.curves(panels, share_y=True), ACCURACY_PNG)
        lines += [f"![Test accuracy of every head per epoch]({name})", ""]
        lines += ["| run | head | last epoch | best (epoch) |", "|---|---|---|---|"]
    for summary in with_history:
        for head, (epochs, values) in _test_accuracy(summary).items():
            best = max(range(len(values)), key=values.__getitem__)
            lines.append(
                f"| {summary.label} | {head} | {values[-1]:.2f}% | "
                f"{values[best]:.2f}% ({epochs[best]}) |"
            )
    return lines + _missing_history(summaries)


def _schedule_section(summaries, save):
    lines = ["", "## Learning-rate and ramp-up schedule", ""]
    panels = []
    for column, (title, log_y) in _SCHEDULES.items():
        curves = {
            s.label: (
                [int(row["epoch"]) + 1 for row in s.history],
                [float(row[column]) for row in s.history],
            )
            for s in summaries
            if s.history and column in s.history[0]
        }
        if curves:
            panels.append(figures.Panel(title, title, curves, log_y=log_y))
    if panels:
        name = save(figures.curves(panels), SCHEDULE_PNG)
        lines += [
            f"![Learning rate and distillation ramp-up weight per epoch]({name})",
            "",
            (
                "The learning rate each epoch trained with and the ramp-up weight w(epoch), as "
                "history.csv records them; w scales the distillation terms of the methods "
                "that distil, and is recorded but unused by the others."
            ),
        ]
    return lines


def _missing_history(summaries):
    return [f"{s.label} has no {HISTORY_FILE}." for s in summaries if not s.history]


def _calibration_section(summaries, save, bins):
    lines = [
        "",
        "## Calibration",
        "",
        (
            f"Expected calibration error with {bins} equal-width confidence bins (Guo et al., "
            "ICML 2017): the mean of |accuracy − mean confidence| over the bins, weighted by "
            "their numbers of images, for every head on the whole test split."
        ),
        "",
        "| run | head | test accuracy | mean confidence | ECE |",
        "|---|---|---|---|---|",
    ]
    for summary in summaries:
        for head, diagram in summary.calibration.items():
            confidence = summary.predictions.probabilities[head].max(axis=1).mean()
            lines.append(
                f"| {summary.label} | {head} | {summary.predictions.correct(head).mean():.2%} | "
                f"{confidence:.2%} | {diagram.ece:.2%} |"
            )
    several = len(summaries) > 1
    grid = [
        [(f"{s.label} {head}" if several else head, d) for head, d in s.calibration.items()]
        for s in summaries
    ]
    name = save(figures.reliability_grid(grid), CALIBRATION_PNG)
    return lines + ["", f"![Reliability diagram of every head]({name})"]


def _diversity_section(summaries):
    lines = [
        "",
        "## Diversity between sub-networks",
        "",
        (
            "How differently the sub-networks predict on the test split: the disagreement is "
            "the fraction of images on which two sub-networks predict different classes; "
            "KL(a‖b) is KL(p_a ‖ p_b) in nats, averaged over the images."
        ),
        "",
        "| run | pair | disagreement | KL(a‖b) | KL(b‖a) |",
        "|---|---|---|---|---|",
    ]
    alone = []
    for summary in summaries:
        pairs = diversity.pairwise_diversity(
            summary.predictions.probabilities, heads.sub_heads(summary.predictions.probabilities)
        )
        if not pairs:
            alone.append(summary.label)
        for pair in pairs:
            lines.append(
                f"| {summary.label} | {pair.a}, {pair.b} | {pair.disagreement:.2%} | "
                f"{pair.kl_ab:.4f} | {pair.kl_ba:.4f} |"
            )
    if alone:
        lines += ["", f"{', '.join(alone)}: one sub-network, no pair to compare."]
    return lines


def _write_text(path, text):
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
