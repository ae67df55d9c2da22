"""Sub-network architectures: CIFAR ResNet, Wide ResNet, ImageNet ResNet, Keras Applications
and models of your own."""

from keras_ffl.models.architecture import Architecture, InputConvention, network_input_convention
from keras_ffl.models.keras_apps import KerasApplication
from keras_ffl.models.registry import ARCHITECTURE_HELP, get_architecture
from keras_ffl.models.resnet_cifar import CifarResNet
from keras_ffl.models.resnet_imagenet import ImageNetResNet
from keras_ffl.models.user_model import UserModel
from keras_ffl.models.wide_resnet import WideResNet

__all__ = [
    "ARCHITECTURE_HELP",
    "Architecture",
    "CifarResNet",
    "ImageNetResNet",
    "InputConvention",
    "KerasApplication",
    "UserModel",
    "WideResNet",
    "get_architecture",
    "network_input_convention",
]
