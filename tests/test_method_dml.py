"""DML (Zhang et al., CVPR 2018; reference YingZhangDUT/Deep-Mutual-Learning, train_models.py):
peers trained with CE + KL toward each other, updated in turn or jointly."""


import keras
import numpy as np
import pytest
import tensorflow as tf
from method_harness import IMAGE_SHAPE, NUM_CLASSES, MethodTests, learnable_data

from keras_ffl import build_subnetwork
from keras_ffl.methods.dml import dml_loss_terms
from keras_ffl.network import build_subnetworks

LOGITS = np.array(
    [
        [[2.0, 0.0, -1.0, 0.5], [0.3, 0.1, 0.0, -2.0]],
        [[0.0, 1.0, 0.0, 0.0], [1.5, -0.5, 0.2, 0.0]],
        [[-1.0, 0.5, 2.5, 0.0], [0.0, 0.0, 0.0, 3.0]],
    ],
    "float32",
)  # [peer, example, class]
LABELS = np.array([1, 3])


def np_ce(z, labels):
    z = z.astype("float64")
    return np.log(np.exp(z).sum(-1)) - z[np.arange(len(labels)), labels]


def np_kl(teacher, student, t):
    """KL(softmax(teacher/T) + 1e-7 || softmax(student/T)), the library's teacher epsilon."""
    def softmax(z):
        e = np.exp(z.astype("float64") / t - (z / t).max(-1, keepdims=True))
        return e / e.sum(-1, keepdims=True)

    p, q = softmax(teacher) + 1e-7, softmax(student)
    return (p * (np.log(p) - np.log(q))).sum(-1)


def peer_values(model, head):
    """Every variable of peer `head` (trainable and BatchNorm statistics), as arrays."""
    return [np.array(v) for v in model.network.variables if v.path.startswith(f"{head}_")]


def changed(before, after):
    return any(not np.array_equal(a, b) for a, b in zip(before, after))


