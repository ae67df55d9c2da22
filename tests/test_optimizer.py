"""CoupledSGD reproduces PyTorch's SGD(momentum, nesterov, weight_decay) update."""

import keras
import numpy as np
import pytest

from keras_ffl import CoupledSGD, build_ffl_network, ffl_sgd


def torch_sgd(w, grads, lrs, momentum, nesterov, wd):
    """PyTorch's SGD step (dampening 0), written out in NumPy."""
    buf = None
    for g, lr in zip(grads, lrs):
        g = g + wd * w
        buf = g.copy() if buf is None else momentum * buf + g
        step = g + momentum * buf if nesterov else buf
        w = w - lr * step
    return w


@pytest.mark.parametrize("nesterov", [True, False])
def test_matches_pytorch_update_across_a_learning_rate_drop(nesterov):
    rng = np.random.RandomState(0)
    w0 = rng.randn(3, 4).astype("float32")
    grads = [rng.randn(3, 4).astype("float32") for _ in range(4)]
    lrs = [0.1, 0.1, 0.01, 0.01]
    var = keras.Variable(w0, name="kernel")
    schedule = keras.optimizers.schedules.PiecewiseConstantDecay([1], [0.1, 0.01])
    opt = CoupledSGD(learning_rate=schedule, momentum=0.9, nesterov=nesterov, l2=5e-4)
    for g in grads:
        opt.apply([keras.ops.convert_to_tensor(g)], [var])
    expected = torch_sgd(w0, grads, lrs, 0.9, nesterov, 5e-4)
    np.testing.assert_allclose(var.numpy(), expected, rtol=1e-5, atol=1e-6)


def test_keras_sgd_differs_after_a_learning_rate_drop():
    """Why CoupledSGD exists: Keras's momentum keeps the old rate's steps."""
    rng = np.random.RandomState(0)
    w0 = rng.randn(5).astype("float32")
    grads = [rng.randn(5).astype("float32") for _ in range(3)]
    schedule = keras.optimizers.schedules.PiecewiseConstantDecay([1], [0.1, 0.01])
    var = keras.Variable(w0)
    opt = keras.optimizers.SGD(learning_rate=schedule, momentum=0.9, nesterov=True)
    for g in grads:
        opt.apply([keras.ops.convert_to_tensor(g)], [var])
    expected = torch_sgd(w0, grads, [0.1, 0.1, 0.01], 0.9, True, 0.0)
    assert np.abs(var.numpy() - expected).max() > 1e-3


def test_ffl_sgd_decays_fusion_less():
    network = build_ffl_network("resnet8", 10, (16, 16, 3))
    opt = ffl_sgd(weight_decay=1e-4, fusion_weight_decay=1e-5)
    rates = {v.path: opt.l2_for(v) for v in network.trainable_variables}
    fusion = {p for p in rates if p.startswith(("fusion/", "fused_logits/"))}
    assert fusion == {
        "fusion/depthwise/kernel",
        "fusion/depthwise_bn/gamma",
        "fusion/depthwise_bn/beta",
        "fusion/pointwise/kernel",
        "fusion/pointwise_bn/gamma",
        "fusion/pointwise_bn/beta",
        "fused_logits/kernel",
        "fused_logits/bias",
    }
    assert all(rates[p] == 1e-5 for p in fusion)
    others = set(rates) - fusion
    assert others and all(rates[p] == 1e-4 for p in others)
    # BatchNorm and biases are decayed too, as in the official code.
    assert rates["sub1_logits/bias"] == 1e-4


def test_config_round_trip():
    opt = ffl_sgd(learning_rate=0.05)
    clone = CoupledSGD.from_config(opt.get_config())
    assert (clone.momentum, clone.nesterov, clone.l2, clone.l2_overrides) == (
        0.9,
        True,
        1e-4,
        opt.l2_overrides,
    )


def test_rejects_negative_decay():
    with pytest.raises(ValueError, match="Weight decays"):
        CoupledSGD(l2=-1.0)
