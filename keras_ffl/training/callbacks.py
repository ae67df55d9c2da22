"""The callbacks of a training run: stop on a non-finite loss, commit every full epoch."""

import math

import keras

from keras_ffl.run_dir import RunError


class NonFiniteLoss(Exception):
    """The training loss became NaN or infinite at (`epoch`, `batch`)."""

    def __init__(self, epoch, batch, loss):
        super().__init__(f"Non-finite loss {loss} at epoch {epoch}, batch {batch}.")
        self.epoch, self.batch, self.loss = epoch, batch, loss


class StopOnNonFiniteLoss(keras.callbacks.Callback):
    """Stops training at once when the loss is NaN or infinite.

    Unlike `keras.callbacks.TerminateOnNaN`'s graceful stop, raising skips the
    epoch's end, so the diverged epoch is never checkpointed.
    """

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            raise NonFiniteLoss(self._epoch, batch, float(loss))


class EpochCommit(keras.callbacks.Callback):
    """Commits every completed epoch to the model directory (see `Run.commit_epoch`).

    An epoch that ran fewer than `steps_per_epoch` steps (Keras ends it early,
    with a warning, when the input runs out of data) is refused instead: it
    trained less than the run says. The callback also records the learning
    rate the epoch trained with, read before its first step (TensorBoard's
    "learning_rate" is the rate after the last one).
    """

    def __init__(self, run, directory, steps_per_epoch):
        super().__init__()
        self._run = run
        self._directory = directory
        self._steps_per_epoch = steps_per_epoch

    def on_epoch_begin(self, epoch, logs=None):
        self._learning_rate = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
        self._steps = 0

    def on_train_batch_end(self, batch, logs=None):
        self._steps = batch + 1

    def on_epoch_end(self, epoch, logs=None):
        if self._steps < self._steps_per_epoch:
            raise RunError(
                f"Training stopped: the input ran out of data in epoch {epoch + 1} after "
                f"{self._steps} of its {self._steps_per_epoch} steps, so that epoch was not "
                "saved — give the run more training data, or lower {arg:batch_size} or "
                "{arg:steps_per_epoch}"
            )
        logs = {k: float(keras.ops.convert_to_numpy(v)) for k, v in (logs or {}).items()}
        self._run.commit_epoch(self._directory, epoch, logs, self._learning_rate)
