"""SGD as the official PyTorch code runs it: coupled L2 weight decay, PyTorch momentum."""

import re

import keras
import tensorflow as tf
from keras import ops


def layer_pattern(layer_names):
    """A regex for `CoupledSGD`'s `l2_overrides` matching the variables of the named layers."""
    return r"(^|/)(" + "|".join(re.escape(name) for name in layer_names) + r")/"


@keras.saving.register_keras_serializable(package="keras_ffl")
class CoupledSGD(keras.optimizers.Optimizer):
    """SGD with momentum and coupled L2 weight decay, per variable, PyTorch-style.

    The update is PyTorch's `SGD(momentum, nesterov, weight_decay)`:
      g <- g + l2 * w;  m <- momentum * m + g;
      w <- w - lr * (g + momentum * m)  (Nesterov)  or  w - lr * m.
    It differs from `keras.optimizers.SGD` in two ways that matter for matching
    the paper: weight decay is added to the gradient (Keras's `weight_decay` is
    decoupled), and the momentum buffer holds gradients rather than lr-scaled
    steps, so a learning-rate drop takes effect at once. Decay applies to every
    trainable variable, BatchNorm and biases included, after gradients are
    aggregated across replicas.

    Args:
      learning_rate: a float or a `keras.optimizers.schedules` schedule.
      momentum: momentum factor.
      nesterov: use Nesterov momentum.
      l2: decay of every variable that no override matches.
      l2_overrides: {regex: decay}; a variable whose `path` matches a regex
        (re.search, first match wins) gets that decay; `layer_pattern` makes one.
    """

    def __init__(
        self,
        learning_rate=0.1,
        momentum=0.9,
        nesterov=True,
        l2=1e-4,
        l2_overrides=None,
        name="coupled_sgd",
        **kwargs,
    ):
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1); got {momentum}.")
        if l2 < 0 or any(rate < 0 for rate in (l2_overrides or {}).values()):
            raise ValueError("Weight decays must be >= 0.")
        self.momentum = float(momentum)
        self.nesterov = bool(nesterov)
        self.l2 = float(l2)
        self.l2_overrides = {str(k): float(v) for k, v in (l2_overrides or {}).items()}

    def l2_for(self, variable):
        """The decay applied to `variable`, from its path."""
        for pattern, rate in self.l2_overrides.items():
            if re.search(pattern, variable.path):
                return rate
        return self.l2

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        self.momentums = [
            self.add_variable_from_reference(v, name="momentum") for v in variables
        ]
        self._l2_rates = [self.l2_for(v) for v in variables]

    def update_step(self, gradient, variable, learning_rate):
        index = self._get_variable_index(variable)
        learning_rate = ops.cast(learning_rate, variable.dtype)
        gradient = ops.cast(gradient, variable.dtype)
        if self._l2_rates[index]:
            gradient = gradient + ops.cast(self._l2_rates[index], variable.dtype) * variable
        if not self.momentum:
            self.assign_sub(variable, learning_rate * gradient)
            return
        # TensorFlow's fused momentum kernel is PyTorch's update:
        # m <- momentum * m + g; w <- w - lr * (g + momentum * m) (Nesterov) or w - lr * m,
        # in one pass over the variable instead of five element-wise ops.
        tf.raw_ops.ResourceApplyMomentum(
            var=_handle(variable),
            accum=_handle(self.momentums[index]),
            lr=learning_rate,
            grad=gradient,
            momentum=ops.cast(self.momentum, variable.dtype),
            use_nesterov=self.nesterov,
        )

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "momentum": self.momentum,
                "nesterov": self.nesterov,
                "l2": self.l2,
                "l2_overrides": self.l2_overrides,
            }
        )
        return config


def _handle(variable):
    """The resource handle of a Keras or TensorFlow variable (this replica's, when mirrored)."""
    if isinstance(variable, keras.Variable):
        variable = variable.value
    return variable.handle


def paper_sgd(learning_rate, weight_decay=1e-4, low_decay_layers=(), low_weight_decay=1e-5,
              momentum=0.9):
    """The paper's optimiser: Nesterov SGD with coupled L2, `weight_decay` on every
    variable but those of `low_decay_layers`, which get `low_weight_decay`."""
    overrides = {layer_pattern(low_decay_layers): low_weight_decay} if low_decay_layers else {}
    return CoupledSGD(
        learning_rate=learning_rate,
        momentum=momentum,
        nesterov=True,
        l2=weight_decay,
        l2_overrides=overrides,
    )
