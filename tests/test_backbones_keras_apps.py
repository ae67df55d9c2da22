"""Keras Applications backbones ("keras:<Model>?keywords"): every method on a reduced-width
MobileNetV3Small, each family's input convention, small inputs and pretrained weights.

FFL "is applicable to any network architectures" (Kim et al., Sec. III, case 2); a
backbone's pretrained weights only mean something when it gets the input its family
was trained on (keras.applications' `preprocess_input` of each family).
"""

import importlib

import keras
import numpy as np
import pytest

from keras_ffl import build_ffl_network, training
from keras_ffl.export import serving
from keras_ffl.models import get_architecture, network_input_convention
from keras_ffl.network import build_subnetwork
from tests.method_harness import MethodTests

MOBILE = "keras:MobileNetV3Small?alpha=0.75&minimalistic=true"


class MobileBackbone:
    arch = f"{MOBILE}&image_size=32"  # The harness's images are 12x12; the family's minimum 32.
    # Covered on resnet8 by each method's own file, and too slow for a MobileNet here: the
    # replicas' check (it runs resnet8 whatever the backbone), learning, mixed precision,
    # the export of every head and a training run (test_backbones_user_model trains and
    # exports a run on this backbone).
    test_two_replicas_match_one_device = None
    test_few_hundred_steps_lift_every_head_well_above_chance = None
    test_mixed_precision_trains_with_float32_variables_logits_and_losses = None
    test_export_writes_every_head = None
    test_a_training_run_reports_every_head = None


@pytest.mark.slow
class TestFFLOnMobileNet(MobileBackbone, MethodTests):
    method = "ffl"


class IndependentCopies(MobileBackbone):
    # Vanilla and the 2-net build the backbone's independent copies as DML does, with
    # plain cross-entropy: DML's class fits, saves and reloads them on this backbone.
    test_fit_logs_every_heads_metrics = None
    test_keras_round_trip_keeps_weights_options_and_optimizer_state = None


@pytest.mark.slow
class TestVanillaOnMobileNet(IndependentCopies, MethodTests):
    method = "vanilla"


@pytest.mark.slow
class TestEnsembleOnMobileNet(IndependentCopies, MethodTests):
    method = "ensemble"


@pytest.mark.slow
class TestDMLOnMobileNet(MobileBackbone, MethodTests):
    method = "dml"


@pytest.mark.slow
class TestONEOnMobileNet(MobileBackbone, MethodTests):
    method = "one"


@pytest.mark.slow
class TestDualNetOnMobileNet(MobileBackbone, MethodTests):
    method = "dualnet"


# (architecture, module of keras.applications whose preprocess_input the family expects)
FAMILIES = [
    ("keras:MobileNetV3Small?alpha=0.75&minimalistic=true", "mobilenet_v3"),
    ("keras:MobileNetV2?alpha=0.35", "mobilenet_v2"),
    pytest.param("keras:EfficientNetV2B0", "efficientnet_v2", marks=pytest.mark.slow),
    pytest.param("keras:ResNet50V2", "resnet_v2", marks=pytest.mark.slow),
    pytest.param("keras:ConvNeXtTiny", "convnext", marks=pytest.mark.slow),
    pytest.param("keras:ResNet50", "resnet", marks=pytest.mark.slow),
]


@pytest.mark.parametrize("arch, module", FAMILIES)
def test_uint8_images_reach_the_backbone_as_its_family_expects(arch, module, tmp_path):
    # The reference: the application itself, given its family's preprocess_input of the
    # pixels; keras_ffl's sub-network starts from its weights and takes uint8 images
    # through the run's normalisation, as every export does.
    family = arch.split(":")[1].split("?")[0]
    keywords = dict(kv.split("=") for kv in arch.partition("?")[2].split("&") if kv)
    keywords = {k: {"true": True}.get(v, float(v) if "." in v else v) for k, v in keywords.items()}
    reference = getattr(keras.applications, family)(
        include_top=False, weights=None, input_shape=(32, 32, 3), **keywords
    )
    path = str(tmp_path / "w.weights.h5")
    reference.save_weights(path)
    backbone = get_architecture(arch, weights=path)
    model = build_subnetwork(backbone, 10, (32, 32, 3), include_top=False)
    mean, std = network_input_convention([backbone]).for_channels(3)
    pixels = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    served = model(serving.scale(pixels, mean, std)).numpy()
    preprocess = importlib.import_module(f"keras.applications.{module}").preprocess_input
    expected = reference(preprocess(pixels.astype("float32"))).numpy()
    np.testing.assert_allclose(served, expected, rtol=1e-4, atol=1e-4)
    assert not any(isinstance(layer, keras.layers.Normalization) for layer in model.layers)


