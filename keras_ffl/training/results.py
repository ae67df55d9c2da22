"""A run's results: every head's final and best test accuracy, from its history."""

import numpy as np

from keras_ffl.heads import SUB_MEAN


def summarize(config, history):
    """Every head's final and best test accuracy (and top-5 with `config.top5`).

    Heads: the method's (e.g. "sub1".."subn" and "fused"), "ensemble" (the
    sub-networks' mean logits) and "sub_mean" (the mean of the sub-networks'
    accuracies) with two or more sub-networks. Epochs are 1-based.
    """
    heads = config.method_class.metric_heads_of(config.branches)
    summary_heads = heads + ([SUB_MEAN] if config.branches >= 2 else [])
    metrics = {"test_accuracy": (summary_heads, "acc")}
    if config.top5:
        metrics["test_top5_accuracy"] = (heads, "top5")
    results = {"dataset": config.dataset, "epochs": len(history)}
    for key, (names, suffix) in metrics.items():
        results[key] = {}
        for head in names:
            values = [float(row[f"val_{head}_{suffix}"]) for row in history]
            best = int(np.argmax(values))
            results[key][head] = {"final": values[-1], "best": values[best], "best_epoch": best + 1}
    return results


def format_results(results):
    """A small table of every head's final and best test accuracy."""
    lines = [f"Test accuracy on {results['dataset']} after {results['epochs']} epochs:"]
    lines.append(f"  {'head':<10}{'final':>9}{'best':>9}  (epoch)")
    for head, acc in results["test_accuracy"].items():
        lines.append(
            f"  {head:<10}{acc['final']:>9.2%}{acc['best']:>9.2%}  ({acc['best_epoch']})"
        )
    return "\n".join(lines)


def best_row(config, history):
    """The history row with the best test accuracy of the method's primary head
    (the first among ties), or None before the first epoch."""
    if not history:
        return None
    return max(history, key=lambda row: float(row[config.best_metric]))
