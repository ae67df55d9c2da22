"""Export under faults: heads installed all or none across a kill, stale staging removed,
checkpoint errors that name the problem, served signatures that take an empty batch."""

import json
import os
import signal
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_ffl import build_ffl_network, run_dir
from keras_ffl.export import export_savedmodels, extract_fused, layout, load_checkpoint, serving

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NAME = "net"
HEADS = ("fused", "sub1", "sub2")
KERAS_FILES = tuple(f"{NAME}_{head}.keras" for head in HEADS)


def subprocess_env():
    return dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=REPO)


# All heads or none: the install journal ----------------------------------------


def fake_export(export_dir, version, content, overwrite=False):
    """What an export stages and installs, with small files standing in for the models."""
    with layout.exclusive(export_dir), layout.staging(export_dir, NAME) as stage:
        paths = []
        for head in HEADS:
            relative = os.path.join(f"{NAME}_{head}", str(version))
            os.makedirs(os.path.join(stage, relative, "variables"))
            with open(os.path.join(stage, relative, layout.SAVED_MODEL_FILE), "w") as f:
                f.write(content)
            paths.append(relative)
        for file_name in KERAS_FILES:
            with open(os.path.join(stage, file_name), "w") as f:
                f.write(content)
        layout.install_all(export_dir, stage, paths + list(KERAS_FILES), version, overwrite)


def installed(export_dir):
    """{model or file: content} of what a server or a Keras app would find."""
    found = {}
    for head in HEADS:
        base = os.path.join(export_dir, f"{NAME}_{head}")
        for version in layout.versions(base):
            with open(os.path.join(base, str(version), layout.SAVED_MODEL_FILE)) as f:
                found[f"{head} v{version}"] = f.read()
    for file_name in KERAS_FILES:
        with open(os.path.join(export_dir, file_name)) as f:
            found[file_name] = f.read()
    return found


class Killed(BaseException):
    """Stands for SIGKILL: no `except Exception` catches it."""


def kill_at(monkeypatch, step):
    """Makes the `step`-th rename or removal from now on raise Killed instead of happening.

    The lock file's removal does not count: the kernel drops a killed process's lock.
    """
    calls = {"count": 0}
    for name in ("rename", "replace", "remove"):
        original = getattr(os, name)

        def counted(path, *args, _original=original, **kwargs):
            if not str(path).endswith(layout.LOCK_FILE):
                calls["count"] += 1
                if calls["count"] == step:
                    raise Killed
            return _original(path, *args, **kwargs)

        monkeypatch.setattr(os, name, counted)
    return calls


@pytest.mark.parametrize("overwrite", [False, True])
def test_a_kill_at_any_step_of_an_install_leaves_all_heads_or_none(tmp_path, monkeypatch,
                                                                   overwrite):  # fmt: skip
    new_version = 1 if overwrite else 2
    after = {**installed_state(1, "old"), **installed_state(new_version, "new")}
    before = installed_state(1, "old")
    outcomes = set()
    for step in range(1, 100):
        export_dir = str(tmp_path / f"kill{step}")
        fake_export(export_dir, 1, "old")
        with monkeypatch.context() as patch:
            calls = kill_at(patch, step)
            try:
                fake_export(export_dir, new_version, "new", overwrite=overwrite)
            except Killed:
                pass
        # The next export (here: its lock, which recovers first) finishes or drops it.
        with layout.exclusive(export_dir):
            pass
        state = installed(export_dir)
        assert state in (before, after), f"killed at step {step}: {state}"
        outcomes.add("all" if state == after else "none")
        assert [e for e in os.listdir(export_dir) if e.startswith(".")] == []
        with open(os.path.join(export_dir, layout.CONFIG_FILE)) as f:
            assert f.read().count("name:") == len(HEADS)
        if calls["count"] < step:  # This export finished before the kill: every step is tried.
            break
    assert outcomes == {"all", "none"}, "no step both before and after the commit was tried"


def installed_state(version, content):
    state = {f"{head} v{version}": content for head in HEADS}
    return {**state, **{file_name: content for file_name in KERAS_FILES}}


@pytest.mark.slow
def test_a_sigkill_between_head_installs_is_finished_by_the_next_export(tmp_path):
    """The same with a real SIGKILL, after the first head is installed."""
    export_dir = str(tmp_path / "export")
    script = textwrap.dedent(
        f"""
        import os, signal, sys
        sys.path.insert(0, {os.path.join(REPO, "tests")!r})
        from test_faults_export import fake_export
        replace = os.replace
        def die_before_sub1(source, destination):
            if destination.endswith(os.path.join("{NAME}_sub1", "2")):
                os.kill(os.getpid(), signal.SIGKILL)
            replace(source, destination)
        os.replace = die_before_sub1
        fake_export({export_dir!r}, 2, "new")
        """
    )
    fake_export(export_dir, 1, "old")
    killed = subprocess.run([sys.executable, "-c", script], env=subprocess_env())
    assert killed.returncode == -signal.SIGKILL
    state = installed(export_dir)
    assert "fused v2" in state and "sub1 v2" not in state  # Killed between two heads.

    with layout.exclusive(export_dir) as recovered:
        assert len(recovered) == 1 and "finished the interrupted install of version 2" in (
            recovered[0]
        )
    assert installed(export_dir) == {**installed_state(1, "old"), **installed_state(2, "new")}