def test_the_run_normalises_to_the_backbones_convention_not_the_datasets():
    config = training.resolve_config(
        "fashion_mnist", method="vanilla", arch=(MOBILE,), recipe="small", image_size=32
    )
    assert (config.mean, config.std) == ((0.0,), (1.0,))  # MobileNetV3 rescales inside.
    builtin = training.resolve_config("fashion_mnist", method="vanilla", recipe="small")
    assert builtin.mean != (0.0,)


def test_the_training_pipeline_feeds_the_backbone_raw_pixels(tmp_path):
    config = training.resolve_config(
        "fashion_mnist", method="vanilla", arch=(MOBILE,), recipe="small", image_size=32,
        steps_per_epoch=1, validation_steps=1, eval_batch_size=50,
    )  # fmt: skip
    run = training.prepare(config, str(tmp_path / "run"))
    _, test_data = run._datasets()
    images, _ = next(iter(test_data))
    # MobileNetV3 rescales inside: the pipeline must not normalise as well.
    assert float(np.min(images)) >= 0.0 and float(np.max(images)) > 100.0


def test_image_size_resizes_inside_the_network_and_names_the_run():
    config = training.resolve_config(
        "fashion_mnist", method="vanilla", arch=("keras:MobileNetV2?alpha=0.35",),
        recipe="small", image_size=32,
    )
    assert config.arch == ("keras:MobileNetV2?alpha=0.35&image_size=32",)
    assert config.image_shape == (28, 28, 1)  # Clients and the pipeline keep the data's size.
    model = build_subnetwork(config.arch[0], 10, config.image_shape)
    assert model(np.zeros((1, 28, 28, 1), "float32")).shape == (1, 10)


def test_too_small_images_fail_at_once_naming_the_minimum_and_the_fix():
    with pytest.raises(ValueError, match=r"at least 32x32, and these are 28x28; .* image_size=32"):
        build_subnetwork("keras:MobileNetV2?alpha=0.35", 10, (28, 28, 1))


def test_imagenet_weights_offline_fail_in_one_line_naming_the_way_out():
    with pytest.raises(ValueError, match="could not download the ImageNet weights") as error:
        build_subnetwork("keras:MobileNetV3Small?weights=imagenet&alpha=0.75", 10, (32, 32, 3))
    assert "\n" not in str(error.value) and "weights=PATH" in str(error.value)


def test_every_branch_starts_from_the_weights_file_grey_images_repeated_to_rgb(tmp_path):
    reference = keras.applications.MobileNetV3Small(
        include_top=False, weights=None, input_shape=(32, 32, 3), alpha=0.75, minimalistic=True
    )
    path = str(tmp_path / "w.weights.h5")
    reference.save_weights(path)
    from keras_ffl import get_method

    model = get_method("dml").create(f"{MOBILE}&weights={path}", 10, (32, 32, 1))
    first = reference.get_weights()[0]
    for head in ("sub1", "sub2"):
        backbone = model.network.get_layer(f"{head}_mobilenetv3small")
        np.testing.assert_array_equal(backbone.get_weights()[0], first)


def test_bn_momentum_sets_every_batchnorm_of_every_copy():
    # MobileNetV3's BatchNorm momentum is 0.999 (keras.applications.mobilenet_v3); PyTorch's
    # 0.1, i.e. Keras's 0.9, is what the paper's official code trains with.
    network = build_ffl_network(f"{MOBILE}&image_size=32&bn_momentum=0.9", 10, (28, 28, 1))
    norms = [
        layer for layer in network._flatten_layers()
        if isinstance(layer, keras.layers.BatchNormalization)
    ]  # fmt: skip
    assert len(norms) > 20 and {layer.momentum for layer in norms} == {0.9}
    with pytest.raises(ValueError, match="bn_momentum=1.5 is not in"):
        get_architecture(f"{MOBILE}&bn_momentum=1.5")


def test_unknown_family_and_reserved_keywords_are_refused_with_the_known_ones():
    with pytest.raises(ValueError, match="Unknown Keras Applications backbone 'MobileNetV9'"):
        get_architecture("keras:MobileNetV9")
    with pytest.raises(ValueError, match="takes no include_top"):
        get_architecture("keras:MobileNetV2?include_top=true")
    with pytest.raises(ValueError, match="key=value"):
        get_architecture("keras:MobileNetV2?alpha")
