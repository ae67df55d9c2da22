"""LiteRT export: every head in every variant, verified with the LiteRT interpreter on real
Fashion-MNIST images, installed through the export's journal (TensorFlow Lite's
post-training quantisation: float16, dynamic-range int8, full-integer int8)."""

import collections
import json
import os
import re
import signal
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
from ai_edge_litert import schema_py_generated as schema
from ai_edge_litert.interpreter import Interpreter
from filetree import snapshot

from keras_ffl import data, get_method, training
from keras_ffl.export import (
    LiteRTConversionError,
    LiteRTFormat,
    export_litert,
    export_model_dir,
    extract_subnetwork,
    layout,
    litert,
)
from keras_ffl.heads import network_heads, sub_index

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NAME = "tiny"
HEADS = ("fused", "sub1", "sub2")
VERIFY_IMAGES = 300
REPRESENTATIVE_IMAGES = 32


def _format(**overrides):
    """The LiteRT format of the tests: few verification and calibration images."""
    settings = dict(verify_images=VERIFY_IMAGES, representative_images=REPRESENTATIVE_IMAGES)
    return LiteRTFormat("fashion_mnist", **{**settings, **overrides})


def _test_images(count):
    """The first `count` real Fashion-MNIST test images, uint8 [n, 28, 28, 1], and labels."""
    images, labels = data.read_idx_split(data.FASHION_MNIST_DIR, "test")
    return images[:count, ..., None], labels[:count]


def _keras_probabilities(network, head, images, config):
    x = (images.astype(np.float32) - np.float32(config["mean"])) / np.float32(config["std"])
    return keras.ops.convert_to_numpy(keras.ops.softmax(network(x, training=False)[head]))


def _litert_outputs(path, images):
    runner = Interpreter(model_path=path).get_signature_runner("serving_default")
    return runner(images=images)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """(model_dir, config) of a short FFL run of half-width ResNet-8s on real Fashion-MNIST."""
    config = training.resolve_config(
        "fashion_mnist", arch=("resnet8x0.5",), epochs=1, steps_per_epoch=60,
        validation_steps=1, batch_size=64, eval_batch_size=100, rampup_epochs=1,
    )  # fmt: skip
    model_dir = str(tmp_path_factory.mktemp("runs") / NAME)
    training.train(config, model_dir, verbose=0)
    return model_dir, config.to_json()


@pytest.fixture(scope="module")
def network(run):
    model_dir, _ = run
    return keras.saving.load_model(os.path.join(model_dir, "best.keras"), compile=False).network


@pytest.fixture(scope="module")
def exported(run, tmp_path_factory):
    """(export_dir, ExportResult) of the run exported with every LiteRT variant."""
    model_dir, _ = run
    export_dir = str(tmp_path_factory.mktemp("export") / "export")
    return export_dir, export_model_dir(model_dir, export_dir, formats=[_format()])


def _file(head, variant):
    return f"{NAME}_{head}_{variant}.tflite"


@pytest.mark.slow
def test_every_head_is_written_in_every_variant_and_verified(exported):
    export_dir, result = exported
    files = {_file(head, variant) for head in HEADS for variant in litert.VARIANTS}
    assert set(os.listdir(os.path.join(export_dir, litert.LITERT_DIR))) == files | {
        f"{NAME}_litert.json"
    }
    with open(os.path.join(export_dir, layout.CONFIG_FILE)) as file:
        config_text = file.read()
    assert "litert" not in config_text and config_text.count("name:") == len(HEADS)

    with open(os.path.join(export_dir, litert.LITERT_DIR, f"{NAME}_litert.json")) as file:
        report = json.load(file)["models"]
    assert {entry["file"] for entry in report} == files
    summary = result.summary()
    for entry in report:  # Accuracy within the default threshold: every variant installed.
        assert entry["installed"] and entry["images"] == VERIFY_IMAGES, entry
        assert 100 * (entry["keras_accuracy"] - entry["accuracy"]) <= 1.0, entry
        assert entry["accuracy"] > 0.5 and entry["latency_ms"] > 0, entry
        size = os.path.getsize(os.path.join(export_dir, litert.LITERT_DIR, entry["file"]))
        assert entry["size_bytes"] == size
        assert entry["file"] in summary and "NOT INSTALLED" not in summary
    sizes = {entry["file"]: entry["size_bytes"] for entry in report}
    for head in HEADS:  # Quantising shrinks the file.
        assert sizes[_file(head, "int8")] < sizes[_file(head, "float16")] < sizes[
            _file(head, "float32")
        ]


