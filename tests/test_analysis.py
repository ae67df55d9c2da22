"""Grad-CAM (Selvaraju et al., ICCV 2017), calibration (Guo et al., ICML 2017), diversity, names."""

import itertools
import math
import os
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from test_fit import write_folder, write_idx

from keras_ffl import (
    FFLModel,
    build_ffl_network,
    build_subnetwork,
    data,
    get_method,
    methods,
)
from keras_ffl.analysis import (
    cam_heads,
    disagreement_rate,
    expected_calibration_error,
    figures,
    grad_cam,
    mean_kl,
    pairwise_diversity,
    reliability_diagram,
    uniform_heads,
)
from keras_ffl.heads import FUSED, network_heads
from keras_ffl.validation import ArgumentError

# Grad-CAM ---------------------------------------------------------------------


def _two_head_network(kernels):
    """Heads sub1, sub2 whose feature map is the image itself, GAP + Dense with `kernels`,
    and an "ensemble" head averaging their logits (no feature map of its own)."""
    images = keras.Input((4, 5, 2), name="images")
    outputs = {}
    for head, kernel in zip(("sub1", "sub2"), kernels):
        features = keras.layers.Identity(name=f"{head}_features")(images)
        pooled = keras.layers.GlobalAveragePooling2D(name=f"{head}_pool")(features)
        dense = keras.layers.Dense(kernel.shape[1], name=f"{head}_logits")
        outputs[head] = dense(pooled)
        dense.set_weights([kernel, np.zeros(kernel.shape[1])])
    outputs["ensemble"] = keras.layers.Average(name="ensemble_logits")(list(outputs.values()))
    return keras.Model(images, outputs)


def _numpy_cam(feature_map, kernel, classes, size):
    """Grad-CAM of GAP + Dense heads from the formula: dy_c/dA_ijk = W[k, c] / (h w)."""
    height, width = feature_map.shape[1:3]
    weights = kernel[:, classes].T / (height * width)  # (N, K): the pooled gradients.
    cam = np.maximum(np.einsum("nhwk,nk->nhw", feature_map, weights), 0.0)
    cam = tf.image.resize(cam[..., None], size, method="bilinear").numpy()[..., 0]
    peak = cam.max(axis=(1, 2), keepdims=True)
    return np.where(peak > 0, cam / np.where(peak > 0, peak, 1.0), 0.0)


def test_grad_cam_lights_up_the_one_pixel_holding_the_evidence():
    # Class 1's logit reads channel 0 only; the image has channel 0 lit at one pixel
    # and channel 1 (which class 1 ignores) lit everywhere else.
    kernel = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]], np.float32)
    network = _two_head_network([kernel, kernel])
    image = np.zeros((1, 4, 5, 2), np.float32)
    image[0, :, :, 1] = 1.0
    image[0, 2, 3, 1], image[0, 2, 3, 0] = 0.0, 3.0
    cam = grad_cam(network, "sub1", image, class_index=1)
    expected = np.zeros((1, 4, 5), np.float32)
    expected[0, 2, 3] = 1.0
    np.testing.assert_allclose(cam, expected, atol=1e-6)
    # Class 0 reads channel 1: everything but that pixel.
    np.testing.assert_allclose(grad_cam(network, "sub2", image, class_index=0), 1.0 - expected)


def test_grad_cam_of_a_hand_built_network_matches_the_formula():
    rng = np.random.default_rng(0)
    kernels = [rng.normal(size=(2, 3)).astype(np.float32) for _ in range(2)]
    network = _two_head_network(kernels)
    images = rng.normal(size=(6, 4, 5, 2)).astype(np.float32)
    for head, kernel in zip(("sub1", "sub2"), kernels):
        logits = network(images)[head].numpy()
        predicted = logits.argmax(axis=1)
        expected = _numpy_cam(images, kernel, predicted, (4, 5))
        np.testing.assert_allclose(grad_cam(network, head, images), expected, atol=1e-5)
        chosen = np.array([0, 1, 2, 0, 1, 2])
        np.testing.assert_allclose(
            grad_cam(network, head, images, class_index=chosen),
            _numpy_cam(images, kernel, chosen, (4, 5)),
            atol=1e-5,
        )


