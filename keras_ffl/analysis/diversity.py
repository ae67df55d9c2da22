"""Diversity between heads: how often, and by how much, their predictions differ.

Online-distillation papers explain an ensemble's gain by its members' diversity:
the disagreement rate is the fraction of examples on which two heads predict
different classes; the mean KL divergence, KL(p_a || p_b) averaged over
examples, measures how far apart their whole distributions are (it is not
symmetric, so both directions are reported).
"""

import dataclasses
import itertools

import numpy as np


@dataclasses.dataclass(frozen=True)
class PairDiversity:
    """The diversity of heads `a` and `b` on the same examples."""

    a: str
    b: str
    disagreement: float
    kl_ab: float
    kl_ba: float


def disagreement_rate(probabilities_a, probabilities_b):
    """Fraction of examples whose most probable class differs between two (N, K) arrays."""
    a, b = _pair(probabilities_a, probabilities_b)
    return float(np.mean(a.argmax(axis=1) != b.argmax(axis=1)))


def mean_kl(probabilities_p, probabilities_q):
    """KL(p || q) = sum_k p_k log(p_k / q_k), in nats, averaged over the examples."""
    p, q = _pair(probabilities_p, probabilities_q)
    # 0 log 0 = 0; a zero q where p > 0 (possible after underflow) is floored at
    # the smallest normal float so that the divergence stays finite.
    log_p = np.log(np.where(p > 0, p, 1.0))
    log_q = np.log(np.maximum(q, np.finfo(np.float64).tiny))
    terms = np.where(p > 0, p * (log_p - log_q), 0.0)
    return float(np.mean(terms.sum(axis=1)))


def pairwise_diversity(probabilities, heads):
    """`PairDiversity` of every pair of `heads` (in order), from a dict head -> (N, K)."""
    return [
        PairDiversity(
            a,
            b,
            disagreement_rate(probabilities[a], probabilities[b]),
            mean_kl(probabilities[a], probabilities[b]),
            mean_kl(probabilities[b], probabilities[a]),
        )
        for a, b in itertools.combinations(heads, 2)
    ]


def _pair(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.ndim != 2 or a.shape != b.shape:
        raise ValueError(
            "Both predictions must be (N, K) arrays of the same shape; got "
            f"{a.shape} and {b.shape}."
        )
    return a, b
