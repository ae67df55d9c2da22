"""Sub-network architectures: CIFAR ResNet, Wide ResNet and ImageNet ResNet."""

from keras_ffl.models.architecture import Architecture
from keras_ffl.models.registry import ARCHITECTURE_HELP, get_architecture
from keras_ffl.models.resnet_cifar import CifarResNet
from keras_ffl.models.resnet_imagenet import ImageNetResNet
from keras_ffl.models.wide_resnet import WideResNet

__all__ = [
    "ARCHITECTURE_HELP",
    "Architecture",
    "CifarResNet",
    "ImageNetResNet",
    "WideResNet",
    "get_architecture",
]
