"""Keras callbacks of FFL training."""

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