@pytest.mark.slow
def test_float32_models_equal_keras_on_real_fashion_mnist(exported, network, run):
    export_dir, _ = exported
    images, _ = _test_images(200)
    for head in HEADS:
        expected = _keras_probabilities(network, head, images, run[1])
        path = os.path.join(export_dir, litert.LITERT_DIR, _file(head, "float32"))
        outputs = _litert_outputs(path, images)
        assert np.max(np.abs(outputs["probabilities"] - expected)) <= 1e-5, head
        np.testing.assert_array_equal(outputs["classes"], expected.argmax(axis=1))
        np.testing.assert_array_equal(
            outputs["top_k_classes"][:, 0], outputs["classes"]
        )


def _weight_types(path):
    """[(weight values, tensor type name)] of the filters of every convolution and dense layer,
    read from the .tflite flatbuffer."""
    with open(path, "rb") as file:
        model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(file.read(), 0))
    type_names = {v: k for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
    weighted = {
        schema.BuiltinOperator.CONV_2D,
        schema.BuiltinOperator.DEPTHWISE_CONV_2D,
        schema.BuiltinOperator.FULLY_CONNECTED,
    }
    graph = model.subgraphs[0]
    found = []
    for operator in graph.operators:
        code = model.operatorCodes[operator.opcodeIndex]
        if max(code.builtinCode, code.deprecatedBuiltinCode) in weighted:
            tensor = graph.tensors[operator.inputs[1]]
            found.append((int(np.prod(tensor.shape)), type_names[tensor.type]))
    return found


@pytest.mark.slow
def test_int8_models_store_int8_weights(exported):
    export_dir, _ = exported
    for head in HEADS:
        path = lambda variant: os.path.join(export_dir, litert.LITERT_DIR, _file(head, variant))
        full = _weight_types(path("int8"))
        assert full and {kind for _, kind in full} == {"INT8"}, (head, full)
        # Dynamic range quantises every weight tensor of 1024 values or more (TFLite's rule).
        dynamic = _weight_types(path("dynamic_int8"))
        large = {kind for size, kind in dynamic if size >= 1024}
        assert large == {"INT8"}, (head, dynamic)
        assert {kind for _, kind in _weight_types(path("float32"))} == {"FLOAT32"}
    interpreter = Interpreter(model_path=path("int8"))
    types = collections.Counter(d["dtype"].__name__ for d in interpreter.get_tensor_details())
    assert types["int8"] > types["float32"]  # Activations too: float only at the outputs.
    assert interpreter.get_input_details()[0]["dtype"] == np.uint8


@pytest.mark.slow
def test_export_litert_converts_one_head_or_a_standalone_subnetwork(run, network):
    _, config = run
    images, labels = _test_images(100)
    kwargs = dict(mean=config["mean"], std=config["std"], images=images, labels=labels)
    model_bytes, figures = export_litert(network, "float32", head="sub2", **kwargs)
    expected = _keras_probabilities(network, "sub2", images, config)
    probabilities = Interpreter(model_content=model_bytes).get_signature_runner()(images=images)
    assert np.max(np.abs(probabilities["probabilities"] - expected)) <= 1e-5
    assert figures.size_bytes == len(model_bytes) and figures.images == 100
    assert figures.agreement == 1.0 and figures.accuracy == figures.keras_accuracy
    assert figures.max_probability_difference <= 1e-5

    standalone = extract_subnetwork(network, 1)
    model_bytes, figures = export_litert(
        standalone, "int8", representative_images=images[:16], **kwargs
    )
    assert figures.variant == "int8" and figures.size_bytes == len(model_bytes)
    assert figures.agreement >= 0.9
    with pytest.raises(ValueError, match="head is needed for a model of several heads"):
        export_litert(network, "float32", **kwargs)
    with pytest.raises(ValueError, match="variant='int4' is not a LiteRT variant"):
        export_litert(standalone, "int4", **kwargs)
    with pytest.raises(ValueError, match="full-integer int8 needs representative_images"):
        export_litert(standalone, "int8", **kwargs)


@pytest.mark.slow
def test_a_variant_losing_accuracy_is_reported_and_installed_only_if_allowed(
    run, tmp_path, monkeypatch
):
    model_dir, _ = run
    verify = litert.verify

    def worse(model_bytes, variant, expected, images, labels):
        figures = verify(model_bytes, variant, expected, images, labels)
        figures.accuracy -= 0.02  # Two points below Keras.
        return figures

    monkeypatch.setattr(litert, "verify", worse)
    export_dir = str(tmp_path / "export")
    only = dict(variants=("dynamic_int8",), max_accuracy_drop=1.5)
    result = export_model_dir(model_dir, export_dir, formats=[_format(**only)])
    assert sorted(os.listdir(os.path.join(export_dir, litert.LITERT_DIR))) == [
        f"{NAME}_litert.json"
    ]
    assert result.summary().count("NOT INSTALLED: accuracy drop") == len(HEADS)
    assert "> 1.5 (allow_accuracy_drop installs it)" in result.summary()

    export_model_dir(model_dir, export_dir, formats=[_format(allow_accuracy_drop=True, **only)])
    assert {_file(head, "dynamic_int8") for head in HEADS} < set(
        os.listdir(os.path.join(export_dir, litert.LITERT_DIR))
    )


def _export_tool(*flags):
    """tools/export.py run as a user runs it (TensorFlow's log level left to the tool)."""
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env["PYTHONPATH"] = REPO
    return subprocess.run(
        [sys.executable, os.path.join(REPO, "tools", "export.py"), *flags],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip


@pytest.mark.slow
def test_the_export_tool_writes_verifies_and_prints_the_litert_models(run, tmp_path):
    model_dir, _ = run
    export_dir = str(tmp_path / "export")
    completed = _export_tool(
        f"--model_dir={model_dir}", f"--export_dir={export_dir}", "--litert",
        "--litert_variants=float32,dynamic_int8", "--verify_images=40",
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "verified with the interpreter on 40 test images" in completed.stdout
    # Only the tool's own lines: not the converter's, the interpreter's or tf.data's.
    for chatter in ("fully_quantize", "XNNPACK", "Changing the value of option"):
        assert chatter not in completed.stdout + completed.stderr
    for head in HEADS:
        for variant in ("float32", "dynamic_int8"):
            assert re.search(rf"\n    {re.escape(_file(head, variant))} +\d+\.\d ", completed.stdout)
            assert os.path.isfile(os.path.join(export_dir, litert.LITERT_DIR, _file(head, variant)))

    refused = _export_tool(f"--model_dir={model_dir}", "--verify_images=40")
    assert refused.returncode != 0
    assert "--verify_images applies to LiteRT models: add --litert." in refused.stderr


_KILLED_EXPORT = textwrap.dedent(
    """
    import os, signal, sys
    from keras_ffl.export import export_model_dir, litert

    model_dir, export_dir = sys.argv[1:]
    verify, calls = litert.verify, []

    def verify_then_die(*args):
        calls.append(1)
        if len(calls) == 3:  # Three LiteRT models staged: die in the middle.
            os.kill(os.getpid(), signal.SIGKILL)
        return verify(*args)

    litert.verify = verify_then_die
    export_model_dir(model_dir, export_dir, formats=[litert.LiteRTFormat(
        "fashion_mnist", variants=("float32", "float16"), verify_images=50)])
    """
)


@pytest.mark.slow
def test_a_killed_litert_export_leaves_the_export_directory_as_it_was(exported, run, tmp_path):
    model_dir, _ = run
    export_dir = str(tmp_path / "export")
    subprocess.run(["cp", "-a", exported[0], export_dir], check=True)
    before = snapshot(export_dir)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=REPO)
    killed = subprocess.run(
        [sys.executable, "-c", _KILLED_EXPORT, model_dir, export_dir],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    [staging] = [entry for entry in os.listdir(export_dir) if layout.STAGING_INFIX in entry]
    assert any(
        name.endswith(".tflite") for _, _, names in os.walk(os.path.join(export_dir, staging))
        for name in names
    )  # fmt: skip
    left = {path: state for path, state in snapshot(export_dir).items()
            if not path.startswith(staging) and path != layout.LOCK_FILE}  # fmt: skip
    assert left == before  # The lock file stays, its lock gone with the process.

    with layout.exclusive(export_dir) as recovered:  # What the next export does first.
        assert recovered == [
            f"removed the staging directory of an export that died: {staging}"
        ]
    assert snapshot(export_dir) == before


def _odd_classifier():
    """A classifier with a layer computing erfinv, which LiteRT has no kernel for."""
    inputs = keras.Input((4, 4, 1))
    x = keras.layers.Flatten()(inputs)
    x = keras.layers.Lambda(lambda t: keras.ops.erfinv(keras.ops.tanh(t)))(x)
    return keras.Model(inputs, keras.layers.Dense(3)(x), name="odd")


def test_an_op_litert_cannot_convert_gets_a_one_line_error_naming_it():
    images = np.random.default_rng(0).integers(0, 256, (4, 4, 4, 1), dtype=np.uint8)
    with pytest.raises(LiteRTConversionError) as error:
        export_litert(
            _odd_classifier(), "float32", mean=[100.0], std=[50.0], images=images,
            labels=np.zeros(4, int),
        )  # fmt: skip
    message = str(error.value)
    assert "\n" not in message
    assert "the odd head: TensorFlow op Erfinv has no LiteRT builtin kernel" in message
    assert "ship this head as a SavedModel only" in message


@pytest.mark.slow
@pytest.mark.parametrize(
    "method, arch, input_shape, branches",
    [
        ("one", "resnet8", (16, 12, 3), 2),  # CIFAR ResNet family, ONE's gated head.
        ("ensemble", "wrn10_0.5", (16, 12, 3), 2),  # Wide ResNet family, the ensemble's mean.
        ("dualnet", "resnet8x0.5", (16, 12, 3), 2),  # DualNet's avg and fused heads.
        ("vanilla", "resnet18", (32, 32, 3), 1),  # ImageNet ResNet family.
    ],
)
def test_every_methods_heads_and_every_backbone_family_convert(
    method, arch, input_shape, branches
):
    network = get_method(method).create((arch,), 5, input_shape, branches=branches).network
    images = np.random.default_rng(1).integers(0, 256, (6, *input_shape), dtype=np.uint8)
    mean, std = [120.0] * input_shape[-1], [60.0] * input_shape[-1]
    # A sub-network and every combined head: the other sub-networks are copies of sub1.
    heads = [h for h in network_heads(network) if sub_index(h) in (None, 1)]
    for head in heads:
        _, figures = export_litert(
            network, "float32", head=head, mean=mean, std=std, images=images,
            labels=np.zeros(6, int),
        )  # fmt: skip
        assert figures.max_probability_difference <= 1e-5, head
