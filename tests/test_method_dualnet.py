"""DualNet (Hou et al. 2017) as the FFL paper's Table I compares with it: averaged feature
maps, fused and auxiliary classifiers, an iterative stage with one extractor frozen at a
time, then joint training; the reported head Z_avg = 0.3 z_1 + 0.3 z_2 + z_f (App. A, eq. 7).
"""


import keras
import numpy as np
import pytest
from method_harness import IMAGE_SHAPE, NUM_CLASSES, MethodTests, learnable_data

from keras_ffl import build_subnetwork, get_method, training
from keras_ffl.methods.dualnet import JOINT, dualnet_loss_terms
from keras_ffl.validation import ArgumentError


def _values(variables):
    return {v.path: np.array(v.numpy(), copy=True) for v in variables}


def _changed(before, after):
    return {path for path in before if not np.array_equal(before[path], after[path])}


class TestDualNet(MethodTests):
    method = "dualnet"
    # Four iterative epochs (each extractor trained twice), then joint training.
    options = {"iterative_epochs": 4}
    mirrored_variants = ({}, {"iterative_epochs": 0})  # the iterative stage, then joint

    def test_loss_is_fused_ce_plus_weighted_auxiliary_ces(self):
        labels = np.array([1, 3])
        z1 = np.array([[2.0, 0.0, -1.0, 0.5], [0.1, 0.2, 0.3, 0.4]], "float32")
        z2 = np.array([[0.0, 1.0, 0.0, 0.0], [1.0, -1.0, 2.0, 0.0]], "float32")
        zf = np.array([[0.5, 0.5, -2.0, 1.0], [3.0, 0.0, 0.0, -3.0]], "float32")

        def ce(z):
            return np.log(np.exp(z).sum(-1)) - z[np.arange(len(labels)), labels]

        for aux_weight in (0.3, 0.7):
            terms = dualnet_loss_terms(labels, [z1, z2], zf, aux_weight)
            np.testing.assert_allclose(terms["ce_fused"], ce(zf), rtol=1e-6)
            np.testing.assert_allclose(terms["ce_sub2"], ce(z2), rtol=1e-6)
            np.testing.assert_allclose(
                terms["total"], ce(zf) + aux_weight * (ce(z1) + ce(z2)), rtol=1e-6
            )

    @pytest.mark.parametrize("aux_weight", [0.3, 0.5])
    def test_avg_head_is_weighted_sum_of_the_classifiers(self, aux_weight):
        model = self.make_model(aux_weight=aux_weight)
        assert model.aux_weight == aux_weight  # the loss uses the head's lambda
        x, _ = learnable_data(4)
        logits = model.predict(x, verbose=0)
        np.testing.assert_allclose(
            logits["avg"],
            aux_weight * logits["sub1"] + aux_weight * logits["sub2"] + logits["fused"],
            atol=1e-5,
        )

    def test_fused_features_are_the_mean_of_two_independent_extractors(self):
        network = self.make_model().network
        maps = keras.Model(network.input, [network.get_layer(f"{h}_features").output
                                           for h in ("sub1", "sub2", "fused")])
        sub1, sub2, fused = maps.predict(learnable_data(4)[0], verbose=0)
        np.testing.assert_allclose(fused, (sub1 + sub2) / 2, atol=1e-6)
        # Two full copies plus a fused classifier: nothing shared, no fusion weights.
        plain = build_subnetwork(self.arch, NUM_CLASSES, IMAGE_SHAPE).count_params()
        fused_classifier = network.get_layer("fused_logits").count_params()
        assert network.count_params() == 2 * plain + fused_classifier
        assert {v.path.split("_")[0] for v in network.weights} == {"sub1", "sub2", "fused"}

    def test_stage_alternates_per_epoch_then_joint(self):
        model = self.make_model(iterative_epochs=5)
        assert [int(model.stage(e)) for e in range(7)] == [0, 1, 0, 1, 0, JOINT, JOINT]
        model = self.make_model(iterative_epochs=4, alternate_epochs=2)
        assert [int(model.stage(e)) for e in range(5)] == [0, 0, 1, 1, JOINT]
        assert int(self.make_model(iterative_epochs=0).stage(0)) == JOINT

    def test_each_stage_updates_only_its_variables(self):
        model = self.make_model(iterative_epochs=2)
        model.optimizer.build(model.trainable_variables)
        x, y = learnable_data(32)
        for epoch, trained, frozen in ((0, "sub1_", "sub2_"), (1, "sub2_", "sub1_")):
            trainable = _values(model.trainable_variables)
            moving = _values(model.non_trainable_variables)
            slots = _values(model.optimizer.variables)
            # Run as epoch `epoch` of a longer run, as on resume: the stage comes from
            # fit's epoch index.
            model.fit(x, y, batch_size=16, epochs=epoch + 1, initial_epoch=epoch, verbose=0)
            assert int(model.optimizer.iterations) == 2 * (epoch + 1)  # one step per batch
            # The reference's frozen extractor has lr_mult 0 and decay_mult 0 and its
            # auxiliary classifier is not in the training net; the trained extractor,
            # its auxiliary classifier and the fused classifier are updated.
            changed = _changed(trainable, _values(model.trainable_variables))
            assert changed == {p for p in trainable if p.startswith((trained, "fused_logits/"))}
            momentum_changed = _changed(slots, _values(model.optimizer.variables))
            assert not any(frozen in p for p in momentum_changed), momentum_changed
            # The frozen extractor runs in training mode, as the reference's does (its
            # dropout stays active): its BatchNorm averages keep tracking the batches.
            moved = _changed(moving, _values(model.non_trainable_variables))
            assert any(p.startswith(frozen) and "moving_mean" in p for p in moved)
        trainable = _values(model.trainable_variables)
        model.fit(x, y, batch_size=16, epochs=3, initial_epoch=2, verbose=0)  # joint
        assert _changed(trainable, _values(model.trainable_variables)) == set(trainable)

    def test_anything_but_two_subnetworks_is_refused(self):
        create = get_method("dualnet").create
        with pytest.raises(ValueError, match="exactly 2 sub-networks; got branches=3"):
            create("resnet8", NUM_CLASSES, IMAGE_SHAPE, branches=3)
        with pytest.raises(ValueError, match="exactly 2 sub-networks; architectures"):
            create(["resnet8"] * 3, NUM_CLASSES, IMAGE_SHAPE)
        with pytest.raises(ValueError, match="share nothing; leave shared_stages"):
            create("resnet8", NUM_CLASSES, IMAGE_SHAPE, shared_stages=1)

    def test_two_architectures_need_feature_maps_of_one_shape(self):
        create = get_method("dualnet").create
        model = create(["resnet8", "resnet14"], NUM_CLASSES, IMAGE_SHAPE)
        assert model.heads == ["sub1", "sub2", "fused", "avg"]
        with pytest.raises(ValueError, match=r"need one shape.*\(3, 3, 64\).*\(3, 3, 128\)"):
            create(["resnet8", "wrn16_2"], NUM_CLASSES, IMAGE_SHAPE)

    def test_cifar100_resnet32_parameters(self):
        # The paper gives no count for DualNet (Table I); it is the 2-net of Table VI
        # plus the fused classifier on the averaged 64-channel map (64 x 100 + 100).
        network = get_method("dualnet").build_network("resnet32", 100, (32, 32, 3))
        two_net = get_method("ensemble").build_network("resnet32", 100, (32, 32, 3))
        assert network.count_params() == two_net.count_params() + 64 * 100 + 100 == 956_940