@pytest.mark.parametrize("image_shape", [(16, 16, 3), (20, 12, 1)])
def test_grad_cam_of_every_ffl_head_matches_the_formula_at_the_input_resolution(image_shape):
    network = build_ffl_network("resnet8", 4, image_shape)
    images = np.random.default_rng(1).normal(size=(3, *image_shape)).astype(np.float32)
    assert cam_heads(network) == ["sub1", "sub2", "fused"]
    for head in ("sub1", "sub2", "fused"):  # "fused_features" is the fusion block's output.
        features = keras.Model(network.input, network.get_layer(f"{head}_features").output)
        feature_map = features(images, training=False).numpy()
        kernel = network.get_layer(f"{head}_logits").get_weights()[0]
        predicted = network(images, training=False)[head].numpy().argmax(axis=1)
        cam = grad_cam(network, head, images)
        assert cam.shape == (3, *image_shape[:2])
        assert cam.min() >= 0.0 and np.allclose(cam.max(axis=(1, 2)), 1.0)
        expected = _numpy_cam(feature_map, kernel, predicted, image_shape[:2])
        np.testing.assert_allclose(cam, expected, atol=1e-4)
    # A trained model wrapping the network explains the same heads.
    np.testing.assert_allclose(grad_cam(FFLModel(network), "fused", images), cam, atol=1e-6)


def test_grad_cam_of_a_standalone_subnetwork_matches_the_formula():
    network = build_subnetwork("resnet8", 5, (20, 12, 1))
    images = np.random.default_rng(2).normal(size=(2, 20, 12, 1)).astype(np.float32)
    feature_map = keras.Model(network.input, network.get_layer("features").output)(images).numpy()
    predicted = network(images).numpy().argmax(axis=1)
    expected = _numpy_cam(feature_map, network.get_layer("logits").get_weights()[0], predicted,
                          (20, 12))  # fmt: skip
    np.testing.assert_allclose(grad_cam(network, None, images), expected, atol=1e-4)
    with pytest.raises(ValueError, match="standalone sub-network.*head=None"):
        grad_cam(network, "sub1", images)


@pytest.mark.parametrize("method", methods.method_names())
def test_grad_cam_explains_every_head_with_a_feature_map_of_every_method(method):
    method_class = get_method(method)
    model = method_class.create("resnet8", 3, (12, 10, 1))
    images = np.random.default_rng(5).normal(size=(2, 12, 10, 1)).astype(np.float32)
    explained = cam_heads(model)
    assert set(model.sub_heads) <= set(explained)
    assert FUSED in explained or FUSED not in network_heads(model.network)
    for head in network_heads(model.network):
        if head in explained:
            cam = grad_cam(model, head, images)
            assert cam.shape == (2, 12, 10) and cam.min() >= 0.0 and cam.max() <= 1.0
        else:  # A combination of other heads' logits, e.g. "ensemble" or ONE's "gated".
            with pytest.raises(ValueError, match=f"'{head}'.*no feature map"):
                grad_cam(model, head, images)


def test_heads_with_a_1x1_feature_map_are_named_as_uniform():
    # Grad-CAM's L = ReLU(sum_k alpha_k A_k) has the feature map's resolution: at 1x1 it
    # is one value for the whole image (resnet8 divides the input by 4).
    heads = ["sub1", "sub2", "fused"]
    tiny = get_method("ffl").build_network("resnet8", 5, (4, 4, 3))
    assert uniform_heads(tiny, heads) == heads
    assert uniform_heads(get_method("ffl").build_network("resnet8", 5, (8, 8, 3)), heads) == []


def test_grad_cam_names_the_heads_it_can_explain():
    network = _two_head_network([np.eye(2, 3, dtype=np.float32)] * 2)
    images = np.ones((1, 4, 5, 2), np.float32)
    with pytest.raises(ArgumentError, match=r"head='fused' is not a head.*: sub1, sub2$"):
        grad_cam(network, "fused", images)
    with pytest.raises(ArgumentError, match=r"head='ensemble' has no feature map.*: sub1, sub2$"):
        grad_cam(network, "ensemble", images)
    with pytest.raises(ArgumentError, match=r"class_index=3 — .* in \[0, 2\]"):
        grad_cam(network, "sub1", images, class_index=3)


# Calibration ------------------------------------------------------------------


def numpy_ece(probabilities, labels, num_bins=15):
    """Guo et al.'s ECE, bin by bin: bins (lo, hi], |accuracy - confidence| weighted by size."""
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == labels
    edges = np.linspace(0, 1, num_bins + 1)
    ece = 0.0
    for lo, hi in itertools.pairwise(edges):
        inside = (confidence > lo) & (confidence <= hi)
        if inside.any():
            ece += inside.mean() * abs(correct[inside].mean() - confidence[inside].mean())
    return ece


