"""One training run in a model directory: start or resume, commit every epoch.

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
import os
import shutil

import keras
import numpy as np
import tensorflow as tf

from keras_ffl import data, distribute, run_dir
from keras_ffl.callbacks import catch_interrupts
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
from keras_ffl.training.callbacks import EpochCommit, NonFiniteLoss, StopOnNonFiniteLoss
from keras_ffl.training.config import DTYPE_POLICIES, check_same_run
from keras_ffl.training.results import best_row, summarize


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
            "unknown; restore the config.json or choose a new {arg:model_dir}."
        )
    if saved_config is not None:
        config = check_same_run(saved_config, config, model_dir)
    state = run_dir.read_json(path(STATE_FILE)) or {}
    epoch_end_steps = {int(e): int(s) for e, s in state.get("epoch_end_steps", {}).items()}
    if not has_checkpoint:
        model = build_model(config, strategy, jit_compile)
        return Run(config, model_dir, model, strategy, data_dir, fingerprint=fingerprint)

    last, best = path(LAST_CHECKPOINT), path(BEST_CHECKPOINT)
    with _dtype_policy(config.mixed_precision):
        model = run_dir.load_model(
            last,
            strategy=strategy,
            fix=f"nothing was changed; to continue from the best epoch instead, copy "
            f"{BEST_CHECKPOINT} over it (cp {best} {last}); to restart the run from epoch 0, "
            f"move it away (mv {last} {last}.bad)",
        )
    model.jit_compile = _resolve_jit_compile(jit_compile)
    steps = _optimizer_step(model)
    epoch = next((e for e, s in epoch_end_steps.items() if s == steps), None)
    if epoch is None:
        raise RunError(
            f"{last} is at optimizer step {steps}, which is the end of no epoch recorded in "
            f"{path(STATE_FILE)} ({epoch_end_steps or 'none'}). Move {LAST_CHECKPOINT} away "
            "to restart from epoch 0, or use a new {arg:model_dir}."
        )
    if epoch > config.epochs:
        raise RunError(
            f"{model_dir} has completed {epoch} epochs, more than {{arg:epochs}}={config.epochs}; "
            f"pass {{arg:epochs}}={epoch} or more."
        )
    history = [row for row in run_dir.read_history(path(HISTORY_FILE)) if int(row["epoch"]) < epoch]
    if len(history) != epoch:
        raise RunError(
            f"{path(HISTORY_FILE)} has {len(history)} rows for the {epoch} epochs of "
            f"{LAST_CHECKPOINT}; restore it, or move {LAST_CHECKPOINT} away to restart from "
            "epoch 0."
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

    def describe_model(self):
        """One line on the model's size and the memory its weights take in training,
        so that a costly choice (say, a hundred branches) is seen before it runs."""
        parameters = self.model.count_params()
        megabytes = parameters * 4 / 2**20  # float32 variables, also under mixed precision.
        return (
            f"Model: {self.config.branches} sub-network(s), {parameters:,} parameters: "
            f"{megabytes:,.1f} MB of weights, about {3 * megabytes:,.1f} MB in training "
            "with their gradients and momentum, plus each sub-network's activations."
        )

    def fit(self, verbose=1):
        """Trains up to `config.epochs`, committing every epoch; returns `summarize`'s results.

        The input pipelines are built before anything is written, and the
        directory is written only under its `run_dir.lock`.

        Raises:
          RunError: the loss became NaN or infinite (the last good epoch is
            kept), an epoch's input ran out of data (the epoch is not committed),
            another process holds the directory, or one wrote to it since
            `prepare` read it.
        """
        datasets = self._datasets() if self.initial_epoch < self.config.epochs else None
        with self._write_directory() as directory:
            if directory == self.model_dir and run_dir.fingerprint(directory) != self.fingerprint:
                raise RunError(
                    f"{directory} changed since this command read it: another process wrote "
                    "to it meanwhile — rerun the same command to continue from what it holds now"
                )
            run_dir.remove_temp_files(directory)
            config_path = os.path.join(directory, CONFIG_FILE)
            if run_dir.read_json(config_path) != self.config.to_json():
                run_dir.write_json(config_path, self.config.to_json())
            best = best_row(self.config, self.history)
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

    @contextlib.contextmanager
    def _write_directory(self):
        """`distribute.write_directory`, undone if the block fails before an epoch commits.

        A start that fails (an overflow, data that runs out, Ctrl-C in the first
        epoch) thus leaves the directory as it found it, and a new one not at all:
        its config.json would otherwise make the corrected command "a different
        configuration". Only what this process added under the lock is removed;
        once an epoch is committed the run is resumable and everything is kept.
        """
        missing = _missing_directories(self.model_dir)
        try:
            with distribute.write_directory(self.model_dir, self.strategy) as directory:
                before = set(os.listdir(directory))
                try:
                    yield directory
                except BaseException:
                    if not self.history:
                        _remove_entries(directory, set(os.listdir(directory)) - before)
                    raise
        except BaseException:
            if not self.history:
                for path in missing:
                    with contextlib.suppress(OSError):  # Not empty: kept.
                        os.rmdir(path)
            raise

    def _datasets(self):
        """The (training, test) pipelines of the run, the training one shuffled afresh."""
        config = self.config
        # The run's normalisation: the dataset's statistics, or the input convention of
        # its architectures (e.g. raw pixels for a Keras Application that rescales inside).
        spec = dataclasses.replace(
            data.get_spec(config.dataset, self.data_dir), mean=config.mean, std=config.std
        )
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
            EpochCommit(self, directory, config.steps_per_epoch),
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
            stopped = (
                f"Training stopped: the loss became {err.loss} in epoch {err.epoch + 1}, "
                f"batch {err.batch}; that epoch was not saved"
            )
            if not self.history:
                raise RunError(
                    f"{stopped} and {self.model_dir} was left as it was — lower "
                    "{arg:learning_rate} (or change the other settings) and rerun"
                ) from err
            raise RunError(
                f"{stopped} and {self.model_dir} keeps the last good checkpoint (epoch "
                f"{max(self.epoch_end_steps)}) — rerunning the same command resumes from it; "
                "to change the learning rate or other settings, start a new run in another "
                "{arg:model_dir}"
            ) from err

    def commit_epoch(self, directory, epoch, logs, learning_rate):
        """Writes epoch `epoch` (0-based)'s history row and checkpoints, in commit order."""
        completed = epoch + 1
        self.history.append({"epoch": epoch, **logs, "learning_rate": learning_rate})
        self.epoch_end_steps[completed] = _optimizer_step(self.model)
        run_dir.write_history(os.path.join(directory, HISTORY_FILE), self.history)
        self._write_state(directory, completed - 1)
        run_dir.save_model(self.model, os.path.join(directory, LAST_CHECKPOINT))
        if int(best_row(self.config, self.history)["epoch"]) == epoch:
            self._save_best(directory, completed)
        self._write_state(directory, completed)

    def _save_best(self, directory, epoch):
        run_dir.save_model(self.model, os.path.join(directory, BEST_CHECKPOINT))
        self.best_epoch = epoch

    def _write_state(self, directory, epoch):
        best = best_row(self.config, self.history[:epoch])
        state = {
            "epoch": epoch,
            "epochs": self.config.epochs,
            "best_epoch": self.best_epoch,
            self.config.best_metric: None if best is None else float(best[self.config.best_metric]),
            "epoch_end_steps": {str(e): s for e, s in sorted(self.epoch_end_steps.items())},
        }
        run_dir.write_json(os.path.join(directory, STATE_FILE), state)


def _missing_directories(path):
    """`path` and those of its parents that do not exist, deepest first."""
    missing = []
    path = os.path.abspath(path)
    while not os.path.exists(path):
        missing.append(path)
        path = os.path.dirname(path)
    return missing


def _remove_entries(directory, names):
    for name in names:
        path = os.path.join(directory, name)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        else:
            os.remove(path)


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
