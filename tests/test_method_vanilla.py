"""The vanilla baseline: one network trained with cross-entropy alone."""

import numpy as np
import pytest
from method_harness import IMAGE_SHAPE, NUM_CLASSES, MethodTests

from keras_ffl import build_subnetwork, get_method, training


class TestVanilla(MethodTests):
    method = "vanilla"

    def test_loss_is_the_cross_entropy(self):
        model = self.make_model()
        logits = {"sub1": np.log(np.array([[0.5, 0.25, 0.125, 0.125]], "float32"))}
        terms = model.loss_terms(np.array([1]), logits)
        np.testing.assert_allclose(terms["total"], [np.log(4.0)], rtol=1e-6)

    def test_network_is_the_standalone_subnetwork(self):
        network = self.make_model().network
        plain = build_subnetwork(self.arch, NUM_CLASSES, IMAGE_SHAPE)
        assert network.count_params() == plain.count_params()


def test_vanilla_refuses_several_networks():
    with pytest.raises(ValueError, match="ensemble method"):
        get_method("vanilla").create("resnet8", 4, IMAGE_SHAPE, branches=2)
    with pytest.raises(ValueError, match="method=vanilla trains 1 sub-network") as error:
        training.resolve_config("fashion_mnist", method="vanilla", branches=2, steps_per_epoch=1)
    assert error.value.with_flag().startswith("--method=vanilla trains 1 sub-network")
