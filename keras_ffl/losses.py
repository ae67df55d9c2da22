"""Loss pieces every method shares, as pure functions of logits and labels.

Every function returns per-example values so that the caller can average over the
global batch, which is what keeps the loss right under tf.distribute.
"""

from keras import ops

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

