"""Test-wide settings: quiet TensorFlow, a fixed seed per test, a private cache."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras_ffl  # noqa: E402, F401  (first, as the command line: it selects TF's CPU kernels)
import keras  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(autouse=True, scope="session")
def _cache_dir(tmp_path_factory):
    """keras_ffl's cache (verdicts of image checks) in a temporary directory, not ~/.cache."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("KERAS_FFL_CACHE_DIR", str(tmp_path_factory.mktemp("keras_ffl_cache")))
        yield


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(1234)
    yield
    keras.backend.clear_session()
