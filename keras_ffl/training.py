"""One training run in a model directory: start or resume, commit every epoch, report.

See `keras_ffl.run_dir` for the directory's files. An epoch is committed in the
order history.csv, state.json (recording the epoch's optimizer step), last.keras,
best.keras, state.json (marking the epoch complete), and a resumed run takes its
epoch from the optimizer step of last.keras. A process killed at any moment
therefore loses at most the epoch in progress, and rerunning the same command
resumes it.
"""

import contextlib
import dataclasses
import importlib.util
import json
import math
import os

import keras
import numpy as np
import tensorflow as tf

from keras_ffl import data, data_checks, distribute, methods, recipes, run_dir, validation
from keras_ffl.callbacks import catch_interrupts
from keras_ffl.heads import SUB_MEAN
from keras_ffl.models import get_architecture
from keras_ffl.run_dir import (
    BEST_CHECKPOINT,
    CONFIG_FILE,
    HISTORY_FILE,
    LAST_CHECKPOINT,
    RESULTS_FILE,
    STATE_FILE,
    TENSORBOARD_DIR,
    RunError,
)
from keras_ffl.schedules import step_learning_rate

#: Keys of config.json that may change when a run resumes: the epoch count may
#: grow, and the recipe's name only says where the values came from.
RESUMABLE_CHANGES = ("epochs", "recipe")
#: `--mixed_precision` values and the Keras dtype policies they select.
DTYPE_POLICIES = {"none": "float32", "float16": "mixed_float16", "bfloat16": "mixed_bfloat16"}



@dataclasses.dataclass(frozen=True, kw_only=True)
class RunConfig(recipes.Recipe):
    """Everything that defines a run: the method and its options, the recipe's values
    resolved, the data, the seed.

    It is what config.json holds, so it also carries the dataset facts that an
    exporter needs (classes, input shape, normalisation).
    """

    method: str
    method_options: dict
    dataset: str
    recipe: str
    seed: int
    num_classes: int
    image_shape: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def to_json(self):
        """The configuration as JSON-compatible values (tuples become lists)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @property
    def method_class(self):
        """The `MultiHeadModel` subclass of the run's method."""
        return methods.get_method(self.method)

    @property
    def best_metric(self):
        """The history column that selects best.keras: the primary head's test accuracy."""
        return f"val_{self.method_class.primary_head}_acc"


def resolve_config(dataset, *, method="ffl", recipe=None, seed=0, data_dir=None, **overrides):
    """Returns the `RunConfig` of a run of `method` on `dataset`.

    Values come from `recipe` (default: the dataset's recipe kind) and the
    method's option defaults, with `overrides` (any `recipes.Recipe` field or
    option of the method, e.g. the flags given on the command line) taking
    precedence. `arch` may be one name (case 1) or several (case 2, where
    `branches` is their number). `steps_per_epoch` defaults to one pass over the
    training split in full batches.
    """
    method_class = methods.get_method(method)
    data_checks.check_dataset(dataset, data_dir)
    spec = data.get_spec(dataset, data_dir)
    recipe_name = recipe or spec.recipe
    fields = {f.name for f in dataclasses.fields(recipes.Recipe)}
    option_names = {o.name for o in method_class.options}
    given = set(overrides)
    unknown = sorted(given - fields - option_names)
    if unknown:
        raise ValueError(_unknown_settings_message(method, unknown, fields, option_names))
    options = {
        k: v for k, v in recipes.OPTION_DEFAULTS.get(recipe_name, {}).items() if k in option_names
    }
    options.update((k, v) for k, v in overrides.items() if k in option_names)
    overrides = {k: v for k, v in overrides.items() if k in fields}
    values = dataclasses.asdict(dataclasses.replace(recipes.get_recipe(recipe_name), **overrides))

    names = values["arch"].split(",") if isinstance(values["arch"], str) else values["arch"]
    # Canonical names, so that "ResNet-32" and "resnet32" make the same run.
    values["arch"] = tuple(get_architecture(name).name for name in names)
    values["branches"] = _resolve_branches(method_class, values, overrides)
    if overrides.get("shared_stages") is not None and (
        len(values["arch"]) > 1 or not method_class.shares_trunk
    ):
        raise ValueError(
            "--shared_stages applies to one architecture with branches on a shared trunk "
            f"(case 1 of {', '.join(_trunk_sharing_methods())}); sub-networks of several "
            f"architectures, and those of --method={method}, share nothing. Leave it out."
        )
    if values["mixed_precision"] not in DTYPE_POLICIES:
        raise ValueError(
            f"mixed_precision must be one of {sorted(DTYPE_POLICIES)}; "
            f"got {values['mixed_precision']!r}."
        )
    values["lr_milestones"] = tuple(sorted(int(m) for m in values["lr_milestones"]))
    if values["steps_per_epoch"] is None:
        examples = data.num_examples(spec, "train", data_dir)
        values["steps_per_epoch"] = examples // values["batch_size"]
        if not values["steps_per_epoch"]:
            raise ValueError(
                f"{spec.name}'s training split has {examples} examples, fewer than one "
                f"batch of --batch_size={values['batch_size']}; lower --batch_size."
            )
    network_options, model_options = method_class.split_options(options)
    validation.check_hyperparameters(values)
    values = method_class.adapt_recipe(values, {**network_options, **model_options}, given)
    return RunConfig(
        **values,
        method=method,
        method_options={**network_options, **model_options},
        dataset=spec.name,
        recipe=recipe_name,
        seed=int(seed),
        num_classes=spec.num_classes,
        image_shape=tuple(int(d) for d in spec.image_shape),
        mean=tuple(float(m) for m in spec.mean),
        std=tuple(float(s) for s in spec.std),
    )


