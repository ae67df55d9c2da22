"""Any functional Keras graph (images in, a 4-D feature map out) as an `Architecture`.

Its two stages are the graph up to a split layer and the graph after it, so FFL's
case 1 shares the first and gives every branch a fresh copy of the second. A
split is valid only where the layer's output is the one tensor crossing it: a
skip connection reading an earlier tensor from after the split has no trunk to
read it from.
"""

import abc

import keras

from keras_ffl.models.architecture import Architecture


class GraphBackbone(Architecture):
    """A backbone defined by `build_graph(input_shape)`, a fresh functional model per copy.

    `split` names the last layer of the shared trunk in case 1; None picks the
    last valid split point before the final resolution (the paper branches the
    last stage). Each copy lives in the network as nested models named
    "<prefix><name>" (or "<prefix><name>_trunk" / "_branch" when split).
    """

    num_stages = 2
    default_shared_stages = 1

    def __init__(self, name, layer_name, split=None, sync_bn=False):
        super().__init__(name, sync_bn)
        self._layer_name = layer_name
        self.split = split
        self._trunk_input_shape = None

    @property
    def layer_name(self):
        return self._layer_name

    @abc.abstractmethod
    def build_graph(self, input_shape):
        """A new functional model from images of `input_shape` to the feature map."""

    def adapt_input(self, x, prefix, incoming):
        """The stem before the graph: `x` as the graph expects it (default: unchanged)."""
        del prefix, incoming
        return x

    def stage(self, x, index, prefix):
        return self.apply(x, index, index + 1, prefix)

    def apply(self, x, start=0, stop=None, prefix="", incoming=None):
        stop = self.num_stages if stop is None else stop
        if not 0 <= start <= stop <= self.num_stages:
            raise ValueError(f"{self.name} has stages 0..1; cannot apply stages [{start}, {stop}).")
        if start == stop:
            return x
        name = f"{prefix}{self.layer_name}"
        if start == 0:
            x = self.adapt_input(x, prefix, incoming)
            self._trunk_input_shape = tuple(x.shape[1:])
            graph = _copied(self.build_graph(self._trunk_input_shape), prefix, self.sync_bn)
            if stop == 2:
                return keras.Model(graph.input, graph.output, name=name)(x)
            split = self.split_layer(graph, prefix)
            return keras.Model(graph.input, split.output, name=f"{name}_trunk")(x)
        if self._trunk_input_shape is None:
            raise ValueError(f"{self.name}: apply its trunk (stage 0) before a branch.")
        graph = _copied(self.build_graph(self._trunk_input_shape), prefix, self.sync_bn)
        split = self.split_layer(graph, prefix)
        return keras.Model(split.output, graph.output, name=f"{name}_branch")(x)

    def split_layer(self, graph, prefix=""):
        """The layer the trunk ends at: the one named `split` (after `prefix`), or the default."""
        points = valid_split_points(graph)
        if self.split is None:
            if not points:
                raise ValueError(
                    f"{self.name} has no layer whose output alone feeds the rest of the graph; "
                    "it cannot share a trunk: share nothing (shared_stages=0)."
                )
            final = graph.output.shape[1:3]
            earlier = [p for p in points if tuple(p.output.shape[1:3]) != tuple(final)]
            return (earlier or points)[-1]
        names = [op.name.removeprefix(prefix) for op in graph.operations]
        if self.split not in names:
            raise ValueError(
                f"{self.name} has no layer {self.split!r} to split at; valid split points "
                f"include {_nearest(points, names, len(names) // 2, prefix)}."
            )
        layer = graph.operations[names.index(self.split)]
        if layer not in points:
            raise ValueError(
                f"{self.name} cannot split at {self.split!r}: a skip connection crosses it "
                f"(the graph after it reads an earlier tensor); the nearest valid split "
                f"points are {_nearest(points, names, names.index(self.split), prefix)}."
            )
        return layer


def valid_split_points(graph):
    """Layers of `graph` after which only their own output feeds the rest, in graph order.

    The graph's input and output layers are left out: a trunk must hold at least
    one layer and leave at least one to each branch.
    """
    layers = graph.operations  # Layers and the ops called between them.
    position = {id(layer): i for i, layer in enumerate(layers)}
    # A tensor made at position s and read at c crosses every split after s and before c.
    crossed = [False] * len(layers)
    for consumer, layer in enumerate(layers):
        for tensor in keras.tree.flatten(_inputs(layer)):
            source = position[id(tensor._keras_history.operation)]
            for i in range(source + 1, consumer):
                crossed[i] = True
    output = id(graph.output._keras_history.operation)
    return [
        layer
        for i, layer in enumerate(layers[1:-1], start=1)
        if not crossed[i] and id(layer) != output and isinstance(layer, keras.layers.Layer)
        and len(layer.output.shape) == 4
    ]


def _inputs(layer):
    return [] if isinstance(layer, keras.layers.InputLayer) else layer.input


def _nearest(points, names, index, prefix):
    """Up to two valid split points on each side of position `index`, by name."""
    points = [names.index(p.name.removeprefix(prefix)) for p in points]
    before = [names[i] for i in points if i < index][-2:]
    after = [names[i] for i in points if i > index][:2]
    return ", ".join(before + after) or "none"


def _copied(graph, prefix, synchronized):
    """`graph` with `prefix` before every layer's name and the same weights, so that the
    variables of each copy in a network have paths of their own ("sub1_conv/kernel");
    with `synchronized` (sync_bn), every BatchNorm computes its batch statistics over all
    replicas, as keras_ffl's own backbones' do."""
    if not prefix and not synchronized:
        return graph

    def clone_layer(layer):
        config = {**layer.get_config(), "name": prefix + layer.name}
        if synchronized and isinstance(layer, keras.layers.BatchNormalization):
            config["synchronized"] = True
        return layer.__class__.from_config(config)

    clone = keras.models.clone_model(graph, clone_function=clone_layer)
    for source, copy in zip(graph.layers, clone.layers):
        copy.set_weights(source.get_weights())
    return clone
