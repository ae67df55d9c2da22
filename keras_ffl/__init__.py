"""keras_ffl: Feature Fusion Learning (Kim et al., ICPR 2020) in Keras 3 on TensorFlow."""

from keras_ffl.callbacks import DistillationRampUp
from keras_ffl.fusion import FusionBlock
from keras_ffl.losses import cross_entropy, softened_kl
from keras_ffl.methods import MultiHeadModel, get_method, method_names
from keras_ffl.methods.ffl import FFLModel, build_ffl_network, ffl_loss_terms, ffl_sgd
from keras_ffl.models import (
    Architecture,
    CifarResNet,
    ImageNetResNet,
    WideResNet,
    get_architecture,
)
from keras_ffl.network import build_subnetwork, build_subnetworks
from keras_ffl.optimizer import CoupledSGD, paper_sgd
from keras_ffl.schedules import sigmoid_rampup, step_learning_rate

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