def _resolve_branches(method_class, values, overrides):
    """The number of sub-networks: the architectures' count in case 2, the method's
    fixed number if it has one, else `branches`."""
    count = len(values["arch"])
    given = overrides.get("branches")
    fixed = method_class.fixed_subnetworks
    if count > 1:
        if given is not None and given != count:
            raise ValueError(
                f"--branches={given} contradicts the {count} architectures of "
                f"--arch={','.join(values['arch'])}; with several architectures (case 2) "
                "leave --branches out."
            )
        if fixed is not None and fixed != count:
            raise ValueError(
                f"--method={method_class.method_name} trains {fixed} sub-network(s); "
                f"--arch={','.join(values['arch'])} names {count}. Give {fixed} architecture(s)."
            )
        return count
    if fixed is not None and given is not None and given != fixed:
        raise ValueError(
            f"--method={method_class.method_name} trains {fixed} sub-network(s); "
            f"leave --branches out (got --branches={given})."
        )
    return method_class.resolve_subnetworks(values["branches"])


def _trunk_sharing_methods():
    return [m for m in methods.method_names() if methods.get_method(m).shares_trunk]


def _unknown_settings_message(method, unknown, fields, option_names):
    owners = {
        name: [m for m in methods.method_names()
               if name in {o.name for o in methods.get_method(m).options}]
        for name in unknown
    }
    other = [f"{n} (an option of --method={'/'.join(o)})" for n, o in owners.items() if o]
    unknown = [n for n, o in owners.items() if not o]
    parts = []
    if other:
        parts.append(
            f"--method={method} does not take {', '.join(other)}; its options: "
            f"{', '.join(sorted(option_names)) or 'none'}."
        )
    if unknown:
        parts.append(f"Unknown settings {unknown}; recipe fields: {sorted(fields)}.")
    return " ".join(parts)


def build_model(config, strategy=None, jit_compile=None):
    """Builds and compiles the model of `config`'s method under `strategy`'s scope.

    `jit_compile` None means XLA on accelerators only: on CPU it is slower.
    """
    strategy = strategy or tf.distribute.get_strategy()
    arch = config.arch[0] if len(config.arch) == 1 else list(config.arch)
    with _dtype_policy(config.mixed_precision), strategy.scope():
        keras.utils.set_random_seed(config.seed)
        model = config.method_class.create(
            arch,
            config.num_classes,
            config.image_shape,
            branches=config.branches,
            shared_stages=config.shared_stages,
            sync_bn=config.sync_bn,
            rampup_epochs=config.rampup_epochs,
            top5=config.top5,
            **config.method_options,
        )
        learning_rate = step_learning_rate(
            config.learning_rate, config.lr_milestones, config.steps_per_epoch, config.lr_factor
        )
        model.compile(
            optimizer=model.make_optimizer(
                learning_rate, config.weight_decay, config.fusion_weight_decay
            ),
            jit_compile=_resolve_jit_compile(jit_compile),
        )
    return model


