"""`BatchNorm`: Keras's BatchNormalization with the official PyTorch code's training numerics.

Two things differ from `keras.layers.BatchNormalization` in training mode:

- Batch statistics are exact to float32. TensorFlow reduces a channel's
  N*H*W values one after another (131,072 on a CIFAR batch of 128), which
  loses about 1e-4 of the variance and 3e-6 of the mean; that drift flips ReLU
  masks and leaves float32 gradients 1-3% away from float64 ones. Here every
  sum is staged (over width, then height, then the batch), which keeps the
  statistics within about 1e-7 of float64 at the same cost. The backward pass
  is BatchNorm's closed-form gradient with the same staged sums, in fewer
  element-wise passes than automatic differentiation of the forward ops.
- The moving variance is updated with the unbiased batch variance
  (n / (n - 1) times the biased one that normalises the batch), as PyTorch's
  running_var is.

Inference, frozen layers (`trainable=False`) and the weights are the parent's,
so a `BatchNorm` converts to a stock `keras.layers.BatchNormalization` with the
same config and weights (keras_ffl.export does so for standalone sub-networks).
With `synchronized=True` the sums are all-reduced over the replicas of the
current tf.distribute strategy: mean first, then the squared deviations from it.
"""

import keras
import tensorflow as tf


def staged_sum(x, keepdims=False):
    """Per-channel sum of a [batch, ..., channels] tensor, one axis at a time, innermost first.

    Each stage adds at most one spatial dimension's (or the batch's) values, so
    the rounding error grows with their number rather than with their product.
    """
    for axis in range(x.shape.rank - 2, -1, -1):
        x = tf.reduce_sum(x, axis=axis, keepdims=True)
    return x if keepdims else tf.reshape(x, [-1])


def _all_reduce(values, synchronized):
    """Sums `values` over the replicas when synchronised under a multi-replica strategy."""
    context = tf.distribute.get_replica_context()
    if not synchronized or context is None or context.num_replicas_in_sync == 1:
        return values
    return context.all_reduce(tf.distribute.ReduceOp.SUM, values)


def batch_norm_training(x, gamma, beta, epsilon, synchronized=False, name="batch_norm"):
    """BatchNorm of `x` [batch, ..., channels] by its batch statistics, with its gradient.

    Returns (outputs, mean, biased variance, number of values per channel).
    Gradients flow to `x`, `gamma` and `beta` through the outputs only: the
    statistics are returned for the moving averages. The gradient's ops are
    named "<name>_grad/...", so that profiles attribute them to the layer.
    """
    channels = x.shape[-1]
    count = tf.cast(tf.size(x) // channels, x.dtype)
    if synchronized:
        count = _all_reduce(count, synchronized)
    broadcast = [1] * (x.shape.rank - 1) + [channels]

    @tf.custom_gradient
    def normalise(x, gamma, beta):
        mean = _all_reduce(staged_sum(x), synchronized) / count
        centred = x - tf.reshape(mean, broadcast)
        variance = _all_reduce(staged_sum(tf.square(centred)), synchronized) / count
        inv_std = tf.math.rsqrt(variance + epsilon)
        scale = gamma * inv_std
        outputs = centred * tf.reshape(scale, broadcast) + tf.reshape(beta, broadcast)

        def gradient(d_outputs, *_unused_statistics_gradients):
            with tf.name_scope(f"{name}_grad"):
                return _gradient(d_outputs)

        def _gradient(d_outputs):
            # This replica's sums give gamma's and beta's gradients (the optimizer sums
            # those over replicas); the input's gradient needs the global sums.
            local = tf.stack([staged_sum(d_outputs), staged_sum(d_outputs * centred)])
            sum_dy, sum_dy_centred = tf.unstack(_all_reduce(local, synchronized))
            # dx = scale * (dy - mean(dy) - centred * mean(dy * centred) / (variance + eps))
            d_x = (d_outputs - tf.reshape(sum_dy / count, broadcast)) * tf.reshape(
                scale, broadcast
            ) - centred * tf.reshape(scale * inv_std * inv_std * sum_dy_centred / count, broadcast)
            return d_x, local[1] * inv_std, local[0]

        return (outputs, mean, variance), gradient

    outputs, mean, variance = normalise(x, gamma, beta)
    return outputs, tf.stop_gradient(mean), tf.stop_gradient(variance), count


@keras.saving.register_keras_serializable(package="keras_ffl")
class BatchNorm(keras.layers.BatchNormalization):
    """`keras.layers.BatchNormalization` with exact float32 batch statistics and PyTorch's
    unbiased running variance (see the module docstring). Same arguments and weights."""

    def call(self, inputs, training=None, mask=None):
        if not (training and self.trainable) or mask is not None or self.renorm:
            return super().call(inputs, training=training, mask=mask)
        if self.axis not in (-1, len(inputs.shape) - 1) or not (self.scale and self.center):
            raise ValueError(
                "keras_ffl BatchNorm normalises the last axis with scale and center; got "
                f"axis={self.axis}, scale={self.scale}, center={self.center}. Use "
                "keras.layers.BatchNormalization for other settings."
            )
        compute_dtype = keras.backend.result_type(inputs.dtype, "float32")
        x = tf.cast(inputs, compute_dtype)
        outputs, mean, variance, count = batch_norm_training(
            x,
            tf.cast(self.gamma, compute_dtype),
            tf.cast(self.beta, compute_dtype),
            self.epsilon,
            self.synchronized,
            self.name,
        )
        unbiased = variance * count / tf.maximum(count - 1, 1)
        momentum = self.momentum
        self.moving_mean.assign(
            self.moving_mean * momentum + tf.cast(mean, self.moving_mean.dtype) * (1 - momentum)
        )
        self.moving_variance.assign(
            self.moving_variance * momentum
            + tf.cast(unbiased, self.moving_variance.dtype) * (1 - momentum)
        )
        return tf.cast(outputs, self.compute_dtype)
