"""The training command under faults and bad input.

Every refusal is one line `keras_ffl.fit: error: <what> — <how to fix>` with exit
status 1 (130 for Ctrl-C), no traceback, and a refused start writes nothing into
a new model directory. Most cases call the command's `main` in this process,
which is what `python -m keras_ffl.fit` runs; the few that need a second process
or a signal run the real command.
"""

import contextlib
import json
import os
import pathlib
import re
import signal
import socket
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
import tensorflow as tf
from fakedata import band_images, write_idx, write_idx_dataset
from filetree import snapshot

from keras_ffl import callbacks, fit, run_dir, training

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ERROR_LINE = re.compile(r"keras_ffl\.fit: error: \S[^\n]* — \S[^\n]*\n")
TINY_FLAGS = (
    "--arch=resnet8",
    "--epochs=1",
    "--batch_size=32",
    "--eval_batch_size=16",
    "--steps_per_epoch=2",
    "--verbose=0",
)


def run_fit(capsys, *flags):
    """Runs the command's main in this process: (exit status, stdout, stderr)."""
    try:
        argv = fit.parse_flags(["keras_ffl.fit", *flags])
        fit.main(argv)
        status = 0
    except SystemExit as exit:
        status = exit.code
    finally:
        fit.FLAGS.unparse_flags()
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def assert_one_line_error(status, stderr, *fragments):
    assert status == 1, stderr
    assert ERROR_LINE.fullmatch(stderr), stderr
    for fragment in fragments:
        assert fragment in stderr, stderr


def subprocess_env():
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [REPO, env.get("PYTHONPATH")]))
    return env


def fit_command(*flags):
    return [sys.executable, "-m", "keras_ffl.fit", *flags]


@pytest.fixture(scope="module")
def idx_data(tmp_path_factory):
    return write_idx(str(tmp_path_factory.mktemp("data") / "idx"))


@contextlib.contextmanager
def tmpfs(path, size="1m", read_only=False):
    """Mounts a small tmpfs at `path` (a real full disk or read-only file system)."""
    os.makedirs(path)
    options = f"size={size}" + (",ro" if read_only else "")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True
    )
    if mounted.returncode:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {mounted.stderr.decode().strip()}")
    try:
        yield str(path)
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)


# A refused start: one line, exit 1, and the new model directory not created ---


def idx_with_test_split(directory, test_images, test_labels):
    """An IDX dataset of 3 classes with the given test split."""
    rng = np.random.default_rng(0)
    train_labels = np.arange(96) % 3
    return write_idx_dataset(
        directory, band_images(train_labels, 12, 3, rng), train_labels, test_images, test_labels
    )


def test_a_test_split_with_more_images_than_labels(tmp_path, capsys):
    images = np.zeros((50, 12, 12), np.uint8)
    data = idx_with_test_split(tmp_path / "idx", images, np.arange(40) % 3)
    model_dir = tmp_path / "run"

    status, _, stderr = run_fit(capsys, f"--dataset=idx:{data}", f"--model_dir={model_dir}")

    assert_one_line_error(status, stderr, "t10k-images-idx3-ubyte holds 50 images", "40 labels")
    assert not model_dir.exists()


def test_test_labels_outside_the_training_classes(tmp_path, capsys):
    images = np.zeros((10, 12, 12), np.uint8)
    data = idx_with_test_split(tmp_path / "idx", images, np.arange(10))
    model_dir = tmp_path / "run"

    status, _, stderr = run_fit(capsys, f"--dataset=idx:{data}", f"--model_dir={model_dir}")

    assert_one_line_error(status, stderr, "t10k-labels-idx1-ubyte", "3..9")
    assert not model_dir.exists()


def test_an_unprepared_tfds_dataset_with_steps_per_epoch(tmp_path, capsys):
    model_dir = tmp_path / "run"
    status, _, stderr = run_fit(
        capsys,
        "--dataset=cifar100",
        f"--data_dir={tmp_path / 'tfds'}",
        "--steps_per_epoch=3",
        f"--model_dir={model_dir}",
    )
    assert_one_line_error(status, stderr, "'cifar100' is not prepared", "tfds build cifar100")
    assert not model_dir.exists()