def _schedule(**overrides):
    config = training.resolve_config(
        "fashion_mnist", method="dualnet", steps_per_epoch=1, **overrides
    )
    return config.epochs, config.lr_milestones, config.method_options["iterative_epochs"]


def test_the_schedule_drops_the_learning_rate_once_when_joint_training_starts():
    # Table VII: 307 epochs, lr 0.1 -> 0.01 at 256, where the iterative stage ends (App. A).
    assert _schedule(recipe="cifar") == (307, (256,), 256)
    assert _schedule(recipe="cifar", iterative_epochs=100) == (120, (100,), 100)
    assert _schedule() == (6, (5,), 5)  # the small recipe: Table VII scaled to 6 epochs
    # What the user gives is kept.
    assert _schedule(recipe="cifar", epochs=10) == (10, (256,), 256)
    assert _schedule(epochs=8, lr_milestones=(4, 6), iterative_epochs=4) == (8, (4, 6), 4)
    assert _schedule(iterative_epochs=0) == (6, (3, 5), 0)  # joint training only


def test_a_learning_rate_drop_inside_the_iterative_stage_is_refused():
    with pytest.raises(ArgumentError, match="inside DualNet's iterative stage") as error:
        _schedule(recipe="cifar", lr_milestones=(150, 225))
    assert error.value.with_flag().startswith("--lr_milestones=150,225 drops")
    assert "--iterative_epochs=256" in error.value.with_flag()


def test_a_run_started_under_another_adapted_schedule_resumes_with_its_own(tmp_path):
    config = training.resolve_config(
        "fashion_mnist", method="dualnet", recipe="cifar", steps_per_epoch=1
    )
    saved = {**config.to_json(), "epochs": 300, "lr_milestones": [150, 225]}
    resumed = training.check_same_run(saved, config, str(tmp_path))
    assert (resumed.epochs, resumed.lr_milestones) == (300, (150, 225))
    # A schedule the user gives is theirs: a different one in the directory is refused.
    given = training.resolve_config(
        "fashion_mnist", method="dualnet", recipe="cifar", steps_per_epoch=1,
        lr_milestones=(256,),
    )
    with pytest.raises(training.RunError, match="lr_milestones: \\[150, 225\\] in the directory"):
        training.check_same_run(saved, given, str(tmp_path))
