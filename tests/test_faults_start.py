"""The start of a run: refused before the first step when it cannot train what it says,
undone when it fails before its first epoch, and quiet about TensorFlow's start-up.

The command-level cases run the real `python -m keras_ffl.fit` on tiny IDX data.
"""

import os
import re
import subprocess
import sys

import pytest
import tensorflow as tf
from fakedata import write_idx
from test_faults_fit import ERROR_LINE, assert_one_line_error, run_fit

from keras_ffl import run_dir, training

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: write_idx's default splits.
TRAIN_EXAMPLES, TEST_EXAMPLES = 192, 48
TINY_FLAGS = ("--arch=resnet8x0.5", "--epochs=1", "--batch_size=32", "--eval_batch_size=16",
              "--steps_per_epoch=2", "--validation_steps=1", "--verbose=0")  # fmt: skip


@pytest.fixture(scope="module")
def idx_data(tmp_path_factory):
    return write_idx(str(tmp_path_factory.mktemp("data") / "idx"))


def fit(*flags, verbosity=False):
    """Runs the real command as a user's shell does (TF_CPP_MIN_LOG_LEVEL not set)."""
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [REPO, env.get("PYTHONPATH")]))
    command = [sys.executable, "-m", "keras_ffl.fit", *flags]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)


# A batch the data cannot give ------------------------------------------------------


def test_a_batch_larger_than_the_training_split_is_refused(tmp_path, capsys, idx_data):
    model_dir = tmp_path / "run"
    # With --steps_per_epoch given, Keras used to run out of data, and the epoch was
    # recorded as complete for an untrained model.
    status, _, stderr = run_fit(capsys, f"--dataset=idx:{idx_data}", f"--model_dir={model_dir}",
                                "--batch_size=500", "--steps_per_epoch=3")  # fmt: skip
    assert_one_line_error(
        status, stderr,
        f"training split has {TRAIN_EXAMPLES} examples, fewer than one batch of --batch_size=500",
        f"pass --batch_size={TRAIN_EXAMPLES} or less",
    )  # fmt: skip
    assert not model_dir.exists()


def test_more_validation_steps_than_test_batches_are_refused(tmp_path, capsys, idx_data):
    model_dir = tmp_path / "run"
    status, _, stderr = run_fit(capsys, f"--dataset=idx:{idx_data}", f"--model_dir={model_dir}",
                                "--eval_batch_size=10", "--validation_steps=6")  # fmt: skip
    assert_one_line_error(
        status, stderr,
        f"--validation_steps=6 needs that many test batches, but idx:{idx_data}'s test split "
        f"of {TEST_EXAMPLES} examples gives 5 of --eval_batch_size=10",
        "pass --validation_steps=5 or less",
    )  # fmt: skip
    assert not model_dir.exists()


def test_the_library_names_the_arguments(idx_data):
    with pytest.raises(ValueError, match="fewer than one batch of batch_size=500") as error:
        training.resolve_config(f"idx:{idx_data}", batch_size=500, steps_per_epoch=3)
    assert "--" not in str(error.value)


def test_steps_beyond_one_pass_repeat_the_data(idx_data):
    # The training pipeline repeats: 10 steps of 32 from 192 examples is a valid run.
    config = training.resolve_config(f"idx:{idx_data}", batch_size=32, steps_per_epoch=10)
    assert config.steps_per_epoch == 10


@pytest.mark.slow
def test_an_epoch_that_ran_out_of_data_is_not_committed(tmp_path, monkeypatch, idx_data):
    # A pipeline that gives fewer batches than an epoch's steps (the refusals above
    # catch the known cases; this guards against the others).
    datasets = training.Run._datasets

    def one_pass(run):
        train_data, test_data = datasets(run)
        return train_data.take(1), test_data

    monkeypatch.setattr(training.Run, "_datasets", one_pass)
    config = training.resolve_config(
        f"idx:{idx_data}", arch=("resnet8x0.5",), epochs=1, batch_size=32, steps_per_epoch=3,
        validation_steps=1,
    )
    model_dir = tmp_path / "run"
    with pytest.warns(UserWarning, match="ran out of data"):
        with pytest.raises(run_dir.RunError, match="ran out of data in epoch 1 after 1 of its 3"):
            training.train(config, str(model_dir), verbose=0)
    assert not model_dir.exists()  # Nothing recorded as complete, nothing left.