def prepare(config, model_dir, *, strategy=None, data_dir=None, jit_compile=None):
    """Checks `model_dir` against `config` and returns a `Run` ready to train.

    A new directory starts a run; one holding the same configuration resumes it
    from last.keras (`config.epochs` may be raised to extend it). Reads only:
    every problem (a different configuration, a damaged checkpoint, a batch the
    replicas cannot split) is raised before any file is written.

    Raises:
      RunError: the model directory cannot hold or continue this run.
      ValueError: the global batch does not split over `strategy`'s replicas.
    """
    strategy = strategy or tf.distribute.get_strategy()
    distribute.check_batch_size(config.batch_size, strategy)
    if distribute.is_chief(strategy):
        run_dir.check_model_dir(model_dir)
        run_dir.check_unlocked(model_dir)
    fingerprint = run_dir.fingerprint(model_dir)
    if importlib.util.find_spec("tensorboard") is None:
        raise RunError(
            "The tensorboard package, which writes the run's TensorBoard logs, is not "
            "installed: pip install tensorboard (keras_ffl's setup.py requires it)."
        )
    path = lambda name: os.path.join(model_dir, name)  # noqa: E731
    saved_config = run_dir.read_json(path(CONFIG_FILE))
    has_checkpoint = os.path.isfile(path(LAST_CHECKPOINT))
    if saved_config is None and has_checkpoint:
        raise RunError(
            f"{model_dir} holds {LAST_CHECKPOINT} but no {CONFIG_FILE}, so its run is "
            "unknown; restore the config.json or choose a new --model_dir."
        )
    if saved_config is not None:
        _check_same_run(saved_config, config, model_dir)
    state = run_dir.read_json(path(STATE_FILE)) or {}
    epoch_end_steps = {int(e): int(s) for e, s in state.get("epoch_end_steps", {}).items()}
    if not has_checkpoint:
        model = build_model(config, strategy, jit_compile)
        return Run(config, model_dir, model, strategy, data_dir, fingerprint=fingerprint)

    with _dtype_policy(config.mixed_precision):
        model = _load_checkpoint(
            path(LAST_CHECKPOINT), path(BEST_CHECKPOINT), strategy, jit_compile
        )
    steps = _optimizer_step(model)
    epoch = next((e for e, s in epoch_end_steps.items() if s == steps), None)
    if epoch is None:
        raise RunError(
            f"{path(LAST_CHECKPOINT)} is at optimizer step {steps}, which is the end of no "
            f"epoch recorded in {path(STATE_FILE)} ({epoch_end_steps or 'none'}). Move "
            "last.keras away to restart from epoch 0, or use a new --model_dir."
        )
    if epoch > config.epochs:
        raise RunError(
            f"{model_dir} has completed {epoch} epochs, more than --epochs={config.epochs}; "
            f"pass --epochs={epoch} or more."
        )
    history = [row for row in run_dir.read_history(path(HISTORY_FILE)) if int(row["epoch"]) < epoch]
    if len(history) != epoch:
        raise RunError(
            f"{path(HISTORY_FILE)} has {len(history)} rows for the {epoch} epochs of "
            f"{LAST_CHECKPOINT}; restore it, or move last.keras away to restart from epoch 0."
        )
    return Run(
        config,
        model_dir,
        model,
        strategy,
        data_dir,
        initial_epoch=epoch,
        history=history,
        epoch_end_steps={e: s for e, s in epoch_end_steps.items() if e <= epoch},
        best_epoch=state.get("best_epoch"),
        fingerprint=fingerprint,
    )


