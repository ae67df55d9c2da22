"""TF Serving's directory layout: `<export_dir>/<model>/<version>/` SavedModels and models.config.

Everything is written into a staging directory inside `export_dir` (so on the
same file system) and renamed into place only once complete, so a model server
watching `export_dir` never sees a half-written version.

An export installs several models (one per head) that must stay at one
version, so `install_all` makes the install all-or-nothing across a crash: it
first commits an install journal into the staging directory, then renames.
One export at a time holds `export_dir`'s lock (`exclusive`), which first
finishes any install a killed export committed and removes the staging
directories of exports that died before committing.
"""

import contextlib
import json
import os
import re
import shutil
import tempfile

from keras_ffl import run_dir
from keras_ffl.arguments import NamesArguments
from keras_ffl.validation import ArgumentError

CONFIG_FILE = "models.config"
SAVED_MODEL_FILE = "saved_model.pb"
#: The lock file of the export writing an export directory.
LOCK_FILE = ".export.lock"
#: Staging directories are named ".<name>.staging-<random>".
STAGING_INFIX = ".staging-"
#: The install journal in a staging directory: present = committed, to be finished.
JOURNAL_FILE = "install.json"
_NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


class VersionExistsError(NamesArguments, FileExistsError):
    """The version an export would write exists; the message names the arguments to change."""


def check_name(name):
    """Raises ArgumentError unless `name` is usable as a model name, directory and URL part."""
    if not _NAME_PATTERN.fullmatch(name or ""):
        raise ArgumentError(
            "name",
            f"Invalid export name {name!r}: use letters, digits, '_', '.' and '-', "
            "starting with a letter or digit (e.g. {arg}=cifar100_resnet32).",
        )
    return name


def safe_name(text):
    """`text` (a directory or dataset name) made into a valid model name."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_.-") or "model"


def versions(model_dir):
    """The versions (integer-named sub-directories) under one model's base path."""
    if not os.path.isdir(model_dir):
        return []
    return sorted(
        int(entry)
        for entry in os.listdir(model_dir)
        if entry.isdigit() and os.path.isdir(os.path.join(model_dir, entry))
    )


def next_version(export_dir, model_names):
    """1 + the highest version of any of `model_names`, so one export shares one version."""
    existing = [v for name in model_names for v in versions(os.path.join(export_dir, name))]
    return 1 + max(existing, default=0)


def check_free(export_dir, model_names, version, overwrite):
    """Raises VersionExistsError (a FileExistsError) if `version` of any model exists and
    `overwrite` is off."""
    taken = [
        os.path.join(export_dir, name, str(version))
        for name in model_names
        if os.path.exists(os.path.join(export_dir, name, str(version)))
    ]
    if taken and not overwrite:
        raise VersionExistsError(
            f"Version {version} already exists: {', '.join(taken)}. Nothing was written. "
            "Omit {arg:version} to export as the next version, or pass {arg:overwrite} to "
            "replace it."
        )


@contextlib.contextmanager
def exclusive(export_dir):
    """Holds `export_dir`'s lock (creating the directory) while the block runs.

    On entry it finishes the installs that killed exports committed and removes
    the staging directories of the others (see `recover`); yields what it did,
    as lines for people.

    Raises:
      run_dir.RunError: another export holds the lock; the message names it.
    """
    os.makedirs(export_dir, exist_ok=True)
    with run_dir.lock(export_dir, LOCK_FILE):
        run_dir.remove_temp_files(export_dir)  # Of models.config writes cut short.
        yield recover(export_dir)


def recover(export_dir):
    """Finishes or removes what killed exports left in `export_dir`; returns what it did.

    A staging directory with a journal was committed: its install is finished,
    every model reaching the new version. One without was not: it is removed,
    no model having been touched. Call it only under `exclusive`'s lock: a live
    export's staging directory looks the same.
    """
    done = []
    for entry in sorted(os.scandir(export_dir), key=lambda e: e.name):
        if not (entry.name.startswith(".") and STAGING_INFIX in entry.name and entry.is_dir()):
            continue
        journal = os.path.join(entry.path, JOURNAL_FILE)
        if os.path.exists(journal):
            version = _finish(export_dir, entry.path)
            done.append(f"finished the interrupted install of version {version} ({entry.name})")
        else:
            done.append(f"removed the staging directory of an export that died: {entry.name}")
        shutil.rmtree(entry.path)
    return done


