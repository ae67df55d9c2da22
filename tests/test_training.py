"""FFLModel: the training step's loss and wiring, metrics, learning, saving, ablations."""

import keras
import numpy as np
import pytest

from keras_ffl import (
    FFLModel,
    build_ffl_network,
    ffl_loss_terms,
    ffl_sgd,
    sigmoid_rampup,
)


def learnable_data(n=512, size=12, classes=4, seed=0):
    """Images whose class is the bright quadrant, under noise: easy but not trivial."""
    rng = np.random.RandomState(seed)
    y = rng.randint(0, classes, n).astype("int32")
    x = rng.randn(n, size, size, 3).astype("float32")
    half = size // 2
    for i, c in enumerate(y):
        r, s = divmod(int(c), 2)
        x[i, r * half : (r + 1) * half, s * half : (s + 1) * half, :] += 1.5
    return x, y


def make_model(arch="resnet8", input_shape=(12, 12, 3), classes=4, **kwargs):
    network = build_ffl_network(arch, classes, input_shape, **kwargs.pop("network", {}))
    model = FFLModel(network, rampup_epochs=2, **kwargs)
    model.compile(optimizer=ffl_sgd(0.05))
    return model


def test_train_step_minimises_the_ffl_objective():
    x, y = learnable_data(16)
    model = make_model()
    model.distill_weight.assign(0.5)
    before = model.network(x, training=True)  # BN in training mode, as in train_step
    expected = ffl_loss_terms(
        y, [before["sub1"], before["sub2"]], before["fused"], 3.0, 0.5
    )["total"]
    # Same weights, same BN mode: the logged loss of one step is that objective.
    logs = model.train_on_batch(x, y, return_dict=True)
    np.testing.assert_allclose(logs["loss"], float(np.mean(expected)), rtol=1e-4)


def test_evaluation_metrics_match_numpy():
    x, y = learnable_data(40)
    model = make_model()
    logs = model.evaluate(x, y, batch_size=16, return_dict=True, verbose=0)
    logits = {k: v.numpy() for k, v in model.network(x, training=False).items()}
    acc = {k: np.mean(np.argmax(v, -1) == y) for k, v in logits.items()}
    for head in ("sub1", "sub2", "fused"):
        assert logs[f"{head}_acc"] == pytest.approx(acc[head])
    ensemble = (logits["sub1"] + logits["sub2"]) / 2
    assert logs["ensemble_acc"] == pytest.approx(np.mean(np.argmax(ensemble, -1) == y))
    assert logs["sub_mean_acc"] == pytest.approx((acc["sub1"] + acc["sub2"]) / 2)


def test_top5_is_optional():
    x, y = learnable_data(8, classes=4)
    logs = make_model(classes=5, top5=True).evaluate(x, y, return_dict=True, verbose=0)
    assert logs["fused_top5"] == 1.0 and "sub1_top5" in logs


def test_fit_ramps_the_distillation_weight_per_epoch():
    x, y = learnable_data(32)
    model = make_model()
    history = model.fit(x, y, batch_size=16, epochs=3, verbose=0)
    assert history.history["distill_weight"] == pytest.approx(
        [sigmoid_rampup(e, 2) for e in range(3)]
    )


@pytest.mark.parametrize(
    "kwargs,zero",
    [({"ekd": False}, "ekd"), ({"fkd": False}, "fkd"), ({"network": {"fusion_mode": "average"}}, None)],
)
def test_ablations_train(kwargs, zero):
    x, y = learnable_data(32)
    model = make_model(**kwargs)
    logs = model.fit(x, y, batch_size=16, epochs=1, verbose=0).history
    assert np.isfinite(logs["loss"][0])
    if zero:
        assert logs[zero][0] == 0.0


@pytest.mark.slow
def test_case2_resnet32_wrn16_2_builds_and_trains():
    x, y = learnable_data(8, size=32, classes=100)
    model = make_model(["resnet32", "wrn16_2"], (32, 32, 3), classes=100)
    logs = model.fit(x, y, batch_size=4, epochs=1, verbose=0).history
    assert np.isfinite(logs["loss"][0])


def test_three_branches_train():
    x, y = learnable_data(16)
    model = make_model(network={"num_branches": 3})
    logs = model.fit(x, y, batch_size=8, epochs=1, verbose=0).history
    assert {"sub3_acc", "sub3_loss"} <= set(logs)


@pytest.mark.slow
def test_few_hundred_steps_lift_every_head_well_above_chance():
    x, y = learnable_data(1024)
    x_test, y_test = learnable_data(256, seed=1)
    model = make_model()
    model.fit(x, y, batch_size=32, epochs=8, verbose=0)  # 256 steps
    logs = model.evaluate(x_test, y_test, return_dict=True, verbose=0)
    for head in ("sub1", "sub2", "fused", "ensemble"):
        assert logs[f"{head}_acc"] > 0.8, logs  # chance is 0.25


def test_saved_model_resumes_with_optimizer_state(tmp_path):
    x, y = learnable_data(32)
    model = make_model()
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    path = tmp_path / "ffl.keras"
    model.save(path)
    restored = keras.saving.load_model(path)
    assert restored.temperature == 3.0 and restored.rampup_epochs == 2
    assert int(restored.optimizer.iterations) == 2
    for a, b in zip(model.optimizer.variables, restored.optimizer.variables):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    np.testing.assert_allclose(
        restored.predict(x, verbose=0)["fused"], model.predict(x, verbose=0)["fused"], atol=1e-6
    )


def test_rejects_a_network_without_ffl_heads():
    inputs = keras.Input((4,))
    plain = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    with pytest.raises(ValueError, match="keras_ffl network"):
        FFLModel(plain)
