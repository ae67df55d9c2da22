"""Folding BatchNorm into convolutions for serving computes the same function."""

import keras
import numpy as np

from keras_ffl import build_ffl_network
from keras_ffl.export import extract_fused, extract_subnetwork
from keras_ffl.export.folding import fold_batch_norms, foldable_pairs


def trained_looking_network():
    """An FFL ResNet-8 whose BatchNorms hold non-trivial statistics, as after training."""
    network = build_ffl_network("resnet8", 10, (16, 16, 3))
    rng = np.random.default_rng(0)
    for layer in network.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            shape = layer.gamma.shape
            layer.set_weights([
                rng.uniform(0.5, 2.0, shape), rng.normal(size=shape),
                rng.normal(size=shape), rng.uniform(0.5, 2.0, shape),
            ])  # fmt: skip
    return network


def test_folded_models_match_and_hold_no_top_level_batch_norm():
    network = trained_looking_network()
    x = np.random.default_rng(1).normal(size=(8, 16, 16, 3)).astype("float32")
    for model in (extract_subnetwork(network, 1), extract_fused(network)):
        batch_norms = [l for l in model.layers if isinstance(l, keras.layers.BatchNormalization)]
        assert len(foldable_pairs(model)) == len(batch_norms) > 0  # Every conv -> BN pair.
        folded = fold_batch_norms(model)
        assert not any(isinstance(l, keras.layers.BatchNormalization) for l in folded.layers)
        expected = model(x, training=False).numpy()
        np.testing.assert_allclose(folded(x, training=False).numpy(), expected, atol=1e-5)
        # Every layer of the original is still found by name (the features signature uses it).
        assert {l.name for l in model.layers} <= {l.name for l in folded.layers}


def test_a_convolution_read_twice_is_not_folded():
    inputs = keras.Input((8, 8, 2))
    conv = keras.layers.Conv2D(3, 3, padding="same", use_bias=False, name="conv")(inputs)
    normalised = keras.layers.BatchNormalization(name="bn")(conv)
    model = keras.Model(inputs, keras.layers.Add()([normalised, conv]))
    assert foldable_pairs(model) == {}
    x = np.random.default_rng(2).normal(size=(2, 8, 8, 2)).astype("float32")
    np.testing.assert_allclose(fold_batch_norms(model)(x), model(x), atol=1e-6)
