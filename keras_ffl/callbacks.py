"""Keras callbacks of FFL training."""

import contextlib
import signal
import threading

import keras

from keras_ffl.schedules import sigmoid_rampup


class DistillationRampUp(keras.callbacks.Callback):
    """Sets the model's distillation weight w(epoch) at the start of every epoch.

    The official code's ramp-up is a per-epoch value; setting it from the epoch
    index (not from state) makes a resumed run continue where it was. The value
    is also logged as "distill_weight" at the end of each epoch.
    """

    def on_epoch_begin(self, epoch, logs=None):
        weight = sigmoid_rampup(epoch, self.model.rampup_epochs)
        self.model.distill_weight.assign(weight)

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["distill_weight"] = float(keras.ops.convert_to_numpy(self.model.distill_weight))


class StopOnInterrupt(keras.callbacks.Callback):
    """Raises KeyboardInterrupt at the end of the next batch once Ctrl-C (SIGINT) came.

    Python raises a signal's KeyboardInterrupt wherever the main thread is, and
    one raised inside a finalizer (TensorFlow's objects have many) is printed and
    dropped, after which training would run to its end. `catch_interrupts` makes
    SIGINT also set the flag this callback checks.
    """

    def __init__(self):
        super().__init__()
        self.interrupted = False

    def on_train_batch_end(self, batch, logs=None):
        if self.interrupted:
            raise KeyboardInterrupt

    on_test_batch_end = on_train_batch_end  # The evaluation at an epoch's end.


@contextlib.contextmanager
def catch_interrupts():
    """Yields a StopOnInterrupt whose flag SIGINT sets, while SIGINT still raises at once.

    Only Python's default SIGINT handler in the main thread is replaced (and
    restored on exit); elsewhere the callback never fires.
    """
    callback = StopOnInterrupt()
    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGINT) is not signal.default_int_handler):
        yield callback
        return

    def handler(signum, frame):
        callback.interrupted = True
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield callback
    finally:
        signal.signal(signal.SIGINT, previous)
