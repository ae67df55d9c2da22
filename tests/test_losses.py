"""The FFL objective against an independent NumPy computation of DESIGN.md §1."""

import numpy as np
import pytest
import tensorflow as tf

from keras_ffl import ffl_loss_terms, softened_kl

T = 3.0


def np_softmax(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def np_kl(teacher, student, t):
    """Official KLLoss: batch mean of sum p_t (log p_t - log p_s), p_t = softmax + 1e-7."""
    p_t = np_softmax(teacher / t) + 1e-7
    log_p_s = np.log(np_softmax(student / t))
    return np.mean(np.sum(p_t * (np.log(p_t) - log_p_s), axis=-1))


def np_ce(labels, logits):
    return np.mean(-np.log(np_softmax(logits)[np.arange(len(labels)), labels]))


def np_ffl_total(labels, subs, fused, t, w, ekd=True, fkd=True):
    ce = sum(np_ce(labels, z) for z in subs) + np_ce(labels, fused)
    ensemble = sum(subs) / len(subs)
    l_ekd = np_kl(ensemble, fused, t) if ekd else 0.0
    l_fkd = sum(np_kl(fused, z, t) for z in subs) if fkd else 0.0
    return ce + w * t * t * (l_ekd + l_fkd)


@pytest.fixture
def logits():
    rng = np.random.RandomState(7)
    labels = rng.randint(0, 5, size=6).astype("int32")
    subs = [rng.randn(6, 5).astype("float32") * 2 for _ in range(3)]
    fused = rng.randn(6, 5).astype("float32") * 2
    return labels, subs, fused


@pytest.mark.parametrize("n", [2, 3])
@pytest.mark.parametrize("ekd,fkd", [(True, True), (False, True), (True, False), (False, False)])
def test_total_matches_numpy(logits, n, ekd, fkd):
    labels, subs, fused = logits
    subs = subs[:n]
    terms = ffl_loss_terms(labels, subs, fused, temperature=T, distill_weight=0.37, ekd=ekd, fkd=fkd)
    expected = np_ffl_total(labels, subs, fused, T, 0.37, ekd, fkd)
    np.testing.assert_allclose(float(np.mean(terms["total"])), expected, rtol=1e-5)


def test_terms_match_numpy(logits):
    labels, subs, fused = logits
    terms = ffl_loss_terms(labels, subs[:2], fused, temperature=T, distill_weight=1.0)
    np.testing.assert_allclose(np.mean(terms["ce_sub1"]), np_ce(labels, subs[0]), rtol=1e-5)
    np.testing.assert_allclose(np.mean(terms["ce_fused"]), np_ce(labels, fused), rtol=1e-5)
    np.testing.assert_allclose(
        np.mean(terms["ekd"]), np_kl((subs[0] + subs[1]) / 2, fused, T), rtol=1e-5
    )
    np.testing.assert_allclose(
        np.mean(terms["fkd"]), np_kl(fused, subs[0], T) + np_kl(fused, subs[1], T), rtol=1e-5
    )


def test_hand_computed_kl():
    # Teacher [0, 0] -> p = [.5, .5] (+1e-7); student [ln 3 * T, 0] -> q = [.75, .25].
    teacher = np.zeros((1, 2), "float32")
    student = np.array([[np.log(3.0) * T, 0.0]], "float32")
    p = 0.5 + 1e-7
    expected = p * (np.log(p) - np.log(0.75)) + p * (np.log(p) - np.log(0.25))
    np.testing.assert_allclose(float(softened_kl(teacher, student, T)[0]), expected, rtol=1e-6)


def test_no_gradient_reaches_teachers(logits):
    labels, subs, fused = logits
    subs = [tf.Variable(z) for z in subs[:2]]
    fused = tf.Variable(fused)
    # EKD: the ensemble (sub-networks) teaches -> no gradient into the sub logits.
    with tf.GradientTape(persistent=True) as tape:
        terms = ffl_loss_terms(labels, subs, fused, temperature=T, fkd=False)
        ekd = tf.reduce_sum(terms["ekd"])
        fkd_terms = ffl_loss_terms(labels, subs, fused, temperature=T, ekd=False)
        fkd = tf.reduce_sum(fkd_terms["fkd"])
    assert all(g is None for g in tape.gradient(ekd, subs))
    assert np.abs(tape.gradient(ekd, fused).numpy()).sum() > 0
    # FKD: the fused classifier teaches -> no gradient into the fused logits.
    assert tape.gradient(fkd, fused) is None
    assert all(np.abs(g.numpy()).sum() > 0 for g in tape.gradient(fkd, subs))