def train(config, model_dir, *, strategy=None, data_dir=None, jit_compile=None, verbose=1):
    """Trains (or resumes) the run of `config` in `model_dir`; returns `Run.fit`'s results."""
    run = prepare(
        config, model_dir, strategy=strategy, data_dir=data_dir, jit_compile=jit_compile
    )
    return run.fit(verbose=verbose)


class Run:
    """A prepared run: its configuration, model directory, and model at `initial_epoch`.

    `history` holds one dict per completed epoch; `epoch_end_steps` maps each
    completed epoch (1-based) to the optimizer step at its end; `best_epoch` is
    the epoch best.keras holds; `fingerprint` is `run_dir.fingerprint` of the
    directory when it was read, which must still hold when `fit` locks it.
    """

    def __init__(
        self,
        config,
        model_dir,
        model,
        strategy,
        data_dir,
        initial_epoch=0,
        history=(),
        epoch_end_steps=None,
        best_epoch=None,
        fingerprint=None,
    ):
        self.config = config
        self.model_dir = model_dir
        self.model = model
        self.strategy = strategy
        self.data_dir = data_dir
        self.initial_epoch = initial_epoch
        self.history = list(history)
        self.epoch_end_steps = dict(epoch_end_steps or {})
        self.best_epoch = best_epoch
        self.fingerprint = fingerprint or {}

    def describe(self):
        """One line saying what `fit` will do."""
        total = self.config.epochs
        if not self.initial_epoch:
            return f"Starting a new run in {self.model_dir}: {total} epochs."
        if self.initial_epoch == total:
            return f"The run in {self.model_dir} has completed its {total} epochs."
        return f"Resuming the run in {self.model_dir} after epoch {self.initial_epoch} of {total}."

    def fit(self, verbose=1):
        """Trains up to `config.epochs`, committing every epoch; returns `summarize`'s results.

        The input pipelines are built before anything is written, and the
        directory is written only under its `run_dir.lock`.

        Raises:
          RunError: the loss became NaN or infinite (the last good epoch is
            kept), another process holds the directory, or one wrote to it since
            `prepare` read it.
        """
        datasets = self._datasets() if self.initial_epoch < self.config.epochs else None
        with distribute.write_directory(self.model_dir, self.strategy) as directory:
            if directory == self.model_dir and run_dir.fingerprint(directory) != self.fingerprint:
                raise RunError(
                    f"{directory} changed since this command read it: another process wrote "
                    "to it meanwhile — rerun the same command to continue from what it holds now"
                )
            run_dir.remove_temp_files(directory)
            config_path = os.path.join(directory, CONFIG_FILE)
            if run_dir.read_json(config_path) != self.config.to_json():
                run_dir.write_json(config_path, self.config.to_json())
            best = _best_row(self.config, self.history)
            resumed_best = best is not None and int(best["epoch"]) + 1 == self.initial_epoch
            if resumed_best and self.best_epoch != self.initial_epoch:
                # Killed after committing last.keras but before best.keras: last.keras
                # is the best epoch's model.
                self._save_best(directory, self.initial_epoch)
            if datasets is not None:
                self._train(directory, datasets, verbose)
            results = summarize(self.config, self.history)
            run_dir.write_json(os.path.join(directory, RESULTS_FILE), results)
            self.fingerprint = run_dir.fingerprint(directory)  # What this run now holds.
        return results

    def _datasets(self):
        """The (training, test) pipelines of the run, the training one shuffled afresh."""
        config = self.config
        spec = data.get_spec(config.dataset, self.data_dir)
        # A resumed run shuffles afresh rather than replaying epoch 0's order.
        seed = int(np.random.SeedSequence([config.seed, self.initial_epoch]).generate_state(1)[0])
        train_data = data.make_dataset(
            spec,
            "train",
            config.batch_size,
            data_dir=self.data_dir,
            training=True,
            seed=seed,
            drop_remainder=True,
        ).repeat()
        test_data = data.make_dataset(
            spec, "test", config.eval_batch_size, data_dir=self.data_dir, training=False
        )
        if config.validation_steps:
            test_data = test_data.take(config.validation_steps)
        return train_data, test_data

    def _train(self, directory, datasets, verbose):
        config = self.config
        train_data, test_data = datasets
        callbacks = [
            StopOnNonFiniteLoss(),
            keras.callbacks.TensorBoard(
                os.path.join(directory, TENSORBOARD_DIR), write_graph=False
            ),
            EpochCommit(self, directory),
        ]
        try:
            with (
                catch_interrupts() as stop_on_interrupt,
                distribute.keras_fit_scope(self.model, self.strategy),
            ):
                self.model.fit(
                    train_data,
                    epochs=config.epochs,
                    initial_epoch=self.initial_epoch,
                    steps_per_epoch=config.steps_per_epoch,
                    validation_data=test_data,
                    shuffle=False,  # The pipeline shuffles.
                    callbacks=[*callbacks, stop_on_interrupt],
                    verbose=verbose,
                )
        except NonFiniteLoss as err:
            kept = max(self.epoch_end_steps, default=0)
            raise RunError(
                f"Training stopped: the loss became {err.loss} in epoch {err.epoch + 1}, "
                f"batch {err.batch}; that epoch was not saved and {self.model_dir} keeps the "
                f"last good checkpoint (epoch {kept}) — rerunning the same command resumes "
                "from it; to change the learning rate or other settings, start a new run "
                "in another --model_dir"
            ) from err

    def commit_epoch(self, directory, epoch, logs, learning_rate):
        """Writes epoch `epoch` (0-based)'s history row and checkpoints, in commit order."""
        completed = epoch + 1
        self.history.append({"epoch": epoch, **logs, "learning_rate": learning_rate})
        self.epoch_end_steps[completed] = _optimizer_step(self.model)
        run_dir.write_history(os.path.join(directory, HISTORY_FILE), self.history)
        self._write_state(directory, completed - 1)
        run_dir.save_model(self.model, os.path.join(directory, LAST_CHECKPOINT))
        if int(_best_row(self.config, self.history)["epoch"]) == epoch:
            self._save_best(directory, completed)
        self._write_state(directory, completed)

    def _save_best(self, directory, epoch):
        run_dir.save_model(self.model, os.path.join(directory, BEST_CHECKPOINT))
        self.best_epoch = epoch

    def _write_state(self, directory, epoch):
        best = _best_row(self.config, self.history[:epoch])
        state = {
            "epoch": epoch,
            "epochs": self.config.epochs,
            "best_epoch": self.best_epoch,
            self.config.best_metric: None if best is None else float(best[self.config.best_metric]),
            "epoch_end_steps": {str(e): s for e, s in sorted(self.epoch_end_steps.items())},
        }
        run_dir.write_json(os.path.join(directory, STATE_FILE), state)


