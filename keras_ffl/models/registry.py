"""Architecture names as users write them: resnet32, wrn16_2, resnet34, keras:MobileNetV3Small,
file:model.keras, ..."""

import re

from keras_ffl.models.architecture import Architecture
from keras_ffl.models.keras_apps import KerasApplication
from keras_ffl.models.resnet_cifar import CifarResNet
from keras_ffl.models.resnet_imagenet import ImageNetResNet
from keras_ffl.models.user_model import UserModel
from keras_ffl.models.wide_resnet import WideResNet

ARCHITECTURE_HELP = (
    "resnet<6n+2> (CIFAR ResNet: resnet8, resnet20, resnet32, resnet56, resnet110; "
    "resnet<6n+2>x<width> multiplies its channels, e.g. resnet8x0.5), "
    "wrn<d>_<k> (Wide ResNet, e.g. wrn16_2, wrn40_2), resnet18 / resnet34 (ImageNet ResNet), "
    "keras:<Keras Applications model>[?keyword=value&...] (e.g. keras:MobileNetV3Small, "
    "keras:MobileNetV3Small?alpha=0.75&minimalistic=true&image_size=32; keywords: the "
    "constructor's, and image_size, weights=imagenet|PATH, split=<layer>, bn_momentum), "
    "file:<PATH>.keras[?features=<layer>&split=<layer>&weights=PATH] (a functional model "
    "of your own)"
)


def get_architecture(name, sync_bn=False, *, weights=None, image_size=None):
    """Returns the `Architecture` for a name such as "resnet32", "resnet8x0.5", "wrn16_2",
    "resnet34", "keras:MobileNetV3Small?alpha=0.75" or "file:model.keras"; an
    `Architecture`, a functional `keras.Model` or a function building one is taken as is.

    `weights` and `image_size` are defaults for the keywords of the same names of a
    keras: name (`weights` also of a file: name); a name's own keywords win, and
    the built-in families, trained from scratch, take neither.
    """
    if isinstance(name, Architecture):
        return name
    if not isinstance(name, str):
        return UserModel(name, sync_bn=sync_bn, weights=weights)
    kind, _, spec = name.strip().partition(":")
    if spec and kind.lower() in ("keras", "file"):
        target, _, query = spec.partition("?")
        keywords = {"weights": weights, **_keywords(query, name)}
        if kind.lower() == "keras":
            keywords.setdefault("image_size", image_size)
            return KerasApplication(target, sync_bn=sync_bn, **keywords)
        return UserModel(target, sync_bn=sync_bn, **keywords)
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


def _keywords(query, name):
    """"alpha=0.75&minimalistic=true" as {"alpha": 0.75, "minimalistic": True}."""
    keywords = {}
    for item in filter(None, query.split("&")):
        key, equals, value = item.partition("=")
        if not equals or not key:
            raise ValueError(
                f"Architecture {name!r}: write its keywords as key=value joined by '&', "
                f"e.g. keras:MobileNetV3Small?alpha=0.75&minimalistic=true; got {item!r}."
            )
        keywords[key.strip()] = _value(value.strip())
    return keywords


def _value(text):
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text
