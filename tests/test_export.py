"""Export: sub-network extraction, TF Serving SavedModels, .keras files, versions, models.config."""

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf
from filetree import snapshot

from keras_ffl import FFLModel, FusionBlock, build_ffl_network, build_subnetwork
from keras_ffl.export import (
    ExportVerificationError,
    export_savedmodels,
    exporter,
    extract_fused,
    extract_subnetwork,
    load_checkpoint,
    serving,
)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IMAGE_SHAPE = (16, 12, 3)  # Not square, so that a swapped height and width shows.
NUM_CLASSES = 7
MEAN = (125.3, 123.0, 113.9)
STD = (63.0, 62.1, 66.7)
NAME = "tiny"
MODELS = (f"{NAME}_fused", f"{NAME}_sub1", f"{NAME}_sub2")


def _network(architectures="resnet8", seed=0):
    """A tiny FFL network with non-trivial BatchNorm statistics, so inference mode matters."""
    network = build_ffl_network(architectures, NUM_CLASSES, IMAGE_SHAPE)
    rng = np.random.default_rng(seed)
    for variable in network.non_trainable_variables:
        if variable.path.endswith("moving_mean"):
            variable.assign(rng.normal(0.0, 0.2, variable.shape))
        elif variable.path.endswith("moving_variance"):
            variable.assign(rng.uniform(0.5, 2.0, variable.shape))
    return network


def _make_model_dir(path):
    """A training run's directory as the training CLI leaves it (best != last)."""
    os.makedirs(path)
    FFLModel(_network(seed=0)).save(os.path.join(path, "best.keras"))
    FFLModel(_network(seed=1)).save(os.path.join(path, "last.keras"))
    config = {
        "dataset": "tiny",
        "num_classes": NUM_CLASSES,
        "image_shape": list(IMAGE_SHAPE),
        "mean": list(MEAN),
        "std": list(STD),
        "arch": "resnet8",
    }
    with open(os.path.join(path, "config.json"), "w") as file:
        json.dump(config, file)
    with open(os.path.join(path, "results.json"), "w") as file:
        json.dump({"fused_acc": 0.1}, file)
    return path


def _images(batch=5, seed=7):
    return np.random.default_rng(seed).integers(0, 256, (batch, *IMAGE_SHAPE), dtype=np.uint8)


def _normalised(images):
    return (images.astype(np.float32) - np.float32(MEAN)) / np.float32(STD)


def _layer_output(network, layer_name, x):
    return keras.Model(network.input, network.get_layer(layer_name).output)(x).numpy()


def _subprocess_env():
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=REPO)
    return env


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return _make_model_dir(str(tmp_path_factory.mktemp("runs") / NAME))


@pytest.fixture(scope="module")
def network(model_dir):
    return keras.saving.load_model(os.path.join(model_dir, "best.keras"), compile=False).network


@pytest.fixture(scope="module")
def cli_export(model_dir, tmp_path_factory):
    """Runs tools/export.py on the model directory; returns (export_dir, stdout)."""
    export_dir = str(tmp_path_factory.mktemp("cli") / "export")
    completed = subprocess.run(
        [sys.executable, os.path.join(REPO, "tools", "export.py"),
         f"--model_dir={model_dir}", f"--export_dir={export_dir}"],
        capture_output=True, text=True, env=_subprocess_env(), timeout=300,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-3000:]
    return export_dir, completed.stdout


# Extraction.


@pytest.mark.parametrize("architectures", ["resnet8", ["resnet8", "wrn10_1"]])
def test_extracted_subnetwork_is_build_subnetwork_with_the_heads_weights(architectures):
    network = _network(architectures)
    x = _normalised(_images())
    outputs = network(x, training=False)
    for k in (1, 2):
        arch = architectures if isinstance(architectures, str) else architectures[k - 1]
        reference = build_subnetwork(arch, NUM_CLASSES, IMAGE_SHAPE)
        classifier = extract_subnetwork(network, k)
        backbone = extract_subnetwork(network, k, include_top=False)
        assert [layer.name for layer in classifier.layers] == [
            layer.name for layer in reference.layers
        ]
        assert all(type(layer).__module__.startswith("keras.") for layer in classifier.layers)
        np.testing.assert_allclose(classifier(x), outputs[f"sub{k}"], atol=1e-6)
        np.testing.assert_allclose(
            backbone(x), _layer_output(network, f"sub{k}_features", x), atol=1e-6
        )
        assert backbone.output.shape == reference.get_layer("features").output.shape