class NonFiniteLoss(Exception):
    """The training loss became NaN or infinite at (`epoch`, `batch`)."""

    def __init__(self, epoch, batch, loss):
        super().__init__(f"Non-finite loss {loss} at epoch {epoch}, batch {batch}.")
        self.epoch, self.batch, self.loss = epoch, batch, loss


class StopOnNonFiniteLoss(keras.callbacks.Callback):
    """Stops training at once when the loss is NaN or infinite.

    Unlike `keras.callbacks.TerminateOnNaN`'s graceful stop, raising skips the
    epoch's end, so the diverged epoch is never checkpointed.
    """

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            raise NonFiniteLoss(self._epoch, batch, float(loss))


class EpochCommit(keras.callbacks.Callback):
    """Commits every completed epoch to the model directory (see `Run.commit_epoch`).

    It also records the learning rate the epoch trained with, read before its
    first step (TensorBoard's "learning_rate" is the rate after the last one).
    """

    def __init__(self, run, directory):
        super().__init__()
        self._run = run
        self._directory = directory

    def on_epoch_begin(self, epoch, logs=None):
        self._learning_rate = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))

    def on_epoch_end(self, epoch, logs=None):
        logs = {k: float(keras.ops.convert_to_numpy(v)) for k, v in (logs or {}).items()}
        self._run.commit_epoch(self._directory, epoch, logs, self._learning_rate)


