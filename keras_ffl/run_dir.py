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
  .lock         held by the one process writing the directory (see `lock`).

Every file except TensorBoard's (append-only, checksummed records) is replaced
atomically: written to a temporary file in the same directory, fsynced, renamed
over the old one (`replace_atomically`, which the exports and reports use too).

This module imports neither TensorFlow nor Keras at its top, so that reading a
run's config, history or results stays cheap; `load_model` imports Keras when
it opens a checkpoint.
"""

import contextlib
import csv
import datetime
import errno
import fcntl
import json
import os
import secrets
import socket
import sys
import time
import zipfile

from keras_ffl.arguments import NamesArguments
from keras_ffl.validation import ArgumentError

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
#: The lock file of the process writing a directory (see `lock`).
LOCK_FILE = ".lock"
#: The files that say where a run stands; a change in any means another process wrote.
RUN_FILES = (CONFIG_FILE, STATE_FILE, HISTORY_FILE, LAST_CHECKPOINT, BEST_CHECKPOINT)
#: What a .keras file is: a zip archive (these bytes first) of a config and weights.
_ZIP_MAGIC = b"PK\x03\x04"
_KERAS_CONFIG = "config.json"
_KERAS_WEIGHTS = "model.weights"
_LOCK_ATTEMPTS = 3
_LOCK_RETRY_SECONDS = 0.05


class RunError(NamesArguments, Exception):
    """A run cannot start or continue; the message says "<what> — <how to fix it>".

    Arguments it names are written "{arg:<name>}" (see `keras_ffl.arguments`).
    """


class NotARunError(RunError, FileNotFoundError):
    """A directory is not a training run's: it has no config.json."""


class CheckpointError(RunError, ValueError):
    """A run's checkpoint is missing, damaged, or not a keras_ffl model."""


def read_json(path):
    """The JSON value in `path`, or None when there is no such file."""
    if not os.path.exists(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError) as err:
        raise RunError(
            f"Cannot read {path} ({err}); restore it or choose a new {{arg:model_dir}}."
        ) from err


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
    except BaseException as err:
        with contextlib.suppress(FileNotFoundError):
            os.remove(temp)
        if isinstance(err, OSError) and err.errno and not err.filename:
            # Writers such as Keras's zip and HDF5 code raise ENOSPC without the file.
            raise OSError(err.errno, err.strerror, path) from err
        raise
    fsync_directory(directory or ".")  # Makes the rename itself durable.