def test_a_model_dir_that_is_a_file(tmp_path, capsys, idx_data):
    path = tmp_path / "notes.txt"
    path.write_text("my notes\n")
    for model_dir, fragment in ((path, "is a file"), (path / "run", "is a file")):
        status, _, stderr = run_fit(capsys, f"--dataset=idx:{idx_data}", f"--model_dir={model_dir}")
        assert_one_line_error(status, stderr, str(path), fragment)
    assert path.read_text() == "my notes\n"


def test_an_empty_model_dir(capsys, idx_data):
    status, _, stderr = run_fit(capsys, f"--dataset=idx:{idx_data}", "--model_dir=")
    assert_one_line_error(status, stderr, "--model_dir is empty")


def test_a_model_dir_on_a_read_only_file_system(tmp_path, capsys, idx_data):
    with tmpfs(tmp_path / "ro", read_only=True) as read_only:
        model_dir = os.path.join(read_only, "run")
        status, _, stderr = run_fit(capsys, f"--dataset=idx:{idx_data}", f"--model_dir={model_dir}")
        assert_one_line_error(status, stderr, "read-only file system", read_only)
        assert os.listdir(read_only) == []


def test_non_finite_or_negative_numbers(tmp_path, capsys, idx_data):
    model_dir = tmp_path / "run"
    for method, flag, value in [
        ("ffl", "learning_rate", "nan"),
        ("ffl", "learning_rate", "-0.1"),
        ("ffl", "learning_rate", "0"),
        ("ffl", "lr_factor", "-1"),
        ("ffl", "lr_factor", "inf"),
        ("ffl", "weight_decay", "-1e-4"),
        ("ffl", "fusion_weight_decay", "nan"),
        ("ffl", "temperature", "0"),
        ("dml", "temperature", "-inf"),
        ("ffl", "rampup_epochs", "-1"),
        ("dualnet", "aux_weight", "-0.3"),
        ("dualnet", "iterative_epochs", "-5"),
    ]:
        assert_number_refused(capsys, idx_data, model_dir, method, flag, value, "is not")


def test_numbers_beyond_float32_are_refused_by_name(tmp_path, capsys, idx_data):
    # Before, --learning_rate=1e308 failed after "Starting a new run", leaving a config.json.
    model_dir = tmp_path / "run"
    for method, flag, value in [
        ("ffl", "learning_rate", "1e308"),
        ("ffl", "learning_rate", "1e-50"),
        ("ffl", "weight_decay", "1e39"),
        ("ffl", "fusion_weight_decay", "1e300"),
        ("ffl", "lr_factor", "1e40"),
        ("ffl", "temperature", "1e39"),
        ("dualnet", "aux_weight", "1e39"),
    ]:
        assert_number_refused(capsys, idx_data, model_dir, method, flag, value,
                              "does not fit in float32")  # fmt: skip


def assert_number_refused(capsys, idx_data, model_dir, method, flag, value, problem):
    status, _, stderr = run_fit(capsys, f"--dataset=idx:{idx_data}", f"--method={method}",
                                f"--model_dir={model_dir}", f"--{flag}={value}")  # fmt: skip
    shown = value if flag.endswith("epochs") else repr(float(value))
    assert_one_line_error(status, stderr, f"--{flag}={shown} {problem}")
    assert not model_dir.exists()


def test_bad_flags(tmp_path, capsys):
    model_dir = f"--model_dir={tmp_path / 'run'}"
    for flags, fragment in [
        ((model_dir, "--learning_rate=fast"), "--learning_rate"),
        ((model_dir, "--lr_milestones=150,two"), "--lr_milestones"),
        ((model_dir, "--no_such_flag"), "no_such_flag"),
        ((model_dir, "extra_argument"), "extra_argument"),
        (("--dataset=fashion_mnist",), "--model_dir"),
    ]:
        status, _, stderr = run_fit(capsys, *flags)
        assert_one_line_error(status, stderr, fragment)


def test_a_different_configuration_is_one_line(tmp_path, capsys, idx_data):
    model_dir = tmp_path / "run"
    model_dir.mkdir()
    saved = training.resolve_config(f"idx:{idx_data}", arch=("resnet8",), temperature=4.0)
    (model_dir / run_dir.CONFIG_FILE).write_text(json.dumps(saved.to_json()))
    before = snapshot(model_dir)

    status, _, stderr = run_fit(capsys, f"--dataset=idx:{idx_data}", f"--model_dir={model_dir}",
                                "--arch=resnet8", "--batch_size=16")  # fmt: skip

    assert_one_line_error(
        status, stderr, "temperature: 4.0 in the directory, 3.0 now", "batch_size: 128", "16 now"
    )
    assert snapshot(model_dir) == before


