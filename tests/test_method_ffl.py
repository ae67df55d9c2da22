"""FFL (the paper's method): fusion module, fused classifier and the online mutual
distillation EKD + FKD (paper eqs. 1-6; Jangho-Kim/FFL-pytorch, train_FFL.py), through the
public API (`FFLModel`, `build_ffl_network`, `ffl_sgd`) as well as the method registry."""

import keras
import numpy as np
import pytest
from method_harness import IMAGE_SHAPE, NUM_CLASSES, MethodTests, learnable_data

from keras_ffl import FFLModel, build_ffl_network, ffl_loss_terms, ffl_sgd, sigmoid_rampup


def make_model(arch="resnet8", input_shape=IMAGE_SHAPE, classes=NUM_CLASSES, **kwargs):
    network = build_ffl_network(arch, classes, input_shape, **kwargs.pop("network", {}))
    model = FFLModel(network, rampup_epochs=2, **kwargs)
    model.compile(optimizer=ffl_sgd(0.05))
    return model


class TestFFL(MethodTests):
    method = "ffl"
    # The ImageNet recipe's fusion module keeps sum(C_k) channels (paper §IV-B).
    mirrored_variants = ({}, {"fusion_channels": "sum"})

    def test_train_step_minimises_the_ffl_objective(self):
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

    def test_evaluation_metrics_match_numpy(self):
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

    def test_top5_is_optional(self):
        x, y = learnable_data(8)
        logs = make_model(classes=5, top5=True).evaluate(x, y, return_dict=True, verbose=0)
        assert logs["fused_top5"] == 1.0 and "sub1_top5" in logs

    def test_fit_ramps_the_distillation_weight_per_epoch(self):
        x, y = learnable_data(32)
        model = make_model()
        history = model.fit(x, y, batch_size=16, epochs=3, verbose=0)
        assert history.history["distill_weight"] == pytest.approx(
            [sigmoid_rampup(e, 2) for e in range(3)]
        )

    def test_the_ramp_up_defaults_to_the_papers_80_epochs_either_way(self):
        # Table VII's weight ramp-up epoch, whichever documented entry point builds it.
        network = build_ffl_network("resnet8", NUM_CLASSES, IMAGE_SHAPE)
        created = self.method_class.create("resnet8", NUM_CLASSES, IMAGE_SHAPE)
        assert FFLModel(network).rampup_epochs == created.rampup_epochs == 80

    @pytest.mark.parametrize(
        "kwargs,zero",
        [({"ekd": False}, "ekd"), ({"fkd": False}, "fkd"),
         ({"network": {"fusion_mode": "average"}}, None)],
    )
    def test_ablations_train(self, kwargs, zero):
        # The paper's Table II: without EKD, without FKD, averaged feature maps.
        x, y = learnable_data(32)
        model = make_model(**kwargs)
        logs = model.fit(x, y, batch_size=16, epochs=1, verbose=0).history
        assert np.isfinite(logs["loss"][0])
        if zero:
            assert logs[zero][0] == 0.0

    @pytest.mark.slow
    def test_case2_resnet32_wrn16_2_builds_and_trains(self):
        x, y = learnable_data(8, size=32, classes=100)
        model = make_model(["resnet32", "wrn16_2"], (32, 32, 3), classes=100)
        logs = model.fit(x, y, batch_size=4, epochs=1, verbose=0).history
        assert np.isfinite(logs["loss"][0])

    def test_three_branches_train(self):
        x, y = learnable_data(16)
        model = make_model(network={"num_branches": 3})
        logs = model.fit(x, y, batch_size=8, epochs=1, verbose=0).history
        assert {"sub3_acc", "sub3_loss"} <= set(logs)

    def test_temperature_is_checked(self):
        with pytest.raises(ValueError, match=r"temperature=0.0 is not a finite number > 0"):
            self.make_model(temperature=0.0)

    def test_rejects_a_network_without_ffl_heads(self):
        inputs = keras.Input((4,))
        plain = keras.Model(inputs, keras.layers.Dense(2)(inputs))
        with pytest.raises(ValueError, match="keras_ffl network"):
            FFLModel(plain)