@pytest.mark.slow
def test_the_command_refuses_a_batch_larger_than_the_data(tmp_path, idx_data):
    model_dir = tmp_path / "run"
    result = fit(f"--dataset=idx:{idx_data}", f"--model_dir={model_dir}", *TINY_FLAGS,
                 "--batch_size=70000")  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert ERROR_LINE.fullmatch(result.stderr), result.stderr
    assert "fewer than one batch of --batch_size=70000" in result.stderr
    assert not model_dir.exists()


# Numbers the run cannot represent, and a start that fails --------------------------


@pytest.mark.slow
def test_a_failed_first_epoch_leaves_the_directory_as_it_was(tmp_path, idx_data):
    data = f"--dataset=idx:{idx_data}"
    # Refused by name before anything is written (it used to fail after "Starting a
    # new run" and leave a config.json that refused the corrected command).
    new_dir = tmp_path / "runs" / "new"
    result = fit(data, f"--model_dir={new_dir}", *TINY_FLAGS, "--learning_rate=1e308")
    assert result.returncode == 1 and "--learning_rate=1e+308 does not fit in float32" in (
        result.stderr
    ), result.stderr
    assert not (tmp_path / "runs").exists()

    # A learning rate float32 holds but training cannot survive: the loss becomes
    # NaN in epoch 1, after the directory was written. A new directory is removed
    # again, and an existing one keeps only what it held.
    kept = tmp_path / "mine"
    kept.mkdir()
    (kept / "notes.txt").write_text("my notes\n")
    for model_dir in (new_dir, kept):
        result = fit(data, f"--model_dir={model_dir}", *TINY_FLAGS, "--learning_rate=3e38")
        assert result.returncode == 1
        assert re.search(r"loss became (nan|inf) in epoch 1, batch \d+; that epoch was not "
                         rf"saved and {model_dir} was left as it was — lower --learning_rate",
                         result.stderr), result.stderr  # fmt: skip
    assert not (tmp_path / "runs").exists()
    assert os.listdir(kept) == ["notes.txt"]

    # The corrected command then trains.
    result = fit(data, f"--model_dir={kept}", *TINY_FLAGS)
    assert result.returncode == 0, result.stderr
    assert run_dir.read_json(str(kept / run_dir.STATE_FILE))["epoch"] == 1


# TensorFlow's start-up lines ---------------------------------------------------------


@pytest.mark.slow
def test_the_command_starts_quietly_and_says_where_it_trains(tmp_path, idx_data):
    flags = (f"--dataset=idx:{idx_data}", f"--model_dir={tmp_path / 'run'}", "--batch_size=500")
    result = fit(*flags)
    # Only the command's own lines: no "absl::InitializeLog", oneDNN, CUDA or cuInit line.
    assert result.returncode == 1
    assert ERROR_LINE.fullmatch(result.stderr), result.stderr
    gpus = tf.config.list_physical_devices("GPU")
    expected = f"GPUs: {len(gpus)} (" if gpus else "GPUs: none found, training on the CPU."
    assert result.stdout.startswith(expected), result.stdout

    verbose = fit(*flags, "--verbosity=0")
    assert verbose.stderr.endswith(result.stderr)
    assert len(verbose.stderr.splitlines()) > 1  # TensorFlow's lines are back.


# What a run will cost ------------------------------------------------------------


def test_the_start_says_how_large_the_model_is(tmp_path, idx_data):
    config = training.resolve_config(f"idx:{idx_data}", arch=("resnet8x0.5",), branches=7)
    run = training.prepare(config, str(tmp_path / "run"))
    line = run.describe_model()
    assert line.startswith(f"Model: 7 sub-network(s), {run.model.count_params():,} parameters: ")
    assert "MB of weights" in line and "\n" not in line