def test_an_unexpected_error_is_one_line_and_debug_shows_the_traceback(
    tmp_path, capsys, monkeypatch, idx_data
):
    def broken(*args, **kwargs):
        raise RuntimeError("something nobody anticipated")

    monkeypatch.setattr(training, "prepare", broken)
    flags = (f"--dataset=idx:{idx_data}", f"--model_dir={tmp_path / 'run'}")

    status, _, stderr = run_fit(capsys, *flags)
    assert_one_line_error(status, stderr, "RuntimeError: something nobody anticipated",
                          "--verbosity=1")  # fmt: skip

    status, _, stderr = run_fit(capsys, *flags, "--verbosity=1")
    assert status == 1
    assert "Traceback (most recent call last)" in stderr
    assert ERROR_LINE.search(stderr.splitlines(keepends=True)[-1])


def test_ctrl_c_exits_130_saying_how_to_resume(tmp_path, capsys, monkeypatch, idx_data):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(training, "prepare", interrupted)
    status, _, stderr = run_fit(capsys, f"--dataset=idx:{idx_data}",
                                f"--model_dir={tmp_path / 'run'}")  # fmt: skip
    assert status == 130
    assert stderr == "keras_ffl.fit: interrupted; rerun the same command to resume\n"


# Faults while the run writes ---------------------------------------------------


@pytest.mark.slow
def test_a_full_disk_while_saving_then_a_rerun_with_space(tmp_path, capsys, idx_data):
    flags = (f"--dataset=idx:{idx_data}", *TINY_FLAGS)
    # Room for config.json, history.csv and TensorBoard's logs, not for a checkpoint.
    with tmpfs(tmp_path / "disk", size="1m") as disk:
        model_dir = os.path.join(disk, "run")

        status, _, stderr = run_fit(capsys, *flags, f"--model_dir={model_dir}")

        assert_one_line_error(status, stderr, "No space left on device",
                              "rerun the same command")  # fmt: skip
        assert not [n for n in os.listdir(model_dir) if n.startswith(run_dir.TEMP_PREFIX)]
        subprocess.run(["mount", "-o", "remount,size=16m", disk], check=True)
        status, stdout, stderr = run_fit(capsys, *flags, f"--model_dir={model_dir}")
        assert status == 0, stderr
        assert completed_epochs(pathlib.Path(model_dir)) == 1


# One writer per model directory ------------------------------------------------


def test_a_locked_model_dir_is_refused_naming_the_holder(tmp_path, capsys, idx_data):
    model_dir = tmp_path / "run"
    model_dir.mkdir()
    # A live writer's temporary file, which the refused command must leave alone.
    temp = model_dir / f"{run_dir.TEMP_PREFIX}last.keras-0123abcd.keras"
    temp.write_bytes(b"half written")
    with run_dir.lock(str(model_dir)):
        status, _, stderr = run_fit(capsys, f"--dataset=idx:{idx_data}",
                                    f"--model_dir={model_dir}", *TINY_FLAGS)  # fmt: skip
    holder = f"process {os.getpid()} on {socket.gethostname()}"
    assert_one_line_error(status, stderr, holder, "choose another directory")
    assert temp.read_bytes() == b"half written"
    assert not (model_dir / run_dir.CONFIG_FILE).exists()


def test_a_directory_written_by_another_run_meanwhile_is_refused(tmp_path, idx_data):
    config = training.resolve_config(f"idx:{idx_data}", arch=("resnet8",), epochs=1)
    model_dir = str(tmp_path / "run")
    # What `training.prepare` returns for a new directory, short of building the model.
    run = training.Run(config, model_dir, None, tf.distribute.get_strategy(), None,
                       fingerprint=run_dir.fingerprint(model_dir))  # fmt: skip
    # Another process starts the same run after this one has read the directory.
    os.makedirs(model_dir)
    run_dir.write_json(os.path.join(model_dir, run_dir.CONFIG_FILE), config.to_json())
    with pytest.raises(run_dir.RunError, match="changed since"):
        run.fit(verbose=0)


