"""The 2-net baseline (paper Table VI): independent networks and their averaged logits."""

import numpy as np
from method_harness import IMAGE_SHAPE, NUM_CLASSES, MethodTests, learnable_data

from keras_ffl import build_ffl_network, build_subnetwork
from keras_ffl.methods.ensemble import independent_loss_terms


class TestEnsemble(MethodTests):
    method = "ensemble"

    def test_loss_is_the_sum_of_the_networks_cross_entropies(self):
        z1 = np.array([[2.0, 0.0, -1.0, 0.5]], "float32")
        z2 = np.array([[0.0, 1.0, 0.0, 0.0]], "float32")
        terms = independent_loss_terms(np.array([1]), [z1, z2])

        def ce(z, label):
            return np.log(np.exp(z).sum()) - z[0, label]

        np.testing.assert_allclose(terms["ce_sub1"], [ce(z1, 1)], rtol=1e-6)
        np.testing.assert_allclose(terms["total"], [ce(z1, 1) + ce(z2, 1)], rtol=1e-6)

    def test_networks_share_nothing_and_do_not_interact(self):
        model = self.make_model()
        plain = build_subnetwork(self.arch, NUM_CLASSES, IMAGE_SHAPE).count_params()
        assert model.network.count_params() == 2 * plain
        # Case 1 FFL shares a trunk, so the 2-net ensemble has more parameters (Table VI).
        assert model.network.count_params() > build_ffl_network(
            self.arch, NUM_CLASSES, IMAGE_SHAPE
        ).count_params() - 2 * 16 * NUM_CLASSES
        x, y = learnable_data(8)
        import tensorflow as tf

        with tf.GradientTape() as tape:
            logits = model.network(x, training=True)
            loss = tf.reduce_mean(model.loss_terms(y, logits)["ce_sub1"])
        grads = tape.gradient(loss, model.trainable_variables)
        for variable, grad in zip(model.trainable_variables, grads):
            assert (grad is None) == variable.path.startswith("sub2_"), variable.path

    def test_ensemble_head_is_the_mean_of_the_logits(self):
        model = self.make_model()
        x, _ = learnable_data(4)
        logits = model.predict(x, verbose=0)
        np.testing.assert_allclose(
            logits["ensemble"], (logits["sub1"] + logits["sub2"]) / 2, atol=1e-6
        )