def fsync_directory(path):
    """Flushes `path`'s entries to disk, so that renames into it survive a power cut."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def read_config(model_dir):
    """The dict in `model_dir`'s config.json (a `training.RunConfig`'s fields).

    Raises:
      NotARunError: `model_dir` has no config.json.
      RunError: it cannot be read.
    """
    path = os.path.join(model_dir, CONFIG_FILE)
    if not os.path.isfile(path):
        raise NotARunError(
            f"{path} not found: {model_dir} is not a training run's directory — pass a "
            f"directory written by python -m keras_ffl.fit (with {CONFIG_FILE} and "
            f"{BEST_CHECKPOINT} or {LAST_CHECKPOINT})"
        )
    return read_json(path)


def checkpoint_name(model_dir, checkpoint=None, *, use="load"):
    """The name ("best" or "last", keys of `CHECKPOINTS`) of the checkpoint of `model_dir`
    that `checkpoint` picks: by default best.keras if present, else last.keras.

    `use` is the verb of what the caller does with it ("export"), for the fix
    that names the other checkpoint.

    Raises:
      ArgumentError: `checkpoint` is not a name of `CHECKPOINTS`.
      FileNotFoundError: the run has no checkpoint yet.
      CheckpointError: `checkpoint` does not exist (the message names the other).
    """
    if checkpoint is not None and checkpoint not in CHECKPOINTS:
        raise ArgumentError(
            "checkpoint", f"{{arg}} must be one of {tuple(CHECKPOINTS)}; got {checkpoint!r}."
        )
    present = _present_checkpoints(model_dir)
    if not present:
        raise FileNotFoundError(
            f"{model_dir} holds no checkpoint ({BEST_CHECKPOINT} or {LAST_CHECKPOINT}): its run "
            "has not completed an epoch — train it first (python -m keras_ffl.fit saves both "
            f"after every epoch), or {use} another run's directory"
        )
    checkpoint = checkpoint or present[0]
    if checkpoint not in present:
        raise CheckpointError(
            f"{os.path.join(model_dir, CHECKPOINTS[checkpoint])} does not exist — "
            f"{_use_another(present, use)}"
        )
    return checkpoint


def _present_checkpoints(model_dir):
    return [c for c, name in CHECKPOINTS.items() if os.path.isfile(os.path.join(model_dir, name))]


def _use_another(others, use):
    """The fix for a checkpoint that cannot be used: one of `others` if any."""
    if not others:
        return "restore it from a backup, or train the run again"
    return f"{use} {CHECKPOINTS[others[0]]} instead with {{arg:checkpoint}}={others[0]}"


def load_model(path, *, fix, strategy=None, compile=True):
    """The keras_ffl model (a `MultiHeadModel`) saved at `path`, a run's checkpoint.

    Keras is imported here, not with this module. `strategy` is the
    tf.distribute strategy whose scope the variables are made in; `fix` is the
    second half of the error message ("<what> — <fix>").

    Raises:
      CheckpointError: the file is damaged or not a keras_ffl model.
    """
    import keras

    from keras_ffl.methods import MultiHeadModel

    check_keras_archive(path, fix=fix)
    try:
        with strategy.scope() if strategy is not None else contextlib.nullcontext():
            model = keras.saving.load_model(path, compile=compile)
    except Exception as err:  # Whatever the cause, this file cannot be used.
        reason = " ".join(f"{type(err).__name__}: {err}".split())
        raise CheckpointError(
            f"{path} is damaged or not a keras_ffl model ({reason}) — {fix}"
        ) from err
    if not isinstance(model, MultiHeadModel):
        raise CheckpointError(f"{path} holds a {type(model).__name__}, not a keras_ffl model — {fix}")
    return model


def check_keras_archive(path, *, fix):
    """Raises a CheckpointError naming what makes `path` no .keras file, before Keras
    reads it (Keras calls a file it cannot open "File not found").

    A .keras file is a zip archive of the model's config.json and its weights;
    `path` may be empty, truncated (a zip's start without its end), another kind
    of file, a zip of other files, or one whose members fail their checksums.
    `fix` is the second half of the message.
    """
    with open(path, "rb") as file:
        start = file.read(len(_ZIP_MAGIC))
    size = os.path.getsize(path)
    if not zipfile.is_zipfile(path):
        if not size:
            problem = "it is empty (0 bytes), as a write cut short leaves it"
        elif start == _ZIP_MAGIC:
            problem = (
                f"it is truncated: a .keras (zip) archive's first {size} bytes without its end, "
                "as a copy or a write cut short leaves it"
            )
        else:
            problem = (
                "it is not a .keras (zip) archive, as a copy or a write cut short leaves it"
            )
        raise CheckpointError(f"{path} is damaged: {problem} — {fix}")
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        missing = [
            member
            for member, present in (
                (_KERAS_CONFIG, _KERAS_CONFIG in names),
                (f"{_KERAS_WEIGHTS}.*", any(n.startswith(_KERAS_WEIGHTS) for n in names)),
            )
            if not present
        ]
        if missing:
            shown = ", ".join(names[:5]) + (", …" if len(names) > 5 else "")
            raise CheckpointError(
                f"{path} is not a Keras model: its zip archive has no {' and no '.join(missing)} "
                f"(it holds {shown or 'nothing'}) — {fix}"
            )
        corrupt = archive.testzip()
    if corrupt is not None:
        raise CheckpointError(
            f"{path} is damaged: its {corrupt} fails its checksum, so the file changed after "
            f"it was written — {fix}"
        )


def open_checkpoint(model_dir, checkpoint=None, *, use="load"):
    """(model, config dict, checkpoint name) of a run directory at `checkpoint`.

    The checkpoint is picked as `checkpoint_name` says, and loaded uncompiled,
    for inference. Errors name the other checkpoint when the directory has it;
    `use` says what the caller does with it ("export").
    """
    config = read_config(model_dir)
    name = checkpoint_name(model_dir, checkpoint, use=use)
    others = [c for c in _present_checkpoints(model_dir) if c != name]
    path = os.path.join(model_dir, CHECKPOINTS[name])
    return load_model(path, fix=_use_another(others, use), compile=False), config, name


def remove_temp_files(directory):
    """Deletes temporary files that a killed write left behind.

    Call it only while holding the directory's `lock`: another process's
    temporary files may be writes in progress.
    """
    for entry in os.scandir(directory):
        if entry.name.startswith(TEMP_PREFIX) and entry.is_file():
            os.remove(entry.path)


def check_model_dir(model_dir):
    """Raises a RunError unless `model_dir` is, or can become, a writable directory.

    Reads only, so that a refused start leaves nothing behind. An empty
    `model_dir` raises `validation.ArgumentError`.
    """
    if not model_dir:
        raise ArgumentError(
            "model_dir", "{arg} is empty — pass the run's directory, e.g. {arg}=runs/mine"
        )
    path = os.path.abspath(model_dir)
    existing = path
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        inside = "" if existing == path else f", so it cannot hold the run in {model_dir}"
        raise RunError(
            f"{existing} is a file, not a directory{inside} — choose another model directory"
        )
    if not os.access(existing, os.W_OK | os.X_OK) or _read_only(existing):
        problem = "is on a read-only file system" if _read_only(existing) else "is not writable"
        raise RunError(
            f"{existing} {problem}, so the run in {model_dir} cannot be written — choose a "
            "model directory on a writable file system"
        )


def _read_only(path):
    return bool(os.statvfs(path).f_flag & os.ST_RDONLY)


def fingerprint(directory):
    """{file: (inode, size, mtime)} of the `RUN_FILES` in `directory`: changes on every write."""
    stats = {}
    for name in RUN_FILES:
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):
            stat = os.stat(os.path.join(directory, name))
            stats[name] = (stat.st_ino, stat.st_size, stat.st_mtime_ns)
    return stats


@contextlib.contextmanager
def lock(directory, name=LOCK_FILE):
    """Holds an exclusive lock on `directory` (an existing one) while the block runs.

    The lock is `fcntl.flock` on the file `name` in the directory, which records
    who holds it (pid, host, start time, command). The kernel releases it when
    the process ends in any way, `kill -9` included, so a lock is never stale;
    the file itself is removed on a normal release. flock works across hosts on
    local file systems and Linux NFS clients (as POSIX locks).

    Raises:
      RunError: another process holds the lock (the message names it), or the
        lock file cannot be created.
    """
    path = os.path.join(directory, name)
    attempts = 0
    while True:
        try:
            descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise RunError(
                f"Cannot create the lock file {path} ({err.strerror}) — make {directory} "
                "writable, or choose another directory"
            ) from err
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(descriptor)
            os.close(descriptor)
            attempts += 1
            if attempts < _LOCK_ATTEMPTS:  # Perhaps only `check_unlocked`'s brief look.
                time.sleep(_LOCK_RETRY_SECONDS)
                continue
            raise RunError(_busy_message(directory, holder)) from None
        # The previous holder removes the file when it releases the lock: if it
        # did so after this process opened it, this lock is on a deleted file.
        if _same_file(descriptor, path):
            break
        os.close(descriptor)
    try:
        holder = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "command": " ".join(sys.argv),
        }
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, json.dumps(holder).encode(), 0)
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)
        os.close(descriptor)


def check_unlocked(directory, name=LOCK_FILE):
    """Raises the RunError of `lock` if a live process holds `directory`'s lock. Writes nothing."""
    path = os.path.join(directory, name)
    try:
        descriptor = os.open(path, os.O_RDONLY)
    except (FileNotFoundError, NotADirectoryError):
        return  # A holder always has the file.
    try:
        fcntl.flock(descriptor, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        raise RunError(_busy_message(directory, _read_holder(descriptor))) from None
    finally:
        os.close(descriptor)


def _same_file(descriptor, path):
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        return False
    opened = os.fstat(descriptor)
    return (opened.st_dev, opened.st_ino) == (stat.st_dev, stat.st_ino)


def _read_holder(descriptor):
    try:
        return json.loads(os.pread(descriptor, 65536, 0) or b"{}")
    except (OSError, ValueError):
        return {}


def _busy_message(directory, holder):
    if "pid" not in holder:  # It has just taken the lock and not yet said who it is.
        who, stop = "another process", "stop it"
    else:
        who = (
            f"process {holder['pid']} on {holder.get('host', '?')} (started "
            f"{holder.get('started', '?')}: {holder.get('command', '?')})"
        )
        stop = f"stop it (kill {holder['pid']} on {holder.get('host', '?')})"
    return (
        f"{directory} is in use by {who} — wait for it to finish or {stop}, then rerun "
        "this command; to work in parallel, choose another directory"
    )


def describe_os_error(err):
    """"<what> — <how to fix>" for an OSError from reading or writing files."""
    where = f"{err.filename}: " if err.filename else ""
    fixes = {
        errno.ENOSPC: "free space on that file system, then rerun the same command: "
        "it resumes from the last saved epoch",
        errno.EDQUOT: "free space within your disk quota, then rerun the same command: "
        "it resumes from the last saved epoch",
        errno.EROFS: "choose a directory on a writable file system",
        errno.EACCES: "choose a directory you may write, or fix its permissions",
        errno.EPERM: "choose a directory you may write, or fix its permissions",
    }
    fix = fixes.get(err.errno, "check the path and the file system, then rerun the same command")
    return f"{where}{err.strerror or err} — {fix}"
