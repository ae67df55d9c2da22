"""Keras Applications backbones by name: "keras:MobileNetV3Small?alpha=0.75&minimalistic=true".

Each is the application without its top (`include_top=False`), its last feature
map the sub-network's, with the classifier every backbone has. Each family's own
input convention is declared here once (`InputConvention`): the run normalises
its images to it, so a family that rescales inside its graph (MobileNetV3,
EfficientNet, ConvNeXt) gets 0..255 pixels and one that expects [-1, 1] or
caffe-style input gets exactly that.
"""

import re

import keras
import numpy as np

from keras_ffl.models.architecture import InputConvention
from keras_ffl.models.graph_backbone import GraphBackbone

#: Families that rescale inside their graph (`include_preprocessing`): raw pixels.
PIXELS = InputConvention((0.0,), (1.0,))
#: preprocess_input(mode="tf"): pixels / 127.5 - 1.
SYMMETRIC = InputConvention((127.5,), (127.5,))
#: preprocess_input(mode="torch"): ImageNet's mean and std, RGB.
TORCH = InputConvention((123.675, 116.28, 103.53), (58.395, 57.12, 57.375))
#: preprocess_input(mode="caffe"), ImageNet's mean subtracted; its BGR order is
#: taken care of by reversing the first convolution's input channels instead.
CAFFE = InputConvention((123.68, 116.779, 103.939), (1.0,))

_CONVENTIONS = (
    (r"MobileNetV3.*|EfficientNet.*|ConvNeXt.*", PIXELS),
    (r"MobileNet|MobileNetV2|ResNet\d+V2|InceptionV3|InceptionResNetV2|Xception|NASNet.*",
     SYMMETRIC),
    (r"DenseNet\d+", TORCH),
    (r"ResNet\d+|VGG\d+", CAFFE),
)
#: Constructor arguments keras_ffl sets itself.
_RESERVED = ("include_top", "input_shape", "input_tensor", "pooling", "classes",
             "classifier_activation", "include_preprocessing", "name")


def family_names():
    """The Keras Applications constructors this module knows the input convention of."""
    return sorted(
        name for name in dir(keras.applications)
        if name[0].isupper() and _convention(name) is not None
    )


def _convention(name):
    for pattern, convention in _CONVENTIONS:
        if re.fullmatch(pattern, name):
            return convention
    return None


