"""A model of your own as a sub-network (file:PATH.keras, a keras.Model, a builder), case 1
split at a named layer, and case 2 across backbone families.

FFL's case 1 shares the low-level layers and branches the rest; case 2 fuses
sub-networks of different architectures whose feature maps differ in channels and
resolution (Kim et al., Sec. III).
"""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from keras_ffl import get_method, training
from keras_ffl.models import UserModel
from keras_ffl.network import build_subnetwork, build_subnetworks

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHAPE = (12, 12, 3)
MOBILE = "keras:MobileNetV3Small?alpha=0.75&minimalistic=true&image_size=32"


def tiny_model(input_shape=SHAPE):
    """stem -> a residual block -> a strided conv -> pooling and a classifier of its own."""
    inputs = keras.Input(input_shape)
    stem = keras.layers.Conv2D(8, 3, padding="same", name="stem")(inputs)
    block = keras.layers.Conv2D(8, 3, padding="same", name="block_conv")(stem)
    x = keras.layers.Add(name="block_add")([stem, block])
    x = keras.layers.Conv2D(16, 3, strides=2, padding="same", name="down")(x)
    x = keras.layers.ReLU(name="relu")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inputs, keras.layers.Dense(4, name="head")(x), name="tiny")


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("user") / "tiny.keras")
    tiny_model(SHAPE[:2] + (1,)).save(path)
    return path


def test_a_keras_file_is_an_architecture_with_its_last_4d_output_as_feature_map(model_file):
    config = training.resolve_config(
        "fashion_mnist", method="vanilla", arch=(f"file:{model_file}",), recipe="small"
    )
    assert config.arch == (f"file:{model_file}",)
    assert config.mean != (0.0,)  # Your own model takes the dataset's normalisation.
    model = build_subnetwork(config.arch[0], 10, (12, 12, 1), include_top=False)
    assert tuple(model.output.shape) == (None, 6, 6, 16)  # "relu", before the pooling.
    names = {layer.name for layer in model.layers[1].layers}
    assert "gap" not in names and "head" not in names


def test_a_model_or_a_builder_is_accepted_wherever_a_name_is():
    for arch in (tiny_model(), tiny_model):
        model = get_method("ffl").create(arch, 5, SHAPE)
        logits = model.network(np.zeros((2, *SHAPE), "float32"))
        assert logits["fused"].shape == (2, 5)


def test_a_run_asks_for_a_saved_model_in_place_of_a_model_object():
    # A run resumes from its config.json, which names its architectures.
    with pytest.raises(ValueError, match=r"arch is a Python object \(tiny\).*"
                                         r"model.save\('tiny.keras'\).*arch='file:tiny.keras'"):
        training.resolve_config("fashion_mnist", arch=tiny_model((28, 28, 1)))


def test_a_named_layer_is_the_feature_map():
    model = build_subnetwork(UserModel(tiny_model(), features="block_add"), 5, SHAPE,
                             include_top=False)
    assert tuple(model.output.shape) == (None, 12, 12, 8)


def test_case_1_shares_the_graph_up_to_the_named_layer_and_copies_the_rest():
    model = get_method("one").create(UserModel(tiny_model(), split="stem"), 5, SHAPE)
    layers = {layer.name: layer for layer in model.network.layers}
    trunk = layers["shared_tiny_trunk"]
    assert [layer.name for layer in trunk.layers[1:]] == ["shared_stem"]
    assert {"sub1_tiny_branch", "sub2_tiny_branch", "gate_pool"} <= set(layers)
    # ONE's gate reads the trunk's output, as on the built-in families.
    assert model.network.get_layer("gate_pool").input._keras_history.operation is trunk


def test_default_split_is_the_last_valid_point_before_the_final_resolution():
    network = get_method("ffl").create(UserModel(tiny_model()), 5, SHAPE).network
    trunk = network.get_layer("shared_tiny_trunk")
    assert trunk.layers[-1].name == "shared_block_add"


def test_a_split_crossed_by_a_skip_connection_is_refused_naming_the_nearest_valid_points():
    with pytest.raises(ValueError) as error:
        get_method("ffl").create(UserModel(tiny_model(), split="block_conv"), 5, SHAPE)
    message = str(error.value)
    assert "cannot split at 'block_conv'" in message and "stem, block_add" in message
    assert "\n" not in message


def test_a_keras_applications_split_at_a_named_layer():
    arch = f"{MOBILE}&split=expanded_conv_5_add"
    network = get_method("ffl").create(arch, 5, SHAPE).network
    trunk = network.get_layer("shared_mobilenetv3small_trunk")
    assert trunk.layers[-1].name == "shared_expanded_conv_5_add"
    with pytest.raises(ValueError, match="nearest valid split points are .*expanded_conv_5_add"):
        get_method("ffl").create(f"{MOBILE}&split=expanded_conv_5_expand", 5, SHAPE)


