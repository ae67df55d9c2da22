"""One writer per directory: the lock of keras_ffl.run_dir, and who takes it."""

import json
import os
import signal
import socket
import subprocess
import sys
import types
import zipfile

import keras
import pytest

from keras_ffl import distribute, run_dir


def test_a_second_lock_is_refused_naming_the_holder(tmp_path):
    with run_dir.lock(str(tmp_path)):
        holder = json.loads((tmp_path / run_dir.LOCK_FILE).read_text())
        assert (holder["pid"], holder["host"]) == (os.getpid(), socket.gethostname())
        for attempt in (run_dir.check_unlocked, lambda d: run_dir.lock(d).__enter__()):
            with pytest.raises(run_dir.RunError) as error:
                attempt(str(tmp_path))
            message = str(error.value)
            assert f"in use by process {os.getpid()} on {socket.gethostname()}" in message
            assert f"kill {os.getpid()}" in message and "choose another directory" in message
    # Released: the lock file is gone and the directory can be locked again.
    assert not (tmp_path / run_dir.LOCK_FILE).exists()
    run_dir.check_unlocked(str(tmp_path))
    with run_dir.lock(str(tmp_path)):
        pass


def test_the_lock_of_a_killed_process_is_reclaimed(tmp_path):
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:  # Takes the lock, says so, and dies by SIGKILL while holding it.
        os.close(read_end)
        with run_dir.lock(str(tmp_path)):
            os.write(write_end, b"locked")
            os.kill(os.getpid(), signal.SIGKILL)
        os._exit(1)  # Never reached; the child must not go on running the tests.
    os.close(write_end)
    assert os.read(read_end, 6) == b"locked"
    os.close(read_end)
    _, status = os.waitpid(child, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    # Its lock file is still there, naming it, but nobody holds the lock.
    assert json.loads((tmp_path / run_dir.LOCK_FILE).read_text())["pid"] == child

    run_dir.check_unlocked(str(tmp_path))
    with run_dir.lock(str(tmp_path)):
        assert json.loads((tmp_path / run_dir.LOCK_FILE).read_text())["pid"] == os.getpid()


def test_temporary_files_are_removed_only_under_the_lock(tmp_path):
    """A writer's temporary file survives another process's start; a dead writer's goes."""
    temp = tmp_path / f"{run_dir.TEMP_PREFIX}state.json-0123abcd.json"
    temp.write_text("{")
    chief = types.SimpleNamespace(extended=types.SimpleNamespace(should_checkpoint=True))
    with run_dir.lock(str(tmp_path)):
        with pytest.raises(run_dir.RunError, match="in use"):
            with distribute.write_directory(str(tmp_path), chief):
                run_dir.remove_temp_files(str(tmp_path))
        assert temp.exists()
    with distribute.write_directory(str(tmp_path), chief) as directory:
        run_dir.remove_temp_files(directory)
    assert not temp.exists()


def test_only_the_chief_worker_takes_the_lock(tmp_path):
    model_dir = str(tmp_path / "run")
    os.makedirs(model_dir)
    worker = types.SimpleNamespace(
        extended=types.SimpleNamespace(should_checkpoint=False),
        cluster_resolver=types.SimpleNamespace(task_id=1),
    )
    with run_dir.lock(model_dir):  # The chief's, as it trains.
        with distribute.write_directory(model_dir, worker) as directory:
            assert directory != model_dir and os.path.isdir(directory)
    assert not os.path.exists(directory)


def test_model_dir_checks_write_nothing(tmp_path):
    a_file = tmp_path / "file"
    a_file.write_text("")
    for model_dir, message in (
        (str(a_file), "is a file, not a directory"),
        (str(a_file / "run"), "is a file, not a directory"),
        ("", "model_dir is empty"),
    ):
        with pytest.raises((run_dir.RunError, ValueError), match=message):
            run_dir.check_model_dir(model_dir)
    assert os.listdir(tmp_path) == ["file"]
    run_dir.check_model_dir(str(tmp_path / "new" / "run"))
    assert os.listdir(tmp_path) == ["file"]


def test_reading_a_run_needs_no_tensorflow(tmp_path):
    """A tool that reads results imports keras_ffl and its run directory without TensorFlow."""
    (tmp_path / run_dir.CONFIG_FILE).write_text('{"dataset": "cifar100"}')
    code = (
        "import sys, keras_ffl, keras_ffl.run_dir as r;"
        f"assert r.read_config({str(tmp_path)!r}) == {{'dataset': 'cifar100'}};"
        "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules, 'imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_directory_without_config_is_not_a_run(tmp_path):
    with pytest.raises(run_dir.NotARunError, match="config.json not found: .* is not a training"):
        run_dir.read_config(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="holds no checkpoint"):
        run_dir.checkpoint_name(str(tmp_path))
    (tmp_path / run_dir.LAST_CHECKPOINT).write_bytes(b"not a zip")
    assert run_dir.checkpoint_name(str(tmp_path)) == "last"
    with pytest.raises(run_dir.CheckpointError) as error:
        run_dir.checkpoint_name(str(tmp_path), "best", use="export")
    assert error.value.with_flag().endswith("— export last.keras instead with --checkpoint=last")
    with pytest.raises(run_dir.CheckpointError, match="last.keras is damaged: it is not a .keras"):
        run_dir.load_model(str(tmp_path / run_dir.LAST_CHECKPOINT), fix="restore it")


def test_an_unreadable_checkpoint_is_named_for_what_is_wrong(tmp_path):
    # A real .keras file (a zip of config.json, metadata.json and model.weights.h5).
    good = str(tmp_path / "good.keras")
    inputs = keras.Input((4,))
    keras.Model(inputs, keras.layers.Dense(2)(inputs)).save(good)
    content = open(good, "rb").read()
    weights_at = content.index(b"model.weights.h5") + 200  # Inside that member's data.
    altered = content[:weights_at] + bytes([content[weights_at] ^ 0xFF]) + content[weights_at + 1:]
    cases = {
        b"": "is damaged: it is empty (0 bytes)",
        content[: len(content) // 2]: "is damaged: it is truncated: a .keras (zip) archive's first",
        b"not a zip": "is damaged: it is not a .keras (zip) archive",
        altered: "is damaged: its model.weights.h5 fails its checksum",
    }
    for damaged, what in cases.items():
        path = tmp_path / "last.keras"
        path.write_bytes(damaged)
        with pytest.raises(run_dir.CheckpointError) as error:
            run_dir.load_model(str(path), fix="restore it")
        assert str(error.value).startswith(f"{path} {what}"), error.value
        assert str(error.value).endswith(" — restore it")
        assert "File not found" not in str(error.value)

    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("notes.txt", "not a model")
    wrong_contents = r"is not a Keras model: its zip archive has no config.json and no model"
    with pytest.raises(run_dir.CheckpointError, match=wrong_contents + r".weights.\* \(it holds"):
        run_dir.load_model(str(path), fix="restore it")
