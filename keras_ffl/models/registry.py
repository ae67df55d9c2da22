"""Architecture names as users write them: resnet32, wrn16_2, resnet34, ..."""

import re

from keras_ffl.models.resnet_cifar import CifarResNet
from keras_ffl.models.resnet_imagenet import ImageNetResNet
from keras_ffl.models.wide_resnet import WideResNet

ARCHITECTURE_HELP = (
    "resnet<6n+2> (CIFAR ResNet: resnet8, resnet20, resnet32, resnet56, resnet110; "
    "resnet<6n+2>x<width> multiplies its channels, e.g. resnet8x0.5), "
    "wrn<d>_<k> (Wide ResNet, e.g. wrn16_2, wrn40_2), resnet18 / resnet34 (ImageNet ResNet)"
)


def get_architecture(name, sync_bn=False):
    """Returns the `Architecture` for a name such as "resnet32", "resnet8x0.5", "wrn16_2"
    or "resnet34"."""
    key = name.strip().lower().replace("-", "_")
    if match := re.fullmatch(r"wrn_?(\d+)_(\d+(?:\.\d+)?)", key):
        return WideResNet(int(match[1]), float(match[2]), sync_bn=sync_bn)
    if match := re.fullmatch(r"resnet_?(\d+)x(\d+(?:\.\d+)?)", key):
        return CifarResNet(int(match[1]), sync_bn=sync_bn, width=float(match[2]))
    if match := re.fullmatch(r"resnet_?(\d+)", key):
        depth = int(match[1])
        if depth in (18, 34):
            return ImageNetResNet(depth, sync_bn=sync_bn)
        return CifarResNet(depth, sync_bn=sync_bn)
    raise ValueError(f"Unknown architecture {name!r}. Known: {ARCHITECTURE_HELP}.")