def test_staging_directories_are_removed_only_once_their_export_is_dead(tmp_path):
    export_dir = str(tmp_path / "export")
    fake_export(export_dir, 1, "old")
    staging = os.path.join(export_dir, f".{NAME}{layout.STAGING_INFIX}abcd1234")
    os.makedirs(os.path.join(staging, f"{NAME}_fused", "2"))
    with open(os.path.join(staging, f"{NAME}_fused", "2", layout.SAVED_MODEL_FILE), "wb") as f:
        f.write(os.urandom(1024))
    with run_dir.lock(export_dir, layout.LOCK_FILE):  # Its export is alive, staging.
        with pytest.raises(run_dir.RunError, match=f"in use by process {os.getpid()}"):
            with layout.exclusive(export_dir):
                pass
        assert os.path.isdir(staging)

    # Its export died: the next one removes what it staged, and installs nothing of it.
    with layout.exclusive(export_dir) as recovered:
        assert recovered == [f"removed the staging directory of an export that died: "
                             f"{os.path.basename(staging)}"]  # fmt: skip
    assert not os.path.exists(staging)
    assert installed(export_dir) == installed_state(1, "old")


@pytest.mark.slow
def test_an_export_killed_between_heads_is_completed_by_the_next(tmp_path, monkeypatch):
    network = build_ffl_network("resnet8", 5, (8, 8, 3))
    export_dir = str(tmp_path / "export")
    original = os.replace

    def replace_then_die(source, destination):
        if destination.endswith(os.path.join(f"{NAME}_sub1", "1")):  # After the fused head.
            raise Killed
        original(source, destination)

    with monkeypatch.context() as patch:
        patch.setattr(os, "replace", replace_then_die)
        with pytest.raises(Killed):
            export_savedmodels(network, export_dir, NAME, mean=(120.0,) * 3, std=(60.0,) * 3)
    assert layout.versions(os.path.join(export_dir, f"{NAME}_sub1")) == []
    [staging] = [e for e in os.listdir(export_dir) if layout.STAGING_INFIX in e]

    with layout.exclusive(export_dir) as recovered:  # What the next export does first.
        assert recovered == [f"finished the interrupted install of version 1 ({staging})"]
    images = np.zeros((2, 8, 8, 3), np.uint8)
    for head in HEADS:
        loaded = tf.saved_model.load(os.path.join(export_dir, f"{NAME}_{head}", "1"))
        assert loaded.signatures["serving_default"](images=images)["probabilities"].shape == (2, 5)
    assert sorted(os.listdir(export_dir)) == sorted(
        [f"{NAME}_{head}" for head in HEADS] + [layout.CONFIG_FILE] + [
            f"{NAME}_{head}{suffix}.keras" for head in HEADS
            for suffix in ("", "_backbone") if head != "fused" or not suffix
        ]
    )


# Checkpoint errors ---------------------------------------------------------------


def run_dir_with(path, **files):
    os.makedirs(path)
    config = {"mean": [1.0], "std": [1.0], "image_shape": [8, 8, 1]}
    with open(os.path.join(path, run_dir.CONFIG_FILE), "w") as f:
        json.dump(config, f)
    for name, content in files.items():
        with open(os.path.join(path, f"{name}.keras"), "wb") as f:
            f.write(content)
    return str(path)


def test_a_damaged_best_checkpoint_says_so_and_suggests_the_last(tmp_path):
    path = run_dir_with(tmp_path / "run", best=b"PK\x03\x04 truncated", last=b"anything")
    with pytest.raises(ValueError) as error:
        load_checkpoint(path)
    message = error.value.with_flag()
    assert message.startswith(f"{path}/best.keras is damaged")
    assert "File not found" not in message
    assert message.endswith("— export last.keras instead with --checkpoint=last")
    assert str(error.value).endswith("with checkpoint=last")


def test_a_run_without_checkpoints_says_it_has_none(tmp_path):
    path = run_dir_with(tmp_path / "run")
    no_checkpoint = "holds no checkpoint .best.keras or last.keras.: its run has not completed"
    with pytest.raises(FileNotFoundError, match=no_checkpoint):
        load_checkpoint(path)
    with open(os.path.join(path, "last.keras"), "wb") as f:
        f.write(b"the last epoch's model")
    with pytest.raises(ValueError) as error:
        load_checkpoint(path, "best")
    assert error.value.with_flag() == (
        f"{path}/best.keras does not exist — export last.keras instead with --checkpoint=last"
    )


