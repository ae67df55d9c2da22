"""Calibration: how well a head's confidence matches its accuracy (Guo et al., ICML 2017).

A prediction's confidence is its largest class probability. Confidences fall
into equal-width bins (lo, hi] over [0, 1]; in each bin the accuracy and the
mean confidence are compared. The expected calibration error is the gap
averaged over examples: ECE = sum_b (n_b / N) |accuracy_b - confidence_b|.
"""

import dataclasses

import numpy as np

#: Guo et al.'s number of bins.
DEFAULT_BINS = 15


@dataclasses.dataclass(frozen=True)
class ReliabilityDiagram:
    """Per bin: its edges, example count, accuracy and mean confidence (NaN when empty)."""

    bin_edges: np.ndarray
    counts: np.ndarray
    accuracy: np.ndarray
    confidence: np.ndarray

    @property
    def ece(self):
        """The expected calibration error, a fraction in [0, 1]."""
        filled = self.counts > 0
        gaps = np.abs(self.accuracy[filled] - self.confidence[filled])
        return float(np.sum(self.counts[filled] * gaps) / np.sum(self.counts))


def reliability_diagram(probabilities, labels, num_bins=DEFAULT_BINS):
    """The `ReliabilityDiagram` of class probabilities (N, K) against labels (N,)."""
    probabilities = np.asarray(probabilities, np.float64)
    labels = np.asarray(labels)
    if probabilities.ndim != 2 or labels.shape != probabilities.shape[:1] or not len(labels):
        raise ValueError(
            "probabilities must be (N, K) and labels (N,) with N >= 1; got "
            f"{probabilities.shape} and {labels.shape}."
        )
    if num_bins < 1:
        raise ValueError(f"num_bins must be at least 1; got {num_bins}.")
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, num_bins + 1)
    # Bin b holds edges[b] < confidence <= edges[b + 1]; bin 0 also holds 0.
    bins = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, num_bins - 1)
    counts = np.bincount(bins, minlength=num_bins)
    with np.errstate(invalid="ignore"):  # Empty bins are NaN.
        accuracy = np.bincount(bins, correct, minlength=num_bins) / counts
        mean_confidence = np.bincount(bins, confidence, minlength=num_bins) / counts
    return ReliabilityDiagram(edges, counts, accuracy, mean_confidence)


def expected_calibration_error(probabilities, labels, num_bins=DEFAULT_BINS):
    """ECE of class probabilities (N, K) against labels (N,), with `num_bins` equal-width bins."""
    return reliability_diagram(probabilities, labels, num_bins).ece