class KerasApplication(GraphBackbone):
    """A Keras Applications model without its top as a backbone.

    Args:
      family: the constructor's name in `keras.applications`, e.g. "MobileNetV3Small".
      weights: None (fresh), "imagenet" (downloaded by Keras) or a weights file's
        path; every copy (each branch in case 1) starts from them.
      image_size: resize the images to `image_size` x `image_size` first, inside
        the network, so training, evaluation and export all do it.
      split: the layer the shared trunk ends at in case 1.
      bn_momentum: the BatchNorm layers' moving-average momentum, None for the family's
        own (MobileNetV3's and EfficientNet's 0.999 let the moving statistics lag
        weights that move fast, as from scratch at the recipes' learning rate 0.1;
        0.9 is PyTorch's default, which keras_ffl's own backbones follow).
      kwargs: the constructor's other keywords, e.g. alpha=0.75, minimalistic=True.
    """

    def __init__(self, family, *, weights=None, image_size=None, split=None, bn_momentum=None,
                 sync_bn=False, **kwargs):
        convention = _convention(family) if hasattr(keras.applications, family) else None
        if convention is None:
            raise ValueError(
                f"Unknown Keras Applications backbone {family!r}; known: "
                f"{', '.join(family_names())}."
            )
        reserved = sorted(set(kwargs) & set(_RESERVED))
        if reserved:
            raise ValueError(
                f"keras:{family} takes no {', '.join(reserved)}: keras_ffl sets "
                f"{', '.join(reserved)} itself (the top, the input and the family's preprocessing)."
            )
        if bn_momentum is not None and not 0 <= bn_momentum < 1:
            raise ValueError(
                f"keras:{family}: bn_momentum={bn_momentum} is not in [0, 1) — pass the "
                "moving averages' momentum, e.g. bn_momentum=0.9"
            )
        keywords = dict(
            kwargs, weights=weights, image_size=image_size, split=split, bn_momentum=bn_momentum
        )
        spec = "&".join(f"{k}={_spec_value(v)}" for k, v in sorted(keywords.items())
                        if v is not None)
        super().__init__(
            f"keras:{family}" + (f"?{spec}" if spec else ""), family.lower(), split, sync_bn
        )
        self.family, self.weights, self.image_size, self.kwargs = (
            family, weights, image_size, kwargs
        )
        self.bn_momentum = bn_momentum
        self.input_convention = convention
        self._pretrained = None

    def adapt_input(self, x, prefix, incoming):
        """Resizes, repeats a grey channel for pretrained weights, converts the run's convention."""
        if self.image_size:
            x = keras.layers.Resizing(
                self.image_size, self.image_size, name=f"{prefix}{self.layer_name}_resize"
            )(x)
        channels = x.shape[-1]
        incoming = (incoming or self.input_convention).for_channels(channels)
        if self.weights is not None and channels == 1:
            x = keras.layers.Concatenate(name=f"{prefix}{self.layer_name}_rgb")([x, x, x])
            channels = 3
            incoming = InputConvention(incoming.mean * 3, incoming.std * 3)
        own = self.input_convention.for_channels(channels)
        if not np.allclose(own.mean, incoming.mean) or not np.allclose(own.std, incoming.std):
            # (x * s_in + m_in - m_own) / s_own: the run's input in this family's convention.
            s_in, m_in = np.asarray(incoming.std), np.asarray(incoming.mean)
            x = keras.layers.Normalization(
                mean=list((np.asarray(own.mean) - m_in) / s_in),
                variance=list((np.asarray(own.std) / s_in) ** 2),
                name=f"{prefix}{self.layer_name}_input",
            )(x)
        return x

    def build_graph(self, input_shape):
        size = min(input_shape[:2])
        try:
            graph = self._construct(input_shape, None)
        except ValueError as error:
            minimum = re.search(r"at least (\d+)", str(error))
            if not minimum:
                raise
            raise ValueError(
                f"{self.name} needs images of at least {minimum[1]}x{minimum[1]}, and these "
                f"are {size}x{size}; resize them inside the network with image_size="
                f"{minimum[1]} or more, e.g. keras:{self.family}?image_size={minimum[1]}."
            ) from None
        if self.weights is not None:
            graph.set_weights(self._pretrained_weights(input_shape))
        if self.bn_momentum is not None:
            for layer in graph.layers:
                if isinstance(layer, keras.layers.BatchNormalization):
                    layer.momentum = self.bn_momentum
        return graph

    def _construct(self, input_shape, weights):
        return getattr(keras.applications, self.family)(
            include_top=False, weights=weights, input_shape=tuple(input_shape), **self.kwargs
        )

    def _pretrained_weights(self, input_shape):
        """The weights every copy starts from, read once."""
        if self._pretrained is None:
            try:
                model = self._construct(input_shape, self.weights)
            except Exception as error:  # Keras raises several types when a download fails.
                if self.weights != "imagenet":
                    raise ValueError(
                        f"{self.name}: cannot load weights={self.weights!r} "
                        f"({str(error).splitlines()[0]}); give "
                        f"a weights file saved from keras.applications.{self.family}"
                        "(include_top=False) with the same keywords."
                    ) from None
                raise ValueError(
                    f"{self.name}: Keras could not download the ImageNet weights (offline?): "
                    f"save them where there is internet with keras.applications.{self.family}"
                    "(include_top=False, weights='imagenet').save_weights('w.weights.h5') "
                    "and give weights=PATH."
                ) from None
            if self.input_convention is CAFFE:
                first = next(layer for layer in model.layers
                             if isinstance(layer, keras.layers.Conv2D))
                kernel, *rest = first.get_weights()
                first.set_weights([kernel[:, :, ::-1, :], *rest])  # BGR -> RGB
            self._pretrained = model.get_weights()
        return self._pretrained


def _spec_value(value):
    return str(value).lower() if isinstance(value, bool) else str(value)
