"""The callbacks of a training run: stop on a non-finite loss, commit every epoch."""

import math

import keras


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

    It also records the learning rate the epoch trained with, read before its
    first step (TensorBoard's "learning_rate" is the rate after the last one).
    """

    def __init__(self, run, directory):
        super().__init__()
        self._run = run
        self._directory = directory

    def on_epoch_begin(self, epoch, logs=None):
        self._learning_rate = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))

    def on_epoch_end(self, epoch, logs=None):
        logs = {k: float(keras.ops.convert_to_numpy(v)) for k, v in (logs or {}).items()}
        self._run.commit_epoch(self._directory, epoch, logs, self._learning_rate)
