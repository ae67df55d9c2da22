"""TF Serving's directory layout: `<export_dir>/<model>/<version>/` SavedModels and models.config.

Everything is written into a staging directory inside `export_dir` (so on the
same file system) and renamed into place only once complete, so a model server
watching `export_dir` never sees a half-written version.
"""

import contextlib
import os
import re
import shutil
import tempfile

CONFIG_FILE = "models.config"
SAVED_MODEL_FILE = "saved_model.pb"
_NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def check_name(name):
    """Raises ValueError unless `name` is usable as a model name, directory and URL part."""
    if not _NAME_PATTERN.fullmatch(name or ""):
        raise ValueError(
            f"Invalid export name {name!r}: use letters, digits, '_', '.' and '-', "
            "starting with a letter or digit (e.g. --name=cifar100_resnet32)."
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
    """Raises FileExistsError if `version` of any model exists and `overwrite` is off."""
    taken = [
        os.path.join(export_dir, name, str(version))
        for name in model_names
        if os.path.exists(os.path.join(export_dir, name, str(version)))
    ]
    if taken and not overwrite:
        raise FileExistsError(
            f"Version {version} already exists: {', '.join(taken)}. Nothing was written. "
            "Omit --version to export as the next version, or pass --overwrite to replace it."
        )


@contextlib.contextmanager
def staging(export_dir, name):
    """A fresh directory inside `export_dir`, removed with whatever is left in it."""
    os.makedirs(export_dir, exist_ok=True)
    path = tempfile.mkdtemp(prefix=f".{name}.staging-", dir=export_dir)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def install(staged, destination, trash_dir, overwrite):
    """Renames the finished file or directory `staged` to `destination`.

    With `overwrite`, an existing directory at `destination` is first moved into
    `trash_dir` (the staging directory, deleted afterwards) and an existing file
    is replaced atomically; without it, renaming onto an existing version fails.
    """
    os.makedirs(os.path.dirname(destination), exist_ok=True)
    if overwrite and os.path.isdir(destination):
        os.rename(destination, os.path.join(tempfile.mkdtemp(dir=trash_dir), "replaced"))
    os.replace(staged, destination)


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
    descriptor, staged = tempfile.mkstemp(prefix=f".{CONFIG_FILE}.", dir=export_dir)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as file:
            file.write(text)
        os.chmod(staged, 0o644)  # mkstemp's 0600 would hide it from a server run as another user.
        os.replace(staged, path)
    except BaseException:
        os.remove(staged)
        raise
    return path