@contextlib.contextmanager
def staging(export_dir, name):
    """A fresh directory inside `export_dir`, removed with whatever is left in it.

    A directory holding a committed install journal is kept instead, for
    `recover` to finish: the install failed after its point of no return.
    """
    os.makedirs(export_dir, exist_ok=True)
    path = tempfile.mkdtemp(prefix=f".{name}{STAGING_INFIX}", dir=export_dir)
    try:
        yield path
    finally:
        if not os.path.exists(os.path.join(path, JOURNAL_FILE)):
            shutil.rmtree(path, ignore_errors=True)


def install_all(export_dir, stage, paths, version, overwrite):
    """Moves every staged path (relative to `stage`) to the same place in `export_dir`.

    `paths` are model version directories ("<model>/<version>") and files
    (replaced atomically). The journal listing them is committed first: from
    then on a crash leaves the install for `recover` to finish, so every model
    ends at `version` or, before the commit, none does. With `overwrite`, an
    existing version directory is moved into `stage`, deleted with it; without,
    installing onto one fails. Rewrites models.config and returns its path.
    """
    run_dir.write_json(
        os.path.join(stage, JOURNAL_FILE),
        {"version": version, "paths": list(paths), "overwrite": overwrite},
    )
    _finish(export_dir, stage)
    return os.path.join(export_dir, CONFIG_FILE)


def _finish(export_dir, stage):
    """Completes the journaled install in `stage`; it is idempotent. Returns its version."""
    journal_path = os.path.join(stage, JOURNAL_FILE)
    with open(journal_path, encoding="utf-8") as f:
        journal = json.load(f)
    parents = {export_dir}
    for relative in journal["paths"]:
        staged = os.path.join(stage, relative)
        destination = os.path.join(export_dir, relative)
        if not os.path.lexists(staged):
            continue  # Installed before the crash.
        os.makedirs(os.path.dirname(destination), exist_ok=True)
        if os.path.isdir(staged) and os.path.lexists(destination):
            if not journal["overwrite"]:
                raise FileExistsError(
                    f"{destination} appeared during the install of {stage} — move it away, "
                    "then export again to finish the install"
                )
            os.rename(destination, os.path.join(tempfile.mkdtemp(dir=stage), "replaced"))
        os.replace(staged, destination)
        parents.add(os.path.dirname(destination))
    for parent in parents:  # The renames survive a power cut before the journal goes.
        run_dir.fsync_directory(parent)
    write_models_config(export_dir)
    os.remove(journal_path)
    return journal["version"]


def served_models(export_dir):
    """Names of the models in `export_dir` with at least one version holding a SavedModel."""
    names = []
    for entry in sorted(os.listdir(export_dir)):
        base = os.path.join(export_dir, entry)
        if not entry.startswith(".") and any(
            os.path.isfile(os.path.join(base, str(v), SAVED_MODEL_FILE)) for v in versions(base)
        ):
            names.append(entry)
    return names


def models_config_text(export_dir, names):
    """A text-format `ModelServerConfig` serving every model in `names` from `export_dir`."""
    base = os.path.abspath(export_dir)
    entries = "".join(
        "  config {\n"
        f'    name: "{name}"\n'
        f'    base_path: "{os.path.join(base, name)}"\n'
        '    model_platform: "tensorflow"\n'
        "  }\n"
        for name in names
    )
    return f"model_config_list {{\n{entries}}}\n"


def write_models_config(export_dir):
    """Rewrites `export_dir`/models.config atomically for every model found there."""
    path = os.path.join(export_dir, CONFIG_FILE)
    text = models_config_text(export_dir, served_models(export_dir))

    def write(temp):
        with open(temp, "w", encoding="utf-8") as file:
            file.write(text)

    run_dir.replace_atomically(path, write)
    return path