def test_extracted_models_own_their_weights():
    network = _network()
    classifier = extract_subnetwork(network, 1)
    fused = extract_fused(network)
    network_variables = {id(v) for v in network.weights}
    assert not network_variables & {id(v) for v in classifier.weights + fused.weights}


def test_extract_fused_is_the_fused_classifier():
    network = _network(["resnet8", "wrn10_1"])
    x = _normalised(_images())
    fused = extract_fused(network)
    fused_features = extract_fused(network, include_top=False)
    np.testing.assert_allclose(fused(x), network(x, training=False)["fused"], atol=1e-6)
    np.testing.assert_allclose(
        fused_features(x), _layer_output(network, "fused_features", x), atol=1e-6
    )
    assert any(isinstance(layer, FusionBlock) for layer in fused.layers)
    assert not any(layer.name.startswith("sub1_logits") for layer in fused.layers)


def test_extraction_accepts_ffl_models_and_rejects_bad_heads():
    model = FFLModel(_network())
    assert extract_subnetwork(model, 2).output.shape == (None, NUM_CLASSES)
    for k in (0, 3, "1"):
        with pytest.raises(ValueError, match=r"k must be a sub-network number in 1\.\.2"):
            extract_subnetwork(model, k)
    plain = build_subnetwork("resnet8", NUM_CLASSES, IMAGE_SHAPE)
    with pytest.raises(ValueError, match="keras_ffl model or its network"):
        extract_fused(plain)


# Signatures, without writing anything.


def test_classify_outputs_with_fewer_classes_than_top_k():
    logits = tf.constant([[0.1, 2.0, -1.0], [3.0, 0.0, 1.0]])
    outputs = serving.classify(logits)
    np.testing.assert_allclose(outputs["probabilities"], tf.nn.softmax(logits), atol=1e-7)
    assert outputs["classes"].dtype == tf.int64
    np.testing.assert_array_equal(outputs["classes"], [1, 0])
    order = np.array([[1, 0, 2], [0, 2, 1]])
    np.testing.assert_array_equal(outputs["top_k_classes"], order)
    assert outputs["top_k_classes"].dtype == tf.int64
    np.testing.assert_allclose(
        outputs["top_k_probabilities"],
        np.take_along_axis(outputs["probabilities"].numpy(), order, axis=1),
    )