def idx_run_command(idx_data, model_dir, epochs):
    return fit_command(f"--dataset=idx:{idx_data}", f"--model_dir={model_dir}", "--arch=resnet8",
                       f"--epochs={epochs}", "--batch_size=16", "--verbose=0")  # fmt: skip


def start(command, ready):
    """Starts `command` as a terminal starts a foreground command, and waits until
    `ready()` is true or the process ends.

    SIGINT is reset to its default in the child: a suite started in the background
    (`pytest &`) ignores SIGINT, and an ignored signal stays ignored across exec.
    """
    process = subprocess.Popen(command, env=subprocess_env(), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 120
    while process.poll() is None and not ready():
        assert time.monotonic() < deadline, "the command did not get there in 2 minutes"
        time.sleep(0.05)
    return process


@pytest.mark.slow
def test_a_second_command_on_a_running_directory_fails_at_once(tmp_path, idx_data):
    model_dir = tmp_path / "run"
    command = idx_run_command(idx_data, model_dir, epochs=50)
    # config.json is written under the lock, just before training starts.
    first = start(command, ready=(model_dir / run_dir.CONFIG_FILE).exists)
    try:
        before = json.loads((model_dir / run_dir.CONFIG_FILE).read_text())

        second = subprocess.run(
            command, env=subprocess_env(), capture_output=True, text=True, timeout=120
        )

        assert first.poll() is None, first.stderr.read()[-3000:]
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    assert second.returncode == 1
    assert f"process {first.pid} on {socket.gethostname()}" in second.stderr
    assert "Traceback" not in second.stderr
    assert ERROR_LINE.fullmatch(second.stderr.splitlines(keepends=True)[-1])
    assert json.loads((model_dir / run_dir.CONFIG_FILE).read_text()) == before


@pytest.mark.slow
def test_sigint_exits_130_and_leaves_a_resumable_directory(tmp_path, idx_data):
    model_dir = tmp_path / "run"
    command = idx_run_command(idx_data, model_dir, epochs=20)
    process = start(command, ready=lambda: completed_epochs(model_dir) >= 1)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)

    assert process.returncode == 130, stderr[-3000:]
    assert "Traceback" not in stderr
    assert stderr.endswith("keras_ffl.fit: interrupted; rerun the same command to resume\n")
    # What a rerun resumes from (see test_fit.py's SIGKILL test): committed epochs, no debris.
    assert completed_epochs(model_dir) >= 1
    assert (model_dir / run_dir.LAST_CHECKPOINT).exists()
    debris = (run_dir.TEMP_PREFIX, run_dir.LOCK_FILE)
    assert not [name for name in os.listdir(model_dir) if name.startswith(debris)]


class _InterruptedFinalizer:
    """An object whose finalizer receives Ctrl-C: Python prints the KeyboardInterrupt
    raised there and drops it (see the signal module's note on handlers and exceptions)."""

    def __del__(self):
        os.kill(os.getpid(), signal.SIGINT)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # The drop.
def test_ctrl_c_stops_training_even_when_a_finalizer_drops_its_keyboard_interrupt():
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    batches = []

    class InterruptInAFinalizer(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            batches.append(batch)
            if batch == 1:
                _InterruptedFinalizer()  # Collected at once: SIGINT arrives in __del__.

    x = np.zeros((64, 2), "float32")
    # Python's own Ctrl-C handling, even if this suite runs in the background (SIGINT ignored).
    outside = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt), callbacks.catch_interrupts() as stop:
            model.fit(x, x[:, :1], batch_size=4, epochs=3, verbose=0,
                      callbacks=[InterruptInAFinalizer(), stop])
        assert batches == [0, 1]  # Stopped at the end of the batch Ctrl-C came in.
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # Restored.
    finally:
        signal.signal(signal.SIGINT, outside)


def completed_epochs(model_dir):
    try:
        return json.loads((model_dir / run_dir.STATE_FILE).read_text())["epoch"]
    except FileNotFoundError:
        return 0


def test_library_errors_name_the_python_argument(idx_data):
    with pytest.raises(ValueError, match=r"^learning_rate=nan is not") as error:
        training.resolve_config(f"idx:{idx_data}", learning_rate=float("nan"))
    assert "--" not in str(error.value)
    with pytest.raises(ValueError, match=r"^rampup_epochs=-2 is not"):
        training.resolve_config(f"idx:{idx_data}", rampup_epochs=-2)
