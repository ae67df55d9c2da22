"""ONE (Lan et al. 2018; the FFL paper's Tables III-IV): branches on a shared trunk and a
gated-logits teacher, checked against Lan1991Xu/ONE_NeurIPS2018 (models/cifar/resnet.py,
cifar_one.py, loss/kl_loss.py)."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from method_harness import IMAGE_SHAPE, NUM_CLASSES, MethodTests, learnable_data

from keras_ffl import get_method
from keras_ffl.methods.one import GATE, build_one_network, one_loss_terms


def _log_softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def _softened_kl(teacher, student, t):
    """kl_loss.py: KL(softmax(teacher/T) + 1e-7 || softmax(student/T)), per example."""
    p = np.exp(_log_softmax(teacher / t)) + 1e-7
    return (p * (np.log(p) - _log_softmax(student / t))).sum(axis=-1)


def _ce(z, labels):
    return -_log_softmax(z)[np.arange(len(labels)), labels]


def _gate_variables(model):
    return [v for v in model.trainable_variables if v.path.startswith(f"{GATE}_")]


class TestONE(MethodTests):
    method = "one"

    def test_loss_terms_match_numpy(self):
        rng = np.random.default_rng(0)
        subs = [rng.normal(0, 2, (4, 5)).astype("float32") for _ in range(3)]
        scores = rng.normal(0, 1, (4, 3))
        gate = np.exp(scores) / np.exp(scores).sum(axis=1, keepdims=True)
        gated = sum(gate[:, [i]] * z for i, z in enumerate(subs)).astype("float32")
        labels = np.array([0, 3, 4, 1])
        t, w = 3.0, 0.37

        terms = one_loss_terms(labels, subs, gated, temperature=t, distill_weight=w)

        ces = [_ce(z, labels) for z in subs]
        kd = sum(_softened_kl(gated, z, t) for z in subs)
        ce = sum(ces) + _ce(gated, labels)
        for k, expected in enumerate(ces, start=1):
            np.testing.assert_allclose(terms[f"ce_sub{k}"], expected, rtol=1e-5)
        np.testing.assert_allclose(terms["ce_gated"], _ce(gated, labels), rtol=1e-5)
        np.testing.assert_allclose(terms["kd"], kd, rtol=1e-5)
        # cifar_one.py: CEs + consistency_weight * sum_i KLLoss, KLLoss carrying the T^2.
        np.testing.assert_allclose(terms["total"], ce + w * t**2 * kd, rtol=1e-5)

    def test_no_gradient_into_the_teacher_through_the_kl(self):
        rng = np.random.default_rng(1)
        subs = [tf.Variable(rng.normal(size=(3, 4)).astype("float32")) for _ in range(2)]
        gated = tf.Variable(rng.normal(size=(3, 4)).astype("float32"))
        with tf.GradientTape() as tape:
            kd = tf.reduce_sum(one_loss_terms(np.array([0, 1, 2]), subs, gated)["kd"])
        grad_gated, *grad_subs = tape.gradient(kd, [gated, *subs])
        assert grad_gated is None
        assert all(float(tf.reduce_max(tf.abs(g))) > 1e-4 for g in grad_subs)

    def _gradients(self, model, term_names):
        x, y = learnable_data(8, size=IMAGE_SHAPE[0])
        with tf.GradientTape(persistent=True) as tape:
            logits = model.network(x, training=True)
            terms = model.loss_terms(y, logits)
            losses = {name: tf.reduce_mean(terms[name]) for name in term_names}
        return {name: tape.gradient(loss, model.trainable_variables)
                for name, loss in losses.items()}

    def test_gate_receives_gradient_only_from_the_teachers_cross_entropy(self):
        model = self.make_model(branches=3, rampup_epochs=0)  # w = 1: the KL terms count fully
        names = [f"ce_sub{k}" for k in (1, 2, 3)] + ["kd", "ce_gated", "total"]
        grads = self._gradients(model, names)
        variables = model.trainable_variables
        gate_index = [i for i, v in enumerate(variables) if v.path.startswith(f"{GATE}_")]
        assert sorted(variables[i].path for i in gate_index) == [
            "gate_bn/beta", "gate_bn/gamma", "gate_dense/bias", "gate_dense/kernel"
        ]
        for name in names[:4]:  # the branches' CEs and the KL terms with a constant teacher
            assert all(grads[name][i] is None for i in gate_index), name
        by_path = {variables[i].path: grads["ce_gated"][i] for i in gate_index}
        for path in ("gate_dense/kernel", "gate_bn/gamma", "gate_bn/beta"):
            assert float(tf.reduce_max(tf.abs(by_path[path]))) > 1e-6, path
        for i in gate_index:
            np.testing.assert_allclose(grads["total"][i], grads["ce_gated"][i], rtol=1e-5,
                                       atol=1e-8)

    def test_teachers_cross_entropy_trains_every_branch_as_the_reference_does(self):
        # models/cifar/resnet.py builds x_m from the branches' logits without detaching.
        model = self.make_model(branches=3)
        grads = self._gradients(model, ["ce_gated"])["ce_gated"]
        for k in (1, 2, 3):
            kernel = next(
                g for v, g in zip(model.trainable_variables, grads)
                if v.path == f"sub{k}_logits/kernel"
            )
            assert float(tf.reduce_max(tf.abs(kernel))) > 1e-6, k

    def test_gated_head_is_the_gate_weighted_sum_of_the_branches_logits(self):
        model = self.make_model(branches=3)
        network = model.network
        probe = keras.Model(network.input, [network.get_layer(GATE).output, network.output])
        x, _ = learnable_data(6, size=IMAGE_SHAPE[0])
        gate, logits = probe.predict(x, verbose=0)
        assert gate.shape == (6, 3)
        np.testing.assert_allclose(gate.sum(axis=1), 1.0, rtol=1e-6)
        expected = sum(gate[:, [i]] * logits[f"sub{i + 1}"] for i in range(3))
        np.testing.assert_allclose(logits["gated"], expected, rtol=1e-5, atol=1e-6)

    def test_several_architectures_are_refused_with_the_reason(self):
        with pytest.raises(ValueError, match="shared trunk.*use the ffl or dml method"):
            get_method("one").create(["resnet8", "resnet14"], NUM_CLASSES, IMAGE_SHAPE)
        with pytest.raises(ValueError, match="at least 2 branches"):
            get_method("one").create("resnet8", NUM_CLASSES, IMAGE_SHAPE, branches=1)

    @pytest.mark.slow
    def test_resnet32_with_three_branches_has_the_reference_parameter_count(self):
        # The official ONE ResNet-32, 3 branches, CIFAR-100 (models/cifar/resnet.py,
        # BasicBlocks below depth 44): 1,193,189 trainable parameters, of which the gate,
        # nn.Linear(32, 3) and nn.BatchNorm1d(3), has 32 * 3 + 3 + 2 * 3 = 105.
        network = build_one_network("resnet32", 100, (32, 32, 3), num_branches=3)

        def count(variables):
            return sum(int(np.prod(v.shape)) for v in variables)

        assert count(network.trainable_variables) == 1_193_189
        gate = [v for v in network.trainable_variables if v.path.startswith(f"{GATE}_")]
        assert count(gate) == 105
