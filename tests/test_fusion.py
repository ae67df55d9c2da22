"""FusionBlock: shapes, numerics against a NumPy reference, ablation mode, serialisation."""

import keras
import numpy as np
import pytest

from keras_ffl import FusionBlock


def feature_maps(*shapes, seed=0):
    rng = np.random.RandomState(seed)
    return [np.abs(rng.randn(*s)).astype("float32") for s in shapes]


def np_bn(x, layer):
    gamma, beta, mean, var = (w.numpy() for w in layer.weights)
    return gamma * (x - mean) / np.sqrt(var + layer.epsilon) + beta


def test_matches_numpy_reference_in_inference():
    xs = feature_maps((2, 4, 4, 3), (2, 4, 4, 5))
    block = FusionBlock(channels=4)
    block(xs)  # builds the weights
    # Randomise BN statistics so that they matter.
    for bn in (block.depthwise_bn, block.pointwise_bn):
        for w in bn.weights:
            w.assign(np.random.RandomState(1).uniform(0.5, 1.5, w.shape).astype("float32"))
    out = block(xs, training=False).numpy()
    x = np.concatenate(xs, axis=-1)
    padded = np.pad(x, [(0, 0), (1, 1), (1, 1), (0, 0)])
    dw = block.depthwise.kernel.numpy()[..., 0]  # [3, 3, 8]
    y = np.zeros_like(x)
    for i in range(4):
        for j in range(4):
            y[:, i, j, :] = np.einsum("bhwc,hwc->bc", padded[:, i : i + 3, j : j + 3, :], dw)
    y = np.maximum(np_bn(y, block.depthwise_bn), 0)
    y = np.einsum("bhwc,cd->bhwd", y, block.pointwise.kernel.numpy()[0, 0])
    y = np.maximum(np_bn(y, block.pointwise_bn), 0)
    np.testing.assert_allclose(out, y, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("channels,expected", [("min", 3), ("sum", 8), (6, 6)])
def test_output_channels(channels, expected):
    xs = feature_maps((2, 4, 4, 3), (2, 4, 4, 5))
    assert FusionBlock(channels=channels)(xs).shape == (2, 4, 4, expected)


def test_any_number_of_inputs_and_differing_spatial_sizes():
    xs = feature_maps((2, 8, 8, 4), (2, 4, 4, 6), (2, 7, 7, 2))
    block = FusionBlock(channels="sum")
    assert block(xs).shape == (2, 4, 4, 12)
    assert block.resizers[1] is None and block.resizers[0] is not None
    assert block.compute_output_shape([x.shape for x in xs]) == (2, 4, 4, 12)


def test_average_mode_is_the_mean_and_needs_equal_shapes():
    xs = feature_maps((2, 4, 4, 3), (2, 4, 4, 3))
    np.testing.assert_allclose(FusionBlock(mode="average")(xs), (xs[0] + xs[1]) / 2, rtol=1e-6)
    with pytest.raises(ValueError, match="one shape.*mode='fusion'"):
        FusionBlock(mode="average")(feature_maps((2, 4, 4, 3), (2, 4, 4, 5)))


def test_rejects_bad_arguments():
    with pytest.raises(ValueError, match="at least 2"):
        FusionBlock()(feature_maps((2, 4, 4, 3)))
    with pytest.raises(ValueError, match="mode"):
        FusionBlock(mode="sum")
    with pytest.raises(ValueError, match="channels"):
        FusionBlock(channels=0)


def test_serialises_inside_a_saved_model(tmp_path):
    a, b = keras.Input((4, 4, 3)), keras.Input((4, 4, 5))
    out = FusionBlock(channels=4, name="fusion")([a, b])
    model = keras.Model([a, b], out)
    xs = feature_maps((2, 4, 4, 3), (2, 4, 4, 5))
    path = tmp_path / "fusion.keras"
    model.save(path)
    restored = keras.saving.load_model(path)
    assert restored.get_layer("fusion").get_config()["channels"] == 4
    np.testing.assert_allclose(restored(xs), model(xs), atol=1e-6)
