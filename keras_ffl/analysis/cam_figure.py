"""The paper's Fig. 3: Grad-CAM of every head of a run (and of a compared run) on test images.

One row per test image. Columns: the image; the compared run's network (when
given); every head of the run's network that has a feature map of its own
(each sub-network, the fused classifier). Each heat map, for the head's
predicted class, is titled with that class and its probability, and marked
right or wrong.

With a compared run and no chosen images, the rows show the paper's three
cases in turn: every column right; the run's primary head (FFL's fused
classifier) right and the compared network wrong; every column wrong.
"""

import dataclasses
import os

import numpy as np

from keras_ffl import data
from keras_ffl.analysis import figures, gradcam, predictions
from keras_ffl.run_dir import RunError
from keras_ffl.validation import ArgumentError

#: Test images drawn when none are chosen: one per case with a compared run.
DEFAULT_IMAGES = 3


@dataclasses.dataclass(frozen=True)
class Column:
    """A heat-map column: its title, and the network and head it explains."""

    title: str
    network: object
    head: str


def draw_gradcam(
    model_dir, output, *, compare=None, images=None, indices=None, checkpoint=None, data_dir=None
):
    """Writes the Grad-CAM grid of the run in `model_dir` to `output`; returns lines to print.

    Raises:
      RunError: a run cannot be read, or the two runs trained on different data.
      FileNotFoundError: a run has no checkpoint yet.
      ArgumentError: an index is outside the test split.
      CheckpointError: a checkpoint is missing or damaged.
      ImportError: matplotlib is not installed.
    """
    figures.pyplot()  # Without matplotlib, fail before the slow work.
    run = predictions.load_run(model_dir, checkpoint)
    columns = [Column(head, run.network, head) for head in gradcam.cam_heads(run.network)]
    row_labels, notes = None, []
    if compare is not None:
        compared = predictions.load_run(compare, checkpoint)
        _check_same_data(run, compared)
        columns.insert(0, _compare_column(compared))
    if indices is None and compare is None:
        count = data.num_examples(predictions.run_spec(run.config, data_dir), "test", data_dir)
        indices = list(range(min(images or DEFAULT_IMAGES, count)))
    elif indices is None:
        indices, row_labels, notes = _pick_cases(
            columns,
            predictions.predict_test_split(run, data_dir=data_dir),
            run.primary_head,
            predictions.predict_test_split(compared, data_dir=data_dir),
            images or DEFAULT_IMAGES,
        )
        if not indices:
            raise ArgumentError(
                "indices", f"No test image to draw: {' '.join(notes)} — choose images with {{arg}}"
            )
    inputs, labels = predictions.load_test_images(run.config, indices, data_dir=data_dir)
    names = data.class_names(predictions.run_spec(run.config, data_dir), data_dir)
    heatmaps, captions, correct = [], [], []
    for column in columns:
        heatmaps.append(gradcam.grad_cam(column.network, column.head, inputs))
        logits = np.asarray(column.network(inputs, training=False)[column.head], np.float64)
        probabilities = predictions.softmax(logits)
        predicted = probabilities.argmax(axis=1)
        captions.append([f"{names[c]} {p[c]:.0%}" for c, p in zip(predicted, probabilities)])
        correct.append(predicted == labels)
    figure = figures.gradcam_grid(
        predictions.to_pixels(inputs, run.config),
        [f"#{index}: {names[label]}" for index, label in zip(indices, labels)],
        [column.title for column in columns],
        np.stack(heatmaps, axis=1),
        list(zip(*captions)),
        np.stack(correct, axis=1),
        row_labels=row_labels,
    )
    width, height = figures.figure_size(figure)
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    figures.save_png(figure, output)
    titles = ", ".join(column.title for column in columns)
    uniform = [column.title for column in columns
               if gradcam.uniform_heads(column.network, [column.head])]
    if uniform:
        notes.append(
            f"The feature maps of {', '.join(uniform)} are 1x1, so their heat maps are "
            "uniform: they show the prediction, not where the head looks. A larger input "
            "gives the map a spatial extent (for a keras: backbone, image_size=64 or more)."
        )
    return [*notes, f"Wrote {output} ({width}x{height} pixels): test images {indices}; {titles}."]


def _compare_column(compared):
    """The compared run's column: its primary head, or else its first head with a feature map.

    It is titled with the run's method, and the head when the method has several.
    """
    heads = gradcam.cam_heads(compared.network)
    head = compared.primary_head if compared.primary_head in heads else heads[0]
    method = compared.config["method"]
    return Column(method if len(heads) == 1 else f"{method} {head}", compared.network, head)


def _check_same_data(run, compared):
    for key in ("dataset", "image_shape"):
        if run.config[key] != compared.config[key]:
            raise RunError(
                f"{compared.model_dir} trained with {key} {compared.config[key]!r} but "
                f"{run.model_dir} with {run.config[key]!r} — compare runs on the same test images"
            )


def _pick_cases(columns, model_predictions, primary, compare_predictions, count):
    """(indices, row labels, notes) of up to `count` test images in the paper's three cases.

    The cases take turns; within one, images of classes not yet shown come first.
    A case without an example gets a note instead.
    """
    compared = columns[0]
    right = np.stack(
        [compare_predictions.correct(compared.head)]
        + [model_predictions.correct(column.head) for column in columns[1:]],
        axis=1,
    )
    cases = {
        "all right": right.all(axis=1),
        f"{primary} right, {compared.title} wrong": model_predictions.correct(primary)
        & ~right[:, 0],
        "all wrong": ~right.any(axis=1),
    }
    wanted = [count // len(cases) + (k < count % len(cases)) for k in range(len(cases))]
    labels = model_predictions.labels
    picked, row_labels, notes = [], [], []
    for (case, mask), number in zip(cases.items(), wanted):
        candidates = np.flatnonzero(mask)
        if not len(candidates):
            notes.append(f"No test image where {case}.")
            continue
        chosen = _spread(candidates, labels, {labels[i] for i in picked}, number)
        picked += chosen
        row_labels += [case] * len(chosen)
        if len(chosen) < number:
            notes.append(f"Only {len(chosen)} of {number} test images where {case}.")
    return picked, row_labels, notes


def _spread(candidates, labels, shown, number):
    """Up to `number` of `candidates`, in order, preferring classes not in `shown` nor chosen."""
    chosen, shown = [], set(shown)
    for index in candidates:
        if len(chosen) < number and labels[index] not in shown:
            chosen.append(int(index))
            shown.add(labels[index])
    rest = [int(index) for index in candidates if index not in chosen]
    return sorted(chosen + rest[: number - len(chosen)])