class TestDML(MethodTests):
    method = "dml"
    mirrored_variants = ({}, {"update": "joint"})

    @pytest.mark.parametrize("temperature", [1.0, 2.0])
    def test_two_peers_each_get_ce_plus_one_kl_toward_the_other(self, temperature):
        z1, z2 = LOGITS[0], LOGITS[1]
        terms = dml_loss_terms(LABELS, [z1, z2], temperature)
        t2 = temperature**2
        loss1 = np_ce(z1, LABELS) + t2 * np_kl(z2, z1, temperature)
        loss2 = np_ce(z2, LABELS) + t2 * np_kl(z1, z2, temperature)
        np.testing.assert_allclose(terms["ce_sub1"], np_ce(z1, LABELS), rtol=1e-5)
        np.testing.assert_allclose(terms["kl_sub2"], np_kl(z1, z2, temperature), rtol=1e-4)
        np.testing.assert_allclose(terms["loss_sub1"], loss1, rtol=1e-5)
        np.testing.assert_allclose(terms["loss_sub2"], loss2, rtol=1e-5)
        np.testing.assert_allclose(terms["total"], loss1 + loss2, rtol=1e-5)

    def test_three_peers_sum_the_kl_toward_every_other_peer(self):
        # train_models.py, _tower_loss: net_loss[i] += kl for every j != i (a sum).
        terms = dml_loss_terms(LABELS, list(LOGITS))
        total = 0
        for k in range(3):
            kl = sum(np_kl(LOGITS[j], LOGITS[k], 1.0) for j in range(3) if j != k)
            np.testing.assert_allclose(terms[f"kl_sub{k + 1}"], kl, rtol=1e-4)
            loss = np_ce(LOGITS[k], LABELS) + kl
            np.testing.assert_allclose(terms[f"loss_sub{k + 1}"], loss, rtol=1e-5)
            total = total + loss
        np.testing.assert_allclose(terms["total"], total, rtol=1e-5)
        np.testing.assert_allclose(
            terms["kl"], sum(terms[f"kl_sub{k}"] for k in (1, 2, 3)), rtol=1e-6
        )

    def test_no_gradient_reaches_a_teacher(self):
        z = [tf.constant(v) for v in LOGITS]
        with tf.GradientTape(persistent=True) as tape:
            tape.watch(z)
            terms = dml_loss_terms(LABELS, z)
        for k in range(3):
            grads = tape.gradient(terms[f"loss_sub{k + 1}"], z)
            for j, grad in enumerate(grads):
                if j != k:
                    assert grad is None or not np.any(grad), (k, j)
            assert np.any(grads[k])

    def test_peers_share_nothing_and_any_architectures_mix(self):
        model = self.make_model()
        plain = build_subnetwork(self.arch, NUM_CLASSES, IMAGE_SHAPE).count_params()
        assert model.network.count_params() == 2 * plain
        mixed = self.method_class.create(["resnet8", "wrn10_1"], NUM_CLASSES, IMAGE_SHAPE)
        assert mixed.sub_heads == ["sub1", "sub2"]
        assert mixed.heads == ["sub1", "sub2", "ensemble"]

    def test_a_network_with_a_shared_trunk_is_refused(self):
        subs = build_subnetworks(self.arch, NUM_CLASSES, IMAGE_SHAPE, share_trunk=True)
        network = keras.Model(subs.inputs, {**subs.logits, "ensemble": subs.logits["sub1"]})
        with pytest.raises(ValueError, match="share nothing"):
            self.method_class(network)

    def test_temperature_and_update_are_checked(self):
        with pytest.raises(ValueError, match="temperature"):
            self.make_model(temperature=0.0)
        with pytest.raises(ValueError, match="update must be one of alternate, joint"):
            self.make_model(update="together")

    @pytest.mark.parametrize("branches", [2, 3])
    def test_each_sub_step_updates_only_its_peer_after_a_fresh_forward_pass(self, branches):
        model = self.make_model(branches=branches)
        model.optimizer.build(model.trainable_variables)
        heads = model.sub_heads
        x, y = learnable_data(8)
        x, y = tf.constant(x), tf.constant(y)
        states, iterations = [], []
        minimize = model.minimize

        def recording_minimize(x, y, variables=None):
            # Snapshot, then the logits a fresh forward pass gives now (then restore
            # the BatchNorm statistics that pass moved).
            states.append({h: peer_values(model, h) for h in heads})
            iterations.append(int(model.optimizer.iterations))
            values = [np.array(v) for v in model.network.variables]
            fresh = model.network(x, training=True)
            for variable, value in zip(model.network.variables, values):
                variable.assign(value)
            logits, terms = minimize(x, y, variables)
            for head in heads:
                np.testing.assert_allclose(logits[head], fresh[head], atol=1e-5)
            return logits, terms

        model.minimize = recording_minimize
        for batch in range(2):
            states.clear()
            model.train_step((x, y))
            states.append({h: peer_values(model, h) for h in heads})
            assert len(states) == branches + 1
            for k, head in enumerate(heads):
                before, after = states[k], states[k + 1]
                assert changed(before[head], after[head]), (batch, head)
                for other in heads:
                    if other != head:
                        assert not changed(before[other], after[other]), (batch, head, other)
        # Every sub-step of a batch sees the batch's iteration (so its learning rate),
        # and the batch advances it by one.
        assert iterations == [0] * branches + [1] * branches
        assert int(model.optimizer.iterations) == 2

    def test_fit_advances_iterations_once_per_batch(self):
        x, y = learnable_data(48)
        model = self.make_model()
        model.fit(x, y, batch_size=16, epochs=2, verbose=0)
        assert int(model.optimizer.iterations) == 6

    def test_joint_and_alternate_differ_only_in_the_later_peers_teacher(self):
        # One batch from the same weights: peer 1 takes the same step either way; peer 2's
        # KL teacher is peer 1 before its step (joint) or after it (alternate).
        x, y = learnable_data(16)
        joint = self.make_model(update="joint")
        alternate = self.make_model(update="alternate")
        alternate.set_weights(joint.get_weights())
        for model in (joint, alternate):
            model.fit(x, y, batch_size=16, epochs=1, verbose=0, shuffle=False)
        for head in ("sub1", "sub2"):
            pairs = [
                (np.array(a), np.array(b), a.trainable)
                for a, b in zip(joint.network.variables, alternate.network.variables)
                if a.path.startswith(f"{head}_")
            ]
            for a, b, trainable in pairs:
                if head == "sub1" or not trainable:  # BN statistics: same batch, same weights
                    np.testing.assert_allclose(a, b, atol=1e-6)
            if head == "sub2":
                assert max(np.abs(a - b).max() for a, b, t in pairs if t) > 1e-6
        assert int(joint.optimizer.iterations) == int(alternate.optimizer.iterations) == 1
