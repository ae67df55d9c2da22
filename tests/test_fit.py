"""Tests of the training command: outputs, resume after SIGKILL, multi-worker, bad inputs."""

import csv
import dataclasses
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
import zipfile

import h5py
import keras
import numpy as np
import pytest
from fakedata import write_folder, write_idx
from filetree import snapshot

from keras_ffl import FFLModel, distribute, recipes, run_dir, sigmoid_rampup, training

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: A run small enough for a few seconds on a CPU.
TINY = dict(arch=("resnet8",), epochs=2, batch_size=32, eval_batch_size=16, rampup_epochs=2)
HEADS = ("sub1", "sub2", "fused", "ensemble", "sub_mean")
OUTPUTS = {
    run_dir.CONFIG_FILE,
    run_dir.STATE_FILE,
    run_dir.HISTORY_FILE,
    run_dir.RESULTS_FILE,
    run_dir.LAST_CHECKPOINT,
    run_dir.BEST_CHECKPOINT,
    run_dir.TENSORBOARD_DIR,
}


# Helpers ----------------------------------------------------------------------


def read_history(model_dir):
    with open(os.path.join(model_dir, run_dir.HISTORY_FILE), newline="") as f:
        return list(csv.DictReader(f))


def read_json(model_dir, name):
    with open(os.path.join(model_dir, name)) as f:
        return json.load(f)


def subprocess_env(**extra):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", **extra)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [REPO, env.get("PYTHONPATH")]))
    return env


def fit_command(*flags):
    return [sys.executable, "-m", "keras_ffl.fit", *flags]