def test_case_2_fuses_a_resnet_and_a_mobilenet_of_other_channels_and_resolution():
    model = get_method("ffl").create(["resnet8", MOBILE], 5, SHAPE)
    features = [model.network.get_layer(f"sub{k}_features").output.shape for k in (1, 2)]
    assert features[0][1:] != features[1][1:]
    logits = model.network(np.zeros((2, *SHAPE), "float32"))
    assert {h: v.shape for h, v in logits.items()} == {h: (2, 5) for h in logits}


def test_case_2_gives_each_family_its_own_input_convention():
    # The network's input follows MobileNetV3 (pixels); MobileNetV2 converts it to [-1, 1].
    subs = build_subnetworks([MOBILE, "keras:MobileNetV2?alpha=0.35&image_size=32"], 5, SHAPE)
    network = keras.Model(subs.inputs, subs.features)
    pixels = np.random.default_rng(0).uniform(0, 255, (2, *SHAPE)).astype("float32")
    adapter = keras.Model(network.input, network.get_layer("sub2_mobilenetv2_input").output)
    expected = keras.Model(network.input, network.get_layer("sub2_mobilenetv2_resize").output)
    np.testing.assert_allclose(
        adapter(pixels), expected(pixels).numpy() / 127.5 - 1, rtol=1e-5, atol=1e-5
    )


@pytest.mark.slow
def test_a_run_on_a_mobile_backbone_exports_a_plain_keras_subnetwork(tmp_path):
    config = training.resolve_config(
        "fashion_mnist", method="ffl", arch=(MOBILE,), epochs=1, steps_per_epoch=2,
        validation_steps=1, batch_size=16, eval_batch_size=50, recipe="small",
    )
    run = str(tmp_path / "run")
    training.train(config, run, verbose=0)
    export_dir = str(tmp_path / "export")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=REPO)
    completed = subprocess.run(
        [sys.executable, os.path.join(REPO, "tools", "export.py"), f"--model_dir={run}",
         f"--export_dir={export_dir}", "--name=m"],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert {"m_fused", "m_sub1", "m_sub2"} <= set(os.listdir(export_dir))
    pixels = np.random.default_rng(0).integers(0, 256, (3, 28, 28, 1)).astype("float32")
    x = (pixels - np.float32(config.mean)) / np.float32(config.std)
    np.save(tmp_path / "x.npy", x)
    plain = {k: v for k, v in env.items() if k != "PYTHONPATH"}
    code = (
        "import sys, numpy as np, keras; "
        "m = keras.saving.load_model(sys.argv[1]); "
        "np.save(sys.argv[2] + '.out.npy', np.asarray(m(np.load(sys.argv[2]), training=False))); "
        "assert 'keras_ffl' not in sys.modules"
    )
    completed = subprocess.run(
        [sys.executable, "-c", code, os.path.join(export_dir, "m_sub1.keras"),
         str(tmp_path / "x.npy")],
        capture_output=True, text=True, env=plain, cwd=str(tmp_path), timeout=300,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-3000:]
    trained = keras.saving.load_model(os.path.join(run, "best.keras"), compile=False)
    expected = trained.network(x, training=False)["sub1"]
    np.testing.assert_allclose(np.load(tmp_path / "x.npy.out.npy"), expected, atol=1e-4)


def test_sync_bn_synchronises_every_batchnorm_of_every_copy():
    # As keras_ffl's own backbones under --sync_bn (models/layers.batch_norm): with
    # MirroredStrategy, each BatchNorm's batch statistics come from all replicas.
    inputs = keras.Input(SHAPE)
    x = keras.layers.Conv2D(8, 3, name="conv")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    own = keras.Model(inputs, keras.layers.Conv2D(8, 3, strides=2, name="down")(x))
    for arch in (own, MOBILE):
        network = get_method("ffl").build_network(arch, 4, SHAPE, sync_bn=True)
        norms = [layer for layer in network._flatten_layers()
                 if isinstance(layer, keras.layers.BatchNormalization)]
        assert norms and all(layer.synchronized for layer in norms), arch
    network = get_method("ffl").build_network(own, 4, SHAPE)
    assert not any(layer.synchronized for layer in network._flatten_layers()
                   if isinstance(layer, keras.layers.BatchNormalization))


def test_dualnet_across_families_is_refused_naming_the_feature_map_shapes():
    with pytest.raises(ValueError, match=r"need one shape.*\(3, 3, 64\), \(1, 1, 432\)"):
        get_method("dualnet").create(["resnet8", MOBILE], 5, SHAPE)
