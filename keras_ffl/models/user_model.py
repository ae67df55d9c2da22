"""A model of your own as a backbone: a functional `keras.Model`, a function building one,
or a `.keras` file ("file:PATH.keras").

The feature map is the layer the user names, or else the model's last 4-D output
before its global pooling; what follows it (pooling, a classifier) is left out
and every method adds its own classifier. Each copy is freshly initialised.
"""

import os

import keras

from keras_ffl.models.graph_backbone import GraphBackbone


class UserModel(GraphBackbone):
    """Args:
      model: a functional `keras.Model`, a function `f(input_shape)` returning one, or
        the path of a `.keras` file.
      features: the layer whose output is the feature map (default: the last 4-D one).
      split: the layer the shared trunk ends at in case 1.
      weights: a weights file (`.weights.h5`) of the backbone up to its feature map.
    """

    def __init__(self, model, *, features=None, split=None, weights=None, sync_bn=False):
        if isinstance(model, str):
            if not os.path.isfile(model):
                raise ValueError(f"file:{model}: no such .keras file.")
            self.path = model
            name = f"file:{model}"
            model = keras.saving.load_model(model, compile=False)
        else:
            self.path = None
            name = getattr(model, "name", getattr(model, "__name__", "user_model"))
        keywords = {"features": features, "split": split, "weights": weights}
        spec = "&".join(f"{k}={v}" for k, v in keywords.items() if v is not None)
        layer_name = "".join(
            c if c.isalnum() else "_" for c in os.path.splitext(os.path.basename(name))[0]
        ).strip("_") or "user_model"
        super().__init__(
            name + (f"?{spec}" if spec and self.path else ""), layer_name, split, sync_bn
        )
        self.source, self.features, self.weights = model, features, weights

    def build_graph(self, input_shape):
        model = self.source
        if not isinstance(model, keras.Model):
            model = model(tuple(input_shape))
        if not isinstance(model, keras.Model) or not hasattr(model, "input"):
            raise ValueError(
                f"{self.name} is not a functional keras.Model; build it with keras.Input "
                "and the functional API (or keras.Sequential with an Input)."
            )
        expected = tuple(model.input.shape[1:])
        if any(e is not None and e != d for e, d in zip(expected, input_shape)):
            raise ValueError(
                f"{self.name} takes images of shape {expected}; the data's are "
                f"{tuple(input_shape)}: build the model for them."
            )
        graph = keras.Model(model.input, self._feature_layer(model).output)
        graph = keras.models.clone_model(graph, input_tensors=keras.Input(tuple(input_shape)))
        if self.weights is not None:
            graph.load_weights(self.weights)
        return graph

    def _feature_layer(self, model):
        if self.features is not None:
            names = [layer.name for layer in model.layers]
            if self.features not in names:
                raise ValueError(
                    f"{self.name} has no layer {self.features!r}; its layers: {', '.join(names)}."
                )
            layer = model.get_layer(self.features)
            if len(layer.output.shape) != 4:
                raise ValueError(
                    f"{self.name}: layer {self.features!r} outputs shape "
                    f"{tuple(layer.output.shape)}; the feature map must be 4-D."
                )
            return layer
        maps = [layer for layer in model.layers if len(getattr(layer.output, "shape", ())) == 4]
        if not maps:
            raise ValueError(
                f"{self.name} has no 4-D output (batch, height, width, channels) to take as "
                "its feature map."
            )
        return maps[-1]