@pytest.mark.slow
def test_the_export_tool_reports_a_damaged_checkpoint_in_one_line(tmp_path):
    path = run_dir_with(tmp_path / "run", best=b"not a zip", last=b"anything")
    result = subprocess.run(
        [sys.executable, os.path.join(REPO, "tools", "export.py"), f"--model_dir={path}",
         f"--export_dir={tmp_path / 'export'}"],
        env=subprocess_env(), capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1] == (
        f"export failed: {path}/best.keras is damaged: it is not a .keras (zip) archive, as a "
        "copy or a write cut short leaves it — export last.keras instead with --checkpoint=last"
    )
    assert "Traceback" not in result.stderr


# Empty batches --------------------------------------------------------------------


class NonEmptyBatch(keras.layers.Layer):
    """Fails on an empty batch, as oneDNN's BatchNorm kernel does."""

    def call(self, x):
        tf.debugging.assert_positive(tf.shape(x)[0], message="empty batch")
        return x


def test_served_signatures_return_empty_outputs_for_an_empty_batch(tmp_path):
    inputs = keras.Input((6, 4, 3))
    features = keras.layers.Conv2D(5, 3, name="head_features")(NonEmptyBatch()(inputs))
    logits = keras.layers.Dense(7)(keras.layers.GlobalAveragePooling2D()(features))
    classifier = keras.Model(inputs, logits)
    archive = serving.build_archive(classifier, (6, 4, 3), (0.0,) * 3, (1.0,) * 3,
                                    features=("head_features", "head_features"))  # fmt: skip
    archive.write_out(str(tmp_path / "model"), verbose=False)
    loaded = tf.saved_model.load(str(tmp_path / "model"))

    empty = tf.zeros((0, 6, 4, 3), tf.uint8)
    outputs = loaded.signatures["serving_default"](images=empty)
    shapes = {key: tuple(value.shape) for key, value in outputs.items()}
    assert shapes == {"probabilities": (0, 7), "classes": (0,), "top_k_classes": (0, 5),
                      "top_k_probabilities": (0, 5)}  # fmt: skip
    assert outputs["classes"].dtype == tf.int64
    assert loaded.signatures["features"](images=empty)["head_features"].shape == (0, 4, 2, 5)
    # A batch of images is unchanged, and an empty batch of the wrong size is still refused.
    images = np.random.default_rng(0).integers(0, 256, (3, 6, 4, 3), dtype=np.uint8)
    expected = keras.ops.softmax(classifier(images.astype(np.float32))).numpy()
    served = loaded.signatures["serving_default"](images=images)["probabilities"]
    np.testing.assert_allclose(served, expected, atol=1e-6)
    with pytest.raises(tf.errors.InvalidArgumentError, match="must be uint8 pixels of shape"):
        loaded.signatures["serving_default"](images=tf.zeros((0, 5, 4, 3), tf.uint8))


@pytest.mark.slow
def test_a_network_serves_an_empty_batch_with_onednn(tmp_path):
    """oneDNN's kernels (TF_ENABLE_ONEDNN_OPTS=1) fail on an empty batch inside BatchNorm."""
    classifier = extract_fused(build_ffl_network("resnet8", 5, (8, 8, 3)))
    archive = serving.build_archive(classifier, (8, 8, 3), (120.0,) * 3, (60.0,) * 3)
    archive.write_out(str(tmp_path / "model"), verbose=False)
    script = textwrap.dedent(
        """
        import sys
        import tensorflow as tf
        loaded = tf.saved_model.load(sys.argv[1])
        outputs = loaded.signatures["serving_default"](images=tf.zeros((0, 8, 8, 3), tf.uint8))
        print(outputs["probabilities"].shape)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "model")],
        env={**subprocess_env(), "TF_ENABLE_ONEDNN_OPTS": "1"}, capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "(0, 5)"


def test_a_float_batch_or_another_size_is_refused_with_the_documented_line_first(tmp_path):
    inputs = keras.Input((6, 4, 3))
    classifier = keras.Model(inputs, keras.layers.Dense(7)(keras.layers.Flatten()(inputs)))
    archive = serving.build_archive(classifier, (6, 4, 3), (0.0,) * 3, (1.0,) * 3)
    archive.write_out(str(tmp_path / "model"), verbose=False)
    loaded = tf.saved_model.load(str(tmp_path / "model"))

    documented = r"^'images' must be uint8 pixels of shape \[batch, 6, 4, 3\] \(images are not"
    for images, got in [
        (np.zeros((2, 6, 4, 3), np.float32), r"got float32 of shape \[2, 6, 4, 3\]$"),
        (np.zeros((2, 5, 4, 3), np.uint8), r"got uint8 of shape \[2, 5, 4, 3\]$"),
        (np.zeros((6, 4, 3), np.uint8), r"got uint8 of shape \[6, 4, 3\]$"),
    ]:
        with pytest.raises(ValueError, match=f"{documented}.*; {got}"):
            serving.serve_probabilities(loaded, images)
    assert serving.serve_probabilities(loaded, np.zeros((2, 6, 4, 3), np.uint8)).shape == (2, 7)
