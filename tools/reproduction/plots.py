"""The reproduction's plots: test accuracy per pass of the heads of each table (protocol.PLOTS)."""

import os

import matplotlib

matplotlib.use("Agg")  # Files only, no display.

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from reproduction.protocol import (  # noqa: E402
    CONVERGENCE_RUNS,
    PLOTS,
    SHORT_SUFFIX,
    SUB1,
    SUB2,
    SUB_MEAN,
    label,
)
from reproduction.verdicts import mean_curve  # noqa: E402


def plot_tables(curves, docs_dir):
    """One PNG per entry of PLOTS."""
    for filename, (title, series) in PLOTS.items():
        plot_curves(curves, os.path.join(docs_dir, filename), title, series)


def plot_curves(curves, path, title, series, name_of=label):
    """A PNG of the mean test accuracy per pass of each (run, head) of `series`, over the
    whole schedule and over its last half; `name_of(run, head)` labels the curves."""
    fig, (whole, end) = plt.subplots(1, 2, figsize=(14, 4))
    # Matplotlib's 10 default colours, or 20 when there are more curves to tell apart.
    palette = (lambda n: f"C{n}") if len(series) <= 10 else plt.get_cmap("tab20")
    colors = {}  # A head has one colour at both lengths of the convergence check.
    for name, head in series:
        mean = mean_curve(curves, name, head)
        if mean is None:
            continue
        passes = np.arange(1, len(mean) + 1)
        style = "--" if head in (SUB_MEAN, SUB1, SUB2) else "-"
        color = colors.setdefault((name.removesuffix(SHORT_SUFFIX), head), palette(len(colors)))
        half = len(mean) // 2
        for axis, start in ((whole, 0), (end, half)):
            axis.plot(passes[start:], mean[start:], style, color=color,
                      marker="x" if name in CONVERGENCE_RUNS else ".",
                      label=name_of(name, head))
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
    fig.savefig(path, dpi=100)
    plt.close(fig)
