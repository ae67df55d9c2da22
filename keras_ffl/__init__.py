"""keras_ffl: Feature Fusion Learning (Kim et al., ICPR 2020) in Keras 3 on TensorFlow."""

import os

# TensorFlow's oneDNN CPU kernels train these networks much faster than its default
# Eigen kernels (docs/PERFORMANCE.md), but TensorFlow turns them on by default only on
# CPUs with AVX-512 VNNI/BF16 or AMX. The switch is read when TensorFlow is first
# imported, so it only takes effect if keras_ffl is imported first (as the command
# line does); an explicit TF_ENABLE_ONEDNN_OPTS=0 is respected.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

from keras_ffl.callbacks import DistillationRampUp  # noqa: E402
from keras_ffl.fusion import FusionBlock  # noqa: E402
from keras_ffl.losses import cross_entropy, softened_kl  # noqa: E402
from keras_ffl.methods import MultiHeadModel, get_method, method_names  # noqa: E402
from keras_ffl.methods.ffl import FFLModel, build_ffl_network, ffl_loss_terms, ffl_sgd  # noqa: E402
from keras_ffl.models import (  # noqa: E402
    Architecture,
    CifarResNet,
    ImageNetResNet,
    WideResNet,
    get_architecture,
)
from keras_ffl.network import build_subnetwork, build_subnetworks  # noqa: E402
from keras_ffl.optimizer import CoupledSGD, paper_sgd  # noqa: E402
from keras_ffl.schedules import sigmoid_rampup, step_learning_rate  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "Architecture",
    "CifarResNet",
    "CoupledSGD",
    "DistillationRampUp",
    "FFLModel",
    "MultiHeadModel",
    "FusionBlock",
    "ImageNetResNet",
    "WideResNet",
    "build_ffl_network",
    "build_subnetwork",
    "build_subnetworks",
    "cross_entropy",
    "ffl_loss_terms",
    "ffl_sgd",
    "get_architecture",
    "get_method",
    "method_names",
    "paper_sgd",
    "sigmoid_rampup",
    "softened_kl",
    "step_learning_rate",
]
