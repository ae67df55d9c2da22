"""FFL's objective (paper eqs. 1-6) as pure functions of logits and labels.

Every function returns per-example values so that the caller can average over the
global batch, which is what keeps the loss right under tf.distribute.
"""

from keras import backend, ops

#: Added to the teacher's probabilities before the log, as the official code does.
TEACHER_EPSILON = 1e-7


def softened_kl(teacher_logits, student_logits, temperature):
    """Per-example KL(sigma(teacher; T) || sigma(student; T)) with the teacher held constant.

    As in the official code, the teacher's probabilities get +1e-7 before the log
    (and are not renormalised), and no gradient flows into the teacher.
    """
    teacher = ops.softmax(ops.stop_gradient(teacher_logits) / temperature, axis=-1)
    teacher = teacher + TEACHER_EPSILON
    log_student = ops.log_softmax(student_logits / temperature, axis=-1)
    return ops.sum(teacher * (ops.log(teacher) - log_student), axis=-1)


def cross_entropy(labels, logits):
    """Per-example softmax cross-entropy with integer labels."""
    return ops.sparse_categorical_crossentropy(labels, logits, from_logits=True)


def ffl_loss_terms(
    labels,
    sub_logits,
    fused_logits,
    temperature=3.0,
    distill_weight=1.0,
    ekd=True,
    fkd=True,
):
    """Per-example terms of the FFL objective.

    total = sum_k CE(y, z_k) + CE(y, z_f) + w * T^2 * (EKD + FKD), with
    EKD = KL(sigma(z_e; T) || sigma(z_f; T)), z_e = mean_k z_k (ensemble teaches fused),
    FKD = sum_k KL(sigma(z_f; T) || sigma(z_k; T)) (fused teaches each sub-network).

    Args:
      labels: integer labels, shape [batch].
      sub_logits: list of n >= 2 logits tensors [batch, classes], one per sub-network.
      fused_logits: the fused classifier's logits [batch, classes].
      temperature: T.
      distill_weight: the ramp-up weight w(epoch).
      ekd, fkd: switch the two distillation terms (the paper's Table II ablations).

    Returns:
      A dict of per-example tensors: "total", "ce" (all heads), "ekd", "fkd", and
      "ce_sub{k}" / "ce_fused" for each head.
    """
    sub_logits = [_at_least_float32(z) for z in sub_logits]
    fused_logits = _at_least_float32(fused_logits)
    terms = {}
    for k, z in enumerate(sub_logits, start=1):
        terms[f"ce_sub{k}"] = cross_entropy(labels, z)
    terms["ce_fused"] = cross_entropy(labels, fused_logits)
    terms["ce"] = sum(terms.values())
    zeros = ops.zeros_like(terms["ce"])
    ensemble = sum(sub_logits) / len(sub_logits)
    terms["ekd"] = softened_kl(ensemble, fused_logits, temperature) if ekd else zeros
    terms["fkd"] = (
        sum(softened_kl(fused_logits, z, temperature) for z in sub_logits) if fkd else zeros
    )
    terms["total"] = terms["ce"] + distill_weight * temperature**2 * (terms["ekd"] + terms["fkd"])
    return terms


def _at_least_float32(logits):
    """16-bit logits cast to float32, for a stable softmax; float32/float64 kept as they are."""
    return ops.cast(logits, backend.result_type(logits.dtype, "float32"))