def test_ece_by_hand():
    probabilities = np.array([[0.8, 0.2], [0.8, 0.2], [0.4, 0.6], [0.0, 1.0]])
    labels = np.array([0, 1, 1, 1])
    # All four confidences (0.8, 0.8, 0.6, 1.0) fall in (0.5, 1]: accuracy 3/4, confidence 0.8.
    assert expected_calibration_error(probabilities, labels, num_bins=2) == pytest.approx(0.05)
    diagram = reliability_diagram(probabilities, labels, num_bins=2)
    np.testing.assert_array_equal(diagram.counts, [0, 4])
    assert np.isnan(diagram.accuracy[0]) and diagram.accuracy[1] == pytest.approx(0.75)
    assert diagram.confidence[1] == pytest.approx(0.8)


def test_a_confidence_on_a_bin_edge_belongs_to_the_lower_bin():
    probabilities = np.array([[0.6, 0.4], [0.2, 0.8]])
    diagram = reliability_diagram(probabilities, np.array([0, 1]), num_bins=5)
    np.testing.assert_array_equal(diagram.counts, [0, 0, 1, 1, 0])


def test_ece_matches_a_bin_by_bin_computation():
    rng = np.random.default_rng(3)
    logits = rng.normal(scale=3.0, size=(500, 10))
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    labels = rng.integers(0, 10, 500)
    for bins in (1, 10, 15):
        assert expected_calibration_error(probabilities, labels, bins) == pytest.approx(
            numpy_ece(probabilities, labels, bins), abs=1e-12
        )


# Diversity --------------------------------------------------------------------


def test_disagreement_and_kl_by_hand():
    p = np.array([[0.5, 0.5], [1.0, 0.0], [0.2, 0.8]])
    q = np.array([[0.9, 0.1], [0.5, 0.5], [0.3, 0.7]])
    # Predicted classes 0, 0, 1 (ties go to the first class) against 0, 0, 1.
    assert disagreement_rate(p, q) == 0.0
    assert disagreement_rate(p, q[::-1]) == pytest.approx(2 / 3)
    kl = [
        0.5 * math.log(0.5 / 0.9) + 0.5 * math.log(0.5 / 0.1),
        math.log(1.0 / 0.5),  # 0 log 0 = 0.
        0.2 * math.log(0.2 / 0.3) + 0.8 * math.log(0.8 / 0.7),
    ]
    assert mean_kl(p, q) == pytest.approx(np.mean(kl))
    assert mean_kl(p, p) == 0.0


def test_pairwise_diversity_covers_every_pair_in_both_directions():
    rng = np.random.default_rng(4)
    probabilities = {h: rng.dirichlet(np.ones(4), 50) for h in ("sub1", "sub2", "sub3", "fused")}
    pairs = pairwise_diversity(probabilities, ["sub1", "sub2", "sub3"])
    assert [(pair.a, pair.b) for pair in pairs] == [("sub1", "sub2"), ("sub1", "sub3"),
                                                    ("sub2", "sub3")]  # fmt: skip
    pair = pairs[1]
    assert pair.kl_ab == mean_kl(probabilities["sub1"], probabilities["sub3"])
    assert pair.kl_ba == mean_kl(probabilities["sub3"], probabilities["sub1"])
    assert pair.disagreement == disagreement_rate(probabilities["sub1"], probabilities["sub3"])


# Class names -----------------------------------------------------------------


def test_class_names_of_each_kind_of_dataset(tmp_path):
    fashion = data.class_names(data.get_spec("fashion_mnist"))
    assert len(fashion) == 10 and fashion[0] == "T-shirt/top" and fashion[9] == "Ankle boot"
    folder = write_folder(str(tmp_path / "folder"), per_class=3, classes=("cat", "bird", "ant"))
    assert data.class_names(data.get_spec(f"folder:{folder}")) == ["ant", "bird", "cat"]
    idx = write_idx(str(tmp_path / "idx"), n_train=6, n_test=3, classes=3)
    assert data.class_names(data.get_spec(f"idx:{idx}")) == ["0", "1", "2"]


def test_cifar_class_names_come_from_the_prepared_tfds_info(tmp_path):
    spec = data.get_spec("cifar10")
    assert data.class_names(spec, str(tmp_path)) == [str(c) for c in range(10)]  # Not prepared.
    builder = tfds.builder("cifar10", data_dir=str(tmp_path))
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
             "truck"]  # fmt: skip
    builder.info.features["label"].names = names
    os.makedirs(builder.data_dir)
    builder.info.write_to_directory(builder.data_dir)
    assert data.class_names(spec, str(tmp_path)) == names


def test_figures_say_how_to_install_matplotlib(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` now fails.
    with pytest.raises(ImportError, match=r"need matplotlib.*pip install 'keras_ffl\[plot\]'"):
        figures.pyplot()