def summarize(config, history):
    """Every head's final and best test accuracy (and top-5 with `config.top5`).

    Heads: the method's (e.g. "sub1".."subn" and "fused"), "ensemble" (the
    sub-networks' mean logits) and "sub_mean" (the mean of the sub-networks'
    accuracies) with two or more sub-networks. Epochs are 1-based.
    """
    heads = config.method_class.metric_heads_of(config.branches)
    summary_heads = heads + ([SUB_MEAN] if config.branches >= 2 else [])
    metrics = {"test_accuracy": (summary_heads, "acc")}
    if config.top5:
        metrics["test_top5_accuracy"] = (heads, "top5")
    results = {"dataset": config.dataset, "epochs": len(history)}
    for key, (names, suffix) in metrics.items():
        results[key] = {}
        for head in names:
            values = [float(row[f"val_{head}_{suffix}"]) for row in history]
            best = int(np.argmax(values))
            results[key][head] = {"final": values[-1], "best": values[best], "best_epoch": best + 1}
    return results


def format_results(results):
    """A small table of every head's final and best test accuracy."""
    lines = [f"Test accuracy on {results['dataset']} after {results['epochs']} epochs:"]
    lines.append(f"  {'head':<10}{'final':>9}{'best':>9}  (epoch)")
    for head, acc in results["test_accuracy"].items():
        lines.append(
            f"  {head:<10}{acc['final']:>9.2%}{acc['best']:>9.2%}  ({acc['best_epoch']})"
        )
    return "\n".join(lines)


# Model directory files --------------------------------------------------------


def _check_same_run(saved, config, model_dir):
    """Raises a RunError naming the keys (method options by name) in which `saved`
    and `config` differ."""
    saved, current = _flat_config(saved), _flat_config(config.to_json())
    keys = sorted((saved.keys() | current.keys()) - set(RESUMABLE_CHANGES))
    differences = [
        f"{key}: {saved.get(key)!r} in the directory, {current.get(key)!r} now"
        for key in keys
        if saved.get(key) != current.get(key)
    ]
    if differences:
        raise RunError(
            f"{model_dir} holds a run with a different configuration, so it cannot be "
            f"resumed with these settings ({'; '.join(differences)}) — rerun with the "
            "directory's settings to resume it, or choose a new --model_dir"
        )


def _flat_config(config):
    """config.json's values with the method's options at the top level."""
    flat = {k: v for k, v in config.items() if k != "method_options"}
    flat.update(config.get("method_options") or {})
    return flat


def _load_checkpoint(path, best_path, strategy, jit_compile):
    try:
        with strategy.scope():
            model = keras.saving.load_model(path)
    except Exception as err:  # Any failure means the file cannot be resumed from.
        raise RunError(
            f"Cannot load the checkpoint {path} ({type(err).__name__}: {err}): it is "
            "damaged or not a keras_ffl checkpoint; nothing was changed — to continue from "
            f"the best epoch instead, copy best.keras over it (cp {best_path} {path}); to "
            f"restart the run from epoch 0, move it away (mv {path} {path}.bad)"
        ) from err
    if not isinstance(model, methods.MultiHeadModel):
        raise RunError(f"{path} holds a {type(model).__name__}, not a keras_ffl checkpoint.")
    model.jit_compile = _resolve_jit_compile(jit_compile)
    return model


def _optimizer_step(model):
    return int(keras.ops.convert_to_numpy(model.optimizer.iterations))


def _resolve_jit_compile(jit_compile):
    if jit_compile is not None:
        return bool(jit_compile)
    return bool(tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("TPU"))


@contextlib.contextmanager
def _dtype_policy(mixed_precision):
    """Builds layers under the Keras dtype policy of `mixed_precision`, then restores it."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(DTYPE_POLICIES[mixed_precision])
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def _best_row(config, history):
    """The history row with the best test accuracy of the method's primary head
    (the first among ties)."""
    if not history:
        return None
    return max(history, key=lambda row: float(row[config.best_metric]))