def free_ports(count):
    """`count` distinct ports that were free a moment ago."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


@pytest.fixture(scope="module")
def idx_data(tmp_path_factory):
    return write_idx(str(tmp_path_factory.mktemp("data") / "idx"))


@pytest.fixture(scope="module")
def good_run(tmp_path_factory, idx_data):
    """A completed 2-epoch run: (config, model_dir). Tests must copy it before changing it."""
    config = training.resolve_config(f"idx:{idx_data}", **TINY)
    model_dir = str(tmp_path_factory.mktemp("runs") / "good")
    training.train(config, model_dir, verbose=0)
    return config, model_dir


@pytest.fixture
def run_copy(good_run, tmp_path):
    config, model_dir = good_run
    copy = str(tmp_path / "copy")
    shutil.copytree(model_dir, copy)
    return config, copy


# A short fit on every local format writes every output ------------------------


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["idx", "folder", "fashion_mnist"])
def test_short_fit_writes_every_output(kind, tmp_path, idx_data):
    if kind == "idx":
        dataset, extra = f"idx:{idx_data}", {}
    elif kind == "folder":
        dataset, extra = f"folder:{write_folder(str(tmp_path / 'folder'))}", {}
    else:  # The real Fashion-MNIST, a few steps of it.
        dataset, extra = "fashion_mnist", dict(steps_per_epoch=2, validation_steps=1)
    config = training.resolve_config(dataset, **{**TINY, **extra})
    model_dir = str(tmp_path / "run")

    results = training.train(config, model_dir, verbose=0)

    assert set(os.listdir(model_dir)) == OUTPUTS
    saved = read_json(model_dir, run_dir.CONFIG_FILE)
    assert saved == config.to_json()
    assert saved["dataset"].split(":")[0] == kind
    assert saved["arch"] == ["resnet8"] and saved["branches"] == 2
    assert saved["num_classes"] == (10 if kind == "fashion_mnist" else 3)
    assert len(saved["image_shape"]) == 3 and len(saved["mean"]) == len(saved["std"])
    assert saved["image_shape"][-1] == len(saved["mean"])
    assert saved["method"] == "ffl"
    assert (saved["method_options"]["fusion"], saved["method_options"]["fusion_channels"]) == (
        "fusion",
        "min",
    )

    history = read_history(model_dir)
    assert [row["epoch"] for row in history] == ["0", "1"]
    for head in HEADS:
        assert f"val_{head}_acc" in history[0]
    state = read_json(model_dir, run_dir.STATE_FILE)
    steps = config.steps_per_epoch
    assert state["epoch"] == 2 and state["epoch_end_steps"] == {"1": steps, "2": 2 * steps}
    assert read_json(model_dir, run_dir.RESULTS_FILE) == results
    for head in HEADS:
        assert results["test_accuracy"][head]["final"] == float(history[-1][f"val_{head}_acc"])
        assert results["test_accuracy"][head]["best"] == max(
            float(row[f"val_{head}_acc"]) for row in history
        )
    assert set(os.listdir(os.path.join(model_dir, run_dir.TENSORBOARD_DIR))) == {
        "train",
        "validation",
    }
    model = keras.saving.load_model(os.path.join(model_dir, run_dir.LAST_CHECKPOINT))
    assert isinstance(model, FFLModel)
    assert int(model.optimizer.iterations) == 2 * steps


# Resume after SIGKILL ---------------------------------------------------------


@pytest.mark.slow
def test_sigkill_then_rerun_resumes_and_finishes(tmp_path, idx_data):
    model_dir = str(tmp_path / "run")
    command = fit_command(
        f"--dataset=idx:{idx_data}",
        f"--model_dir={model_dir}",
        "--arch=resnet8",
        "--epochs=6",
        "--batch_size=16",
        "--eval_batch_size=48",
        "--lr_milestones=2,4",
        "--rampup_epochs=8",
        "--verbose=2",
    )
    state_path = os.path.join(model_dir, run_dir.STATE_FILE)
    process = subprocess.Popen(
        command, env=subprocess_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and process.poll() is None:
            try:
                with open(state_path) as f:
                    if json.load(f)["epoch"] >= 1:
                        break
            except FileNotFoundError:
                pass
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
    finally:
        returncode = process.wait()
    assert returncode == -signal.SIGKILL, "the run ended before it could be killed"
    done = read_json(model_dir, run_dir.STATE_FILE)["epoch"]
    assert 1 <= done < 6
    rows_before = read_history(model_dir)[:done]

    rerun = subprocess.run(command, env=subprocess_env(), capture_output=True, text=True)

    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert f"after epoch {done} of 6" in rerun.stdout
    trained = [int(line.split()[1].split("/")[0]) for line in rerun.stdout.splitlines()
               if line.startswith("Epoch ")]
    assert trained == list(range(done + 1, 7))
    history = read_history(model_dir)
    assert [int(row["epoch"]) for row in history] == list(range(6))
    assert history[:done] == rows_before
    assert [float(row["learning_rate"]) for row in history] == pytest.approx(
        [0.1, 0.1, 0.01, 0.01, 0.001, 0.001]
    )
    assert [float(row["distill_weight"]) for row in history] == pytest.approx(
        [sigmoid_rampup(epoch, 8) for epoch in range(6)]
    )
    assert not [n for n in os.listdir(model_dir) if n.startswith(run_dir.TEMP_PREFIX)]
    model = keras.saving.load_model(os.path.join(model_dir, run_dir.LAST_CHECKPOINT))
    steps_per_epoch = 192 // 16
    assert int(model.optimizer.iterations) == 6 * steps_per_epoch
    assert float(model.optimizer.learning_rate) == pytest.approx(0.001)
    assert float(model.distill_weight) == pytest.approx(sigmoid_rampup(5, 8))
    assert read_json(model_dir, run_dir.RESULTS_FILE)["epochs"] == 6


def test_resume_takes_its_epoch_from_the_checkpoint(run_copy):
    """A kill between history.csv and last.keras, or a fallback to best.keras, resumes right."""
    config, model_dir = run_copy
    state = read_json(model_dir, run_dir.STATE_FILE)
    # As if killed while committing epoch 3: its row and step are written, last.keras is not.
    with open(os.path.join(model_dir, run_dir.HISTORY_FILE), "a") as f:
        f.write("2" + "," * (len(read_history(model_dir)[0]) - 1) + "\n")
    state["epoch_end_steps"]["3"] = 3 * config.steps_per_epoch
    with open(os.path.join(model_dir, run_dir.STATE_FILE), "w") as f:
        json.dump(state, f)
    longer = dataclasses.replace(config, epochs=3)

    run = training.prepare(longer, model_dir)
    assert run.initial_epoch == 2 and len(run.history) == 2

    shutil.copy(
        os.path.join(model_dir, run_dir.BEST_CHECKPOINT),
        os.path.join(model_dir, run_dir.LAST_CHECKPOINT),
    )
    run = training.prepare(longer, model_dir)
    assert run.initial_epoch == state["best_epoch"]
    assert len(run.history) == state["best_epoch"]


def test_epochs_may_grow_and_execution_options_do_not_count(run_copy):
    config, model_dir = run_copy
    before = snapshot(model_dir)
    longer = dataclasses.replace(config, epochs=5)

    run = training.prepare(longer, model_dir, jit_compile=True)

    assert run.initial_epoch == 2 and "after epoch 2 of 5" in run.describe()
    with pytest.raises(training.RunError, match="completed 2 epochs.*epochs=2 or more") as error:
        training.prepare(dataclasses.replace(config, epochs=1), model_dir)
    assert "pass --epochs=2 or more" in error.value.with_flag()
    assert snapshot(model_dir) == before


# Two workers of MultiWorkerMirroredStrategy -----------------------------------

#: The non-chief worker: what `python -m keras_ffl.fit` does, then it saves its weights.
WORKER = textwrap.dedent(
    """
    import sys
    from keras_ffl import distribute, training
    strategy = distribute.get_strategy("multi_worker_mirrored")
    data, model_dir, weights = sys.argv[1:]
    config = training.resolve_config(
        "idx:" + data, arch=("resnet8",), epochs=2, batch_size=32, eval_batch_size=16,
        sync_bn=True,
    )
    run = training.prepare(config, model_dir, strategy=strategy)
    run.fit(verbose=0)
    run.model.save_weights(weights)
    """
)


def read_weights(h5_file):
    weights = {}
    with h5py.File(h5_file, "r") as f:
        f.visititems(
            lambda name, item: weights.__setitem__(name, item[()])
            if isinstance(item, h5py.Dataset)
            else None
        )
    return weights


@pytest.mark.slow
def test_two_workers_train_identical_weights_and_only_the_chief_writes(tmp_path, idx_data):
    cluster = {"worker": [f"127.0.0.1:{port}" for port in free_ports(2)]}
    chief_dir, worker_dir = tmp_path / "chief_run", tmp_path / "worker_run"
    worker_weights = tmp_path / "worker.weights.h5"
    commands = [
        fit_command(
            f"--dataset=idx:{idx_data}",
            f"--model_dir={chief_dir}",
            "--arch=resnet8",
            "--epochs=2",
            "--batch_size=32",
            "--eval_batch_size=16",
            "--sync_bn",
            "--strategy=multi_worker_mirrored",
            "--verbose=0",
        ),
        # Its own --model_dir, which as a non-chief it must never create.
        [sys.executable, "-c", WORKER, idx_data, str(worker_dir), str(worker_weights)],
    ]
    workers = []
    for index, command in enumerate(commands):
        temp_dir = tmp_path / f"tmp{index}"
        temp_dir.mkdir()
        tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
        env = subprocess_env(TF_CONFIG=tf_config, TMPDIR=str(temp_dir))
        workers.append(
            subprocess.Popen(
                command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
            )
        )
    outputs = [worker.communicate(timeout=400)[0] for worker in workers]
    for worker, output in zip(workers, outputs):
        assert worker.returncode == 0, output[-3000:]

    assert set(os.listdir(chief_dir)) == OUTPUTS
    assert read_json(chief_dir, run_dir.STATE_FILE)["epoch"] == 2
    assert "Test accuracy" in outputs[0]
    assert not os.path.exists(worker_dir)
    assert os.listdir(tmp_path / "tmp1") == []  # Its temporary model directory is gone.
    with zipfile.ZipFile(chief_dir / run_dir.LAST_CHECKPOINT) as checkpoint:
        chief = read_weights(io.BytesIO(checkpoint.read("model.weights.h5")))
    other = read_weights(worker_weights)
    assert chief.keys() == other.keys() and len(chief) > 100
    for name in chief:
        np.testing.assert_array_equal(chief[name], other[name], err_msg=name)


def test_the_multi_worker_workaround_ends_with_the_keras_release_that_fixes_it(monkeypatch):
    """Keras's fit fails under several workers until a release fixes it; then the
    workaround stops applying (the two-worker test above runs whichever applies)."""
    monkeypatch.setattr(distribute, "KERAS_MULTI_WORKER_FIX", None)
    assert distribute.keras_needs_multi_worker_workaround("3.15.1")
    monkeypatch.setattr(distribute, "KERAS_MULTI_WORKER_FIX", (3, 16))
    assert distribute.keras_needs_multi_worker_workaround("3.15.1")
    assert not distribute.keras_needs_multi_worker_workaround("3.16.0")
    assert not distribute.keras_needs_multi_worker_workaround("3.17.0.dev2026010100")


# Bad inputs: a clear error, and no good file touched --------------------------


@pytest.mark.slow
def test_cli_refuses_an_unknown_dataset_and_touches_nothing(good_run, idx_data):
    _, model_dir = good_run
    before = snapshot(model_dir)
    result = subprocess.run(
        fit_command("--dataset=imagenet2013", f"--model_dir={model_dir}"),
        env=subprocess_env(),
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1
    assert (
        "keras_ffl.fit: error: Unknown dataset 'imagenet2013' — use one of: cifar10"
        in result.stderr
    )
    assert "Traceback" not in result.stderr
    assert snapshot(model_dir) == before


def test_an_unknown_architecture_is_refused(idx_data):
    with pytest.raises(ValueError, match="Unknown architecture 'vgg16'. Known: resnet<6n"):
        training.resolve_config(f"idx:{idx_data}", arch=("vgg16",))


def test_a_different_configuration_is_refused_naming_the_keys(good_run):
    config, model_dir = good_run
    before = snapshot(model_dir)
    options = {**config.method_options, "temperature": 4.0}
    other = dataclasses.replace(config, batch_size=16, method_options=options, epochs=9)
    with pytest.raises(training.RunError) as error:
        training.prepare(other, model_dir)
    message = error.value.with_flag()  # As the command prints it.
    assert "batch_size: 32 in the directory, 16 now" in message
    assert "temperature: 3.0 in the directory, 4.0 now" in message
    assert "epochs" not in message and "new --model_dir" in message
    assert snapshot(model_dir) == before


def test_a_corrupt_checkpoint_is_reported_and_kept(run_copy):
    config, model_dir = run_copy
    with open(os.path.join(model_dir, run_dir.LAST_CHECKPOINT), "wb") as f:
        f.write(b"garbage, not a zip file")
    before = snapshot(model_dir)
    with pytest.raises(training.RunError, match="last.keras is damaged") as error:
        training.prepare(config, model_dir)
    assert "cp " in str(error.value) and "mv " in str(error.value)
    assert snapshot(model_dir) == before


@pytest.mark.slow
def test_batch_not_divisible_by_replicas_is_refused(tmp_path, idx_data):
    script = textwrap.dedent(
        """
        import os, sys
        import tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        from keras_ffl import training
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        data, model_dir = sys.argv[1:]
        config = training.resolve_config("idx:" + data, arch=("resnet8",), batch_size=33)
        try:
            training.prepare(config, model_dir, strategy=strategy)
        except ValueError as error:
            print("REFUSED:", error.with_flag())  # As the command prints it.
        """
    )
    model_dir = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "-c", script, idx_data, str(model_dir)],
        env=subprocess_env(),
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert (
        "REFUSED: --batch_size=33 is the global batch and must be divisible by the 2 "
        "replicas of MirroredStrategy; use a multiple of 2, e.g. 32 or 34." in result.stdout
    )
    assert not model_dir.exists()


def test_a_nan_loss_stops_and_keeps_the_last_good_epoch(tmp_path, idx_data):
    # From epoch 2 on, the learning rate is 1e11: the weights blow up within a few steps.
    config = training.resolve_config(
        f"idx:{idx_data}", **{**TINY, "epochs": 3, "lr_milestones": (1,), "lr_factor": 1e12}
    )
    model_dir = str(tmp_path / "run")
    with pytest.raises(training.RunError, match=r"loss became (nan|inf) in epoch 2") as error:
        training.train(config, model_dir, verbose=0)
    assert "last good checkpoint (epoch 1)" in str(error.value)
    assert read_json(model_dir, run_dir.STATE_FILE)["epoch"] == 1
    assert len(read_history(model_dir)) == 1
    model = keras.saving.load_model(os.path.join(model_dir, run_dir.LAST_CHECKPOINT))
    assert int(model.optimizer.iterations) == config.steps_per_epoch
    assert all(np.isfinite(w).all() for w in model.get_weights())


# Configuration ----------------------------------------------------------------


def test_recipe_values_are_defaults_that_given_values_override():
    small = training.resolve_config("fashion_mnist")
    assert small.recipe == "small"
    for field in ("arch", "branches", "epochs", "batch_size", "learning_rate", "lr_milestones"):
        assert getattr(small, field) == getattr(recipes.RECIPES["small"], field)
    assert small.steps_per_epoch == 60000 // small.batch_size

    cifar = training.resolve_config("fashion_mnist", recipe="cifar", learning_rate=0.05)
    assert (cifar.epochs, cifar.lr_milestones, cifar.rampup_epochs) == (300, (150, 225), 80)
    assert (cifar.arch, cifar.branches, cifar.eval_batch_size) == (("resnet32",), 2, 100)
    assert (cifar.weight_decay, cifar.fusion_weight_decay) == (1e-4, 1e-5)
    assert cifar.learning_rate == 0.05

    imagenet = recipes.RECIPES["imagenet"]
    assert (imagenet.arch, imagenet.epochs, imagenet.batch_size) == (("resnet34",), 90, 256)
    assert (imagenet.lr_milestones, imagenet.rampup_epochs) == ((30, 60), 20)
    assert imagenet.top5
    # Paper §IV-B: on ImageNet the fusion module keeps sum(C_k) channels.
    config = training.resolve_config("fashion_mnist", recipe="imagenet", steps_per_epoch=1)
    assert config.method_options["fusion_channels"] == "sum"
    config = training.resolve_config(
        "fashion_mnist", recipe="imagenet", steps_per_epoch=1, fusion_channels="min"
    )
    assert config.method_options["fusion_channels"] == "min"


def test_several_architectures_make_case_2():
    config = training.resolve_config("fashion_mnist", arch=("ResNet-8", "wrn10_1", "resnet14"))
    assert config.arch == ("resnet8", "wrn10_1", "resnet14") and config.branches == 3
    with pytest.raises(ValueError, match="^branches=2 contradicts the 3 architectures") as error:
        training.resolve_config("fashion_mnist", arch=config.arch, branches=2)
    assert error.value.with_flag().startswith("--branches=2 contradicts the 3 architectures")
    with pytest.raises(ValueError, match="^shared_stages applies to one architecture") as error:
        training.resolve_config("fashion_mnist", arch=("resnet8", "wrn10_1"), shared_stages=1)
    assert error.value.with_flag().startswith("--shared_stages applies to one architecture")


def test_help_explains_every_flag():
    from keras_ffl import fit

    help_text = fit.FLAGS.module_help(fit)
    flags = [
        "method", "dataset", "data_dir", "model_dir", "recipe", "arch", "branches", "shared_stages",
        "fusion", "fusion_channels", "sync_bn", "temperature", "rampup_epochs", "ekd", "fkd",
        "top5", "epochs", "batch_size", "eval_batch_size", "learning_rate", "lr_milestones",
        "lr_factor", "weight_decay", "fusion_weight_decay", "steps_per_epoch",
        "validation_steps", "mixed_precision", "seed", "strategy", "tpu", "jit_compile",
        "verbose",
    ]
    for flag in flags:
        assert f"--{flag}:" in help_text or f"--[no]{flag}:" in help_text, flag


def test_only_the_flags_given_override_the_recipe():
    from absl import flags

    from keras_ffl import fit

    argv = ["fit", "--model_dir=x", "--arch=resnet8,wrn16_2", "--lr_milestones=3,5", "--noekd"]
    try:
        fit.FLAGS(argv + ["--seed=3", "--verbose=0", "--strategy=one_device"])
        assert fit.recipe_overrides(fit.FLAGS) == {
            "arch": ("resnet8", "wrn16_2"),
            "lr_milestones": (3, 5),
            "ekd": False,
        }
        fit.FLAGS.unparse_flags()
        with pytest.raises(flags.IllegalFlagValueError, match="comma list of epochs"):
            fit.FLAGS(["fit", "--model_dir=x", "--lr_milestones=150,two"])
    finally:
        fit.FLAGS.unparse_flags()