def test_export_arguments_are_checked_before_anything_is_written(tmp_path):
    network = _network()
    cases = [
        (dict(mean=MEAN[:2], std=STD), "mean must hold 3"),
        (dict(mean=MEAN, std=(1.0, 0.0, 1.0)), "std must hold 3"),
        (dict(mean=MEAN, std=STD, image_shape=(12, 16, 3)), "does not fit"),
        (dict(mean=MEAN, std=STD, version=0), "positive integer"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ValueError, match=message):
            export_savedmodels(network, str(tmp_path / "export"), NAME, **kwargs)
    with pytest.raises(ValueError, match="Invalid export name"):
        export_savedmodels(network, str(tmp_path / "export"), "../x", mean=MEAN, std=STD)
    assert not (tmp_path / "export").exists() or not os.listdir(tmp_path / "export")


def test_load_checkpoint_prefers_best_and_checkpoint_picks(tmp_path, model_dir):
    best, _ = load_checkpoint(model_dir)
    last, config = load_checkpoint(model_dir, "last")
    assert config["image_shape"] == list(IMAGE_SHAPE)
    expected = keras.saving.load_model(os.path.join(model_dir, "best.keras"), compile=False)
    x = _normalised(_images())
    np.testing.assert_array_equal(best(x)["fused"], expected(x)["fused"])
    assert not np.allclose(best(x)["fused"], last(x)["fused"])
    with pytest.raises(FileNotFoundError, match="config.json not found"):
        load_checkpoint(str(tmp_path))
    with pytest.raises(ValueError, match="checkpoint must be one of"):
        load_checkpoint(model_dir, "final")


# A full export through the command line.


@pytest.mark.slow
def test_cli_writes_the_serving_layout_and_prints_every_signature(cli_export):
    export_dir, stdout = cli_export
    assert sorted(os.listdir(export_dir)) == sorted(
        [*MODELS, "models.config", f"{NAME}_fused.keras"]
        + [f"{NAME}_sub{k}{suffix}.keras" for k in (1, 2) for suffix in ("", "_backbone")]
    )
    for model in MODELS:
        assert os.listdir(os.path.join(export_dir, model)) == ["1"]
        assert os.path.isfile(os.path.join(export_dir, model, "1", "saved_model.pb"))
        assert f"{model} v1  {os.path.join(export_dir, model, '1')}" in stdout
    assert stdout.count("signature serving_default") == 3
    assert stdout.count("signature features") == 1
    assert stdout.count("input  images               uint8    [None, 16, 12, 3]") == 4
    assert stdout.count("output probabilities        float32  [None, 7]") == 3
    assert stdout.count("output top_k_classes        int64    [None, 5]") == 3
    assert "output fused_features       float32  [None, 4, 3, 64]" in stdout
    assert "mean=(125.3, 123.0, 113.9)" in stdout


@pytest.mark.slow
def test_every_head_round_trips_through_its_saved_model(cli_export, network):
    export_dir, _ = cli_export
    images = _images(batch=6, seed=11)
    logits = network(_normalised(images), training=False)
    for head in ("fused", "sub1", "sub2"):
        loaded = tf.saved_model.load(os.path.join(export_dir, f"{NAME}_{head}", "1"))
        outputs = loaded.signatures["serving_default"](images=tf.constant(images))
        expected = keras.ops.softmax(logits[head]).numpy()
        assert np.max(np.abs(outputs["probabilities"].numpy() - expected)) <= 1e-5, head
        np.testing.assert_array_equal(outputs["classes"], np.argmax(expected, axis=-1))
        top5 = np.argsort(-expected, axis=-1)[:, :5]
        np.testing.assert_array_equal(outputs["top_k_classes"], top5)
        np.testing.assert_allclose(
            outputs["top_k_probabilities"], np.take_along_axis(expected, top5, 1), atol=1e-5
        )
        assert ("features" in loaded.signatures) == (head == "fused")
    fused = tf.saved_model.load(os.path.join(export_dir, f"{NAME}_fused", "1"))
    features = fused.signatures["features"](images=tf.constant(images))["fused_features"]
    np.testing.assert_allclose(
        features, _layer_output(network, "fused_features", _normalised(images)), atol=1e-5
    )


def _saved_model_cli_signatures(path):
    """{signature: {"inputs"|"outputs": {name: (dtype, shape)}}} from `saved_model_cli show`."""
    command = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    completed = subprocess.run(
        [command if os.path.exists(command) else "saved_model_cli", "show", "--dir", path, "--all"],
        capture_output=True, text=True, env=_subprocess_env(), timeout=120,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-3000:]
    signatures = {}
    for block in re.split(r"\n(?=signature_def\[)", completed.stdout):
        match = re.match(r"signature_def\['(\w+)'\]", block)
        if not match:
            continue
        sections = re.split(r"contains the following output\(s\):", block)
        signatures[match[1]] = {
            kind: {
                name: (dtype, shape)
                for name, dtype, shape in re.findall(
                    r"\w+\['(\w+)'\] tensor_info:\s+dtype: (\w+)\s+shape: (\([^)]*\))", section
                )
            }
            for kind, section in zip(("inputs", "outputs"), sections)
        }
    return signatures


@pytest.mark.slow
def test_saved_model_cli_shows_the_signatures(cli_export):
    export_dir, _ = cli_export
    images = {"images": ("DT_UINT8", "(-1, 16, 12, 3)")}
    classification = {
        "probabilities": ("DT_FLOAT", "(-1, 7)"),
        "classes": ("DT_INT64", "(-1)"),
        "top_k_classes": ("DT_INT64", "(-1, 5)"),
        "top_k_probabilities": ("DT_FLOAT", "(-1, 5)"),
    }
    fused = _saved_model_cli_signatures(os.path.join(export_dir, f"{NAME}_fused", "1"))
    assert fused["serving_default"] == {"inputs": images, "outputs": classification}
    assert fused["features"] == {
        "inputs": images,
        "outputs": {"fused_features": ("DT_FLOAT", "(-1, 4, 3, 64)")},
    }
    sub = _saved_model_cli_signatures(os.path.join(export_dir, f"{NAME}_sub2", "1"))
    assert sub["serving_default"] == {"inputs": images, "outputs": classification}
    assert "features" not in sub


@pytest.mark.slow
def test_wrong_dtype_and_shape_are_refused(cli_export):
    export_dir, _ = cli_export
    signature = tf.saved_model.load(os.path.join(export_dir, f"{NAME}_sub1", "1")).signatures[
        "serving_default"
    ]
    with pytest.raises(tf.errors.InvalidArgumentError, match="expected to be a uint8 tensor"):
        signature(images=tf.zeros((2, *IMAGE_SHAPE), tf.float32))
    wrong_shapes = [(2, 12, 16, 3), (2, 32, 24, 3), (2, 16, 12, 1), IMAGE_SHAPE]
    for shape in wrong_shapes:
        with pytest.raises(
            tf.errors.InvalidArgumentError,
            match=r"must be uint8 pixels of shape \[batch, 16, 12, 3\]",
        ):
            signature(images=tf.zeros(shape, tf.uint8))


_LOAD_WITHOUT_KERAS_FFL = textwrap.dedent(
    """
    import importlib.abc, sys

    class BlockKerasFFL(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] == "keras_ffl":
                raise ModuleNotFoundError(f"No module named {name!r} (blocked)")

    sys.meta_path.insert(0, BlockKerasFFL())
    try:
        import keras_ffl
    except ModuleNotFoundError:
        pass
    else:
        sys.exit("keras_ffl is importable; the test would prove nothing")

    import keras, numpy as np

    export_dir, inputs_path = sys.argv[1:]
    x = np.load(inputs_path)
    for stem in ("tiny_sub1", "tiny_sub1_backbone", "tiny_sub2"):
        model = keras.saving.load_model(f"{export_dir}/{stem}.keras", safe_mode=True)
        np.save(f"{inputs_path}.{stem}.npy", model.predict(x, verbose=0))
    try:
        keras.saving.load_model(f"{export_dir}/tiny_fused.keras", safe_mode=True)
    except Exception as error:
        print("fused refused:", type(error).__name__)
    """
)


@pytest.mark.slow
def test_keras_subnetworks_load_without_keras_ffl(cli_export, network, tmp_path):
    export_dir, _ = cli_export
    x = _normalised(_images(seed=3))
    inputs_path = str(tmp_path / "x.npy")
    np.save(inputs_path, x)
    env = {key: value for key, value in _subprocess_env().items() if key != "PYTHONPATH"}
    completed = subprocess.run(
        [sys.executable, "-c", _LOAD_WITHOUT_KERAS_FFL, export_dir, inputs_path],
        capture_output=True, text=True, env=env, cwd=str(tmp_path), timeout=300,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "fused refused:" in completed.stdout
    logits = network(x, training=False)
    np.testing.assert_allclose(np.load(f"{inputs_path}.tiny_sub1.npy"), logits["sub1"], atol=1e-5)
    np.testing.assert_allclose(np.load(f"{inputs_path}.tiny_sub2.npy"), logits["sub2"], atol=1e-5)
    np.testing.assert_allclose(
        np.load(f"{inputs_path}.tiny_sub1_backbone.npy"),
        _layer_output(network, "sub1_features", x),
        atol=1e-5,
    )


@pytest.mark.slow
def test_fused_keras_file_loads_with_keras_ffl(cli_export, network):
    export_dir, _ = cli_export
    fused = keras.saving.load_model(os.path.join(export_dir, f"{NAME}_fused.keras"))
    x = _normalised(_images())
    np.testing.assert_allclose(fused(x), network(x, training=False)["fused"], atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("imports", ["import keras_ffl, keras", "import keras, keras_ffl"])
def test_import_keras_ffl_lets_keras_load_the_fused_file_in_either_order(cli_export, imports):
    """`import keras_ffl` does not import Keras itself, yet registers its classes with it."""
    export_dir, _ = cli_export
    code = f"{imports}; keras.saving.load_model({export_dir!r} + '/{NAME}_fused.keras')"
    completed = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=_subprocess_env()
    )
    assert completed.returncode == 0, completed.stderr[-3000:]


def _parse_models_config(text):
    """[(name, base_path, platform)] of a text-format ModelServerConfig."""
    try:
        from google.protobuf import text_format
        from tensorflow_serving.config import model_server_config_pb2
    except ImportError:
        body = re.fullmatch(r"\s*model_config_list\s*\{((?:\s*config\s*\{[^{}]*\})*)\s*\}\s*", text)
        assert body, f"not a model_config_list of config entries:\n{text}"
        entries = [dict(re.findall(r'(\w+):\s*"([^"]*)"', block))
                   for block in re.findall(r"config\s*\{([^{}]*)\}", body[1])]  # fmt: skip
        return [(e["name"], e["base_path"], e["model_platform"]) for e in entries]
    config = text_format.Parse(text, model_server_config_pb2.ModelServerConfig())
    return [(c.name, c.base_path, c.model_platform) for c in config.model_config_list.config]


@pytest.mark.slow
def test_models_config_names_every_model(cli_export):
    export_dir, _ = cli_export
    with open(os.path.join(export_dir, "models.config")) as file:
        entries = _parse_models_config(file.read())
    assert entries == [(m, os.path.join(export_dir, m), "tensorflow") for m in MODELS]
    assert all(os.path.isabs(base_path) for _, base_path, _ in entries)


# Versions, refusal and failure.


@pytest.mark.slow
def test_versions_are_added_never_overwritten_unless_asked(tmp_path, network):
    export_dir = str(tmp_path / "export")
    kwargs = dict(mean=MEAN, std=STD)
    assert export_savedmodels(network, export_dir, NAME, **kwargs).version == 1
    first = snapshot(export_dir)
    assert export_savedmodels(network, export_dir, NAME, **kwargs).version == 2
    after_second = snapshot(export_dir)
    version_dirs = tuple(os.path.join(model, "1") + os.sep for model in MODELS)
    assert any(path.startswith(version_dirs) for path in first)
    for path, state in first.items():
        if path.startswith(version_dirs):  # The .keras files follow the newest export.
            assert after_second[path] == state, path
    for model in MODELS:
        assert sorted(os.listdir(os.path.join(export_dir, model))) == ["1", "2"]

    with pytest.raises(FileExistsError, match="Version 1 already exists.*overwrite") as error:
        export_savedmodels(network, export_dir, NAME, version=1, **kwargs)
    assert "pass --overwrite to replace it" in error.value.with_flag()
    assert snapshot(export_dir) == after_second
    assert not [entry for entry in os.listdir(export_dir) if entry.startswith(".")]

    # A model exported earlier under another name stays in models.config.
    shutil.copytree(
        os.path.join(export_dir, f"{NAME}_sub1", "1"), os.path.join(export_dir, "other", "3")
    )
    export_savedmodels(network, export_dir, NAME, version=1, overwrite=True, **kwargs)
    after_overwrite = snapshot(export_dir)
    version_1 = os.path.join(f"{NAME}_sub1", "1", "saved_model.pb")
    version_2 = os.path.join(f"{NAME}_sub1", "2", "saved_model.pb")
    assert after_overwrite[version_1][1] != after_second[version_1][1]
    assert after_overwrite[version_2] == after_second[version_2]
    with open(os.path.join(export_dir, "models.config")) as file:
        names = [name for name, _, _ in _parse_models_config(file.read())]
    assert names == sorted([*MODELS, "other"])


@pytest.mark.slow
def test_failed_verification_installs_nothing(tmp_path, network, monkeypatch):
    export_dir = tmp_path / "export"
    reference = exporter.keras_probabilities
    monkeypatch.setattr(exporter, "keras_probabilities", lambda *args: reference(*args) + 1e-3)
    with pytest.raises(ExportVerificationError, match=r"tiny_fused disagrees.*Nothing was"):
        export_savedmodels(network, str(export_dir), NAME, mean=MEAN, std=STD)
    assert os.listdir(export_dir) == []
