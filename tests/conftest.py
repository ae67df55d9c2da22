"""Test-wide settings: quiet TensorFlow, a fixed seed per test."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras_ffl  # noqa: E402, F401  (first, as the command line: it selects TF's CPU kernels)
import keras  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(1234)
    yield
    keras.backend.clear_session()
