"""The analyses drawn with matplotlib's Agg backend, and written as PNG files atomically.

Every figure has a fixed size in pixels (`DPI` dots per inch), so a caller
knows the size of the file it gets.
"""

import dataclasses

import numpy as np

from keras_ffl import run_dir

DPI = 100
#: Inches per image of a Grad-CAM grid: (width, height), the height holding two title lines.
CAM_CELL = (1.7, 2.0)
#: Inches left of a Grad-CAM grid for the rows' labels, when it has them.
CAM_MARGIN = 0.3
#: Inches per panel of the curves and of the reliability diagrams.
PANEL = (4.0, 3.2)
RIGHT_COLOUR, WRONG_COLOUR = "#1a7f37", "#c62828"


def pyplot():
    """matplotlib.pyplot on the Agg backend (no display needed).

    Raises:
      ImportError: matplotlib is missing, with the command that installs it.
    """
    try:
        import matplotlib
    except ImportError as err:
        raise ImportError(
            "The figures need matplotlib, which is not installed: "
            "pip install 'keras_ffl[plot]' (or pip install 'matplotlib>=3.8,<4')."
        ) from err
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_png(figure, path):
    """Writes `figure` to `path` as a PNG, replacing an old file only once complete; closes it."""
    try:
        run_dir.replace_atomically(path, lambda temp: figure.savefig(temp, format="png", dpi=DPI))
    finally:
        pyplot().close(figure)


def figure_size(figure):
    """(width, height) in pixels of a figure saved by `save_png`."""
    width, height = figure.get_size_inches()
    return round(width * DPI), round(height * DPI)


def gradcam_grid(pixels, row_titles, column_titles, heatmaps, captions, correct, row_labels=None):
    """The paper's Fig. 3 layout: per row an image, then its heat map under each column's head.

    Args:
      pixels: (rows, H, W, C) images in 0..255.
      row_titles: one caption per image (e.g. its index and true class), over the image.
      column_titles: one name per heat-map column, over the first row.
      heatmaps: (rows, columns, H, W) maps in [0, 1].
      captions: rows x columns strings (e.g. the predicted class and probability).
      correct: rows x columns bools: right predictions are green with a tick, wrong
        ones red with a cross.
      row_labels: optional text beside each row (e.g. which case it shows).
    """
    plt = pyplot()
    rows, columns = len(pixels), len(column_titles) + 1
    size = (CAM_CELL[0] * columns + CAM_MARGIN * (row_labels is not None), CAM_CELL[1] * rows)
    figure, axes = plt.subplots(rows, columns, figsize=size, squeeze=False)
    for row, image in enumerate(pixels):
        shown = _displayable(image)
        grey = {"cmap": "gray", "vmin": 0.0, "vmax": 1.0} if shown.ndim == 2 else {}
        axes[row, 0].imshow(shown, **grey)
        axes[row, 0].set_title(row_titles[row], fontsize=9)
        if row_labels is not None:
            axes[row, 0].set_ylabel(row_labels[row], fontsize=9)
        for column in range(1, columns):
            axis = axes[row, column]
            axis.imshow(shown, **grey)
            axis.imshow(
                heatmaps[row][column - 1],
                cmap="jet",
                alpha=0.5,
                vmin=0.0,
                vmax=1.0,
            )
            right = bool(correct[row][column - 1])
            caption = f"{'✓' if right else '✗'} {captions[row][column - 1]}"
            if row == 0:
                caption = f"{column_titles[column - 1]}\n{caption}"
            axis.set_title(caption, fontsize=9, color=RIGHT_COLOUR if right else WRONG_COLOUR)
    for axis in axes.flat:
        axis.set_xticks([])
        axis.set_yticks([])
    width, height = size
    figure.subplots_adjust(
        left=(0.05 + CAM_MARGIN * (row_labels is not None)) / width,
        right=1 - 0.05 / width,
        bottom=0.05 / height,
        top=1 - 0.45 / height,
        wspace=0.08,
        hspace=0.45,
    )
    return figure


@dataclasses.dataclass(frozen=True)
class Panel:
    """One plot of curves: its title, y label, and {label: (epochs, values)}."""

    title: str
    ylabel: str
    lines: dict
    log_y: bool = False


def curves(panels, *, share_y=False):
    """`Panel`s of curves over epochs, side by side."""
    plt = pyplot()
    from matplotlib.ticker import MaxNLocator

    figure, axes = plt.subplots(
        1,
        len(panels),
        figsize=(PANEL[0] * len(panels), PANEL[1]),
        sharey=share_y,
        squeeze=False,
    )
    for axis, panel in zip(axes[0], panels):
        for label, (x, y) in panel.lines.items():
            axis.plot(x, y, marker="o" if len(x) < 20 else None, markersize=3, label=label)
        axis.set_title(panel.title, fontsize=10)
        axis.set_xlabel("epoch")
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        if not share_y or axis is axes[0, 0]:
            axis.set_ylabel(panel.ylabel)
        if panel.log_y:
            axis.set_yscale("log")
        axis.grid(alpha=0.3)
        if panel.lines:
            axis.legend(fontsize=8)
    figure.tight_layout()
    return figure


def reliability_grid(diagrams):
    """Reliability diagrams, one row per run: rows of (title, `ReliabilityDiagram`)."""
    plt = pyplot()
    rows, columns = len(diagrams), max(len(row) for row in diagrams)
    figure, axes = plt.subplots(
        rows,
        columns,
        figsize=(PANEL[0] * 0.8 * columns, PANEL[1] * rows),
        squeeze=False,
    )
    for axis_row, row in zip(axes, diagrams):
        for axis, (title, diagram) in zip(axis_row, row):
            centres = (diagram.bin_edges[:-1] + diagram.bin_edges[1:]) / 2
            width = np.diff(diagram.bin_edges)
            filled = diagram.counts > 0
            axis.bar(
                centres[filled],
                diagram.accuracy[filled],
                width[filled],
                edgecolor="black",
                linewidth=0.5,
                label="accuracy",
            )
            axis.bar(
                centres[filled],
                (diagram.confidence - diagram.accuracy)[filled],
                width[filled],
                bottom=diagram.accuracy[filled],
                color=WRONG_COLOUR,
                alpha=0.3,
                label="gap to confidence",
            )
            axis.plot([0, 1], [0, 1], "k--", linewidth=1)
            axis.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence", ylabel="accuracy")
            axis.set_title(f"{title}\nECE {diagram.ece:.2%}", fontsize=9)
        for axis in axis_row[len(row) :]:
            axis.axis("off")
    axes[0, 0].legend(fontsize=7, loc="upper left")
    figure.tight_layout()
    return figure


def _displayable(image):
    """An image in 0..255 as a matplotlib-ready array in [0, 1], grey images as 2-D."""
    image = np.clip(np.asarray(image, np.float64) / 255.0, 0.0, 1.0)
    return image[..., 0] if image.shape[-1] == 1 else image
