"""A training run's model directory: its file names and crash-safe reads and writes.

The model directory holds:
  config.json   the run's resolved configuration (`training.RunConfig`).
  last.keras    the full model, optimizer state included, after the last epoch.
  best.keras    the same after the epoch with the best test accuracy of the
                method's primary head.
  history.csv   one row of training and test metrics per epoch (CSVLogger's format).
  state.json    the last completed epoch, the best epoch, and the optimizer step at
                the end of every epoch, which tells which epoch a checkpoint holds.
  results.json  every head's final and best test accuracy.
  tensorboard/  TensorBoard logs.

Every file except TensorBoard's (append-only, checksummed records) is replaced
atomically: written to a temporary file in the same directory, fsynced, renamed
over the old one.
"""

import contextlib
import csv
import json
import os
import secrets

CONFIG_FILE = "config.json"
STATE_FILE = "state.json"
HISTORY_FILE = "history.csv"
RESULTS_FILE = "results.json"
LAST_CHECKPOINT = "last.keras"
BEST_CHECKPOINT = "best.keras"
TENSORBOARD_DIR = "tensorboard"
#: The checkpoints a run directory may hold, by the name `--checkpoint` gives them.
CHECKPOINTS = {"best": BEST_CHECKPOINT, "last": LAST_CHECKPOINT}
#: Temporary files of atomic writes start with this; a killed write leaves one behind.
TEMP_PREFIX = ".tmp-"


class RunError(Exception):
    """A run cannot start or continue; the message says why and what to do."""


def read_json(path):
    """The JSON value in `path`, or None when there is no such file."""
    if not os.path.exists(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError) as err:
        raise RunError(f"Cannot read {path} ({err}); restore it or choose a new --model_dir.")


def read_history(path):
    """The rows of history.csv as dicts of strings ([] when there is none)."""
    if not os.path.exists(path):
        return []
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def write_history(path, rows):
    """Writes the rows as keras.callbacks.CSVLogger does: "epoch", then sorted keys."""
    keys = sorted({key for row in rows for key in row} - {"epoch"})

    def write(temp):
        with open(temp, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=["epoch"] + keys)
            writer.writeheader()
            writer.writerows(rows)

    replace_atomically(path, write)


def write_json(path, value):
    """Replaces `path` atomically with `value` as indented JSON."""

    def write(temp):
        with open(temp, "w", encoding="utf-8") as f:
            json.dump(value, f, indent=2)
            f.write("\n")

    replace_atomically(path, write)


def save_model(model, path):
    """Saves a Keras model to `path` atomically."""
    replace_atomically(path, model.save)


def replace_atomically(path, write):
    """Calls `write(temp)` on a temporary file beside `path`, fsyncs it and renames it to `path`.

    The rename is atomic, so `path` is always either the old or the new file.
    """
    directory, name = os.path.split(path)
    temp = os.path.join(
        directory, f"{TEMP_PREFIX}{name}-{secrets.token_hex(4)}{os.path.splitext(name)[1]}"
    )
    # Mode 0o666 less the umask, like open(); tempfile's files are private (0o600).
    os.close(os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    try:
        write(temp)
        with open(temp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(temp)
        raise
    dir_fd = os.open(directory or ".", os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # Makes the rename itself durable.
    finally:
        os.close(dir_fd)


def remove_temp_files(directory):
    """Deletes temporary files that a killed write left behind."""
    for entry in os.scandir(directory):
        if entry.name.startswith(TEMP_PREFIX) and entry.is_file():
            os.remove(entry.path)
