"""Choosing a tf.distribute strategy, and what each worker may write under it.

Keras builds, compiles and trains a model under `strategy.scope()`; the global
batch is split evenly over the replicas. Under multi-worker training every
worker runs the same program, but only the chief may write the model
directory; the others write to a temporary directory of their own, as in
TensorFlow's multi-worker Keras guide.
"""

import contextlib
import os
import re
import shutil
import tempfile

import keras
import tensorflow as tf

from keras_ffl import run_dir
from keras_ffl.arguments import ArgumentsError
from keras_ffl.validation import ArgumentError

STRATEGIES = ("auto", "one_device", "mirrored", "multi_worker_mirrored", "tpu")
#: The first Keras release whose `fit` and `evaluate` run under several workers of
#: MultiWorkerMirroredStrategy (keras-team/keras#20585), or None while no release
#: does (the issue is open; Keras 3.15 still fails). Set it when a release fixes it:
#: `keras_fit_scope` then leaves that release and later ones unchanged.
KERAS_MULTI_WORKER_FIX = None


def get_strategy(name="auto", tpu=""):
    """Returns the strategy called `name` (one of `STRATEGIES`).

    - auto: "mirrored" when the machine has more than one GPU, else TF's default
      strategy (one device: the GPU if there is one, else the CPU).
    - one_device: the first GPU, or the CPU.
    - mirrored: synchronous training on every local GPU (or the CPU).
    - multi_worker_mirrored: synchronous training over the workers that the
      TF_CONFIG environment variable lists (one worker without it).
    - tpu: the TPU named by `tpu` (a name or grpc:// address; "" means the
      local TPU or the one the environment names).
    """
    if name not in STRATEGIES:
        raise ValueError(f"Unknown strategy {name!r}. Known strategies: {', '.join(STRATEGIES)}.")
    if name == "multi_worker_mirrored":
        # Must come before anything initialises TensorFlow's runtime, such as
        # listing logical devices.
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "tpu":
        return _tpu_strategy(tpu)
    gpus = tf.config.list_physical_devices("GPU")
    if name == "one_device":
        return tf.distribute.OneDeviceStrategy("/gpu:0" if gpus else "/cpu:0")
    if name == "mirrored" or len(gpus) > 1:
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def _tpu_strategy(tpu):
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu)
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
    except (ValueError, tf.errors.OpError) as err:
        raise ArgumentsError(
            f"No TPU found ({err}). Pass {{arg:tpu}}=<name or grpc://address> of a TPU this "
            "machine can reach, or choose another {arg:strategy}."
        ) from err
    return tf.distribute.TPUStrategy(resolver)


def check_batch_size(batch_size, strategy):
    """Raises an ArgumentError unless the global `batch_size` splits evenly over the replicas."""
    replicas = strategy.num_replicas_in_sync
    if batch_size % replicas:
        lower = batch_size - batch_size % replicas
        options = f"{lower} or {lower + replicas}" if lower else str(replicas)
        raise ArgumentError(
            "batch_size",
            f"{{arg}}={batch_size} is the global batch and must be divisible by the "
            f"{replicas} replicas of {type(strategy).__name__}; use a multiple of "
            f"{replicas}, e.g. {options}.",
        )


def is_chief(strategy):
    """Whether this worker writes the model directory (always true on one worker)."""
    return strategy.extended.should_checkpoint


@contextlib.contextmanager
def write_directory(model_dir, strategy):
    """Yields where this worker writes: `model_dir` on the chief, else a temporary directory.

    The chief creates `model_dir` and holds its `run_dir.lock` until the block
    ends, so one process at a time writes a model directory. Non-chief workers
    still run every save (so all workers take the same code path), into a
    directory of their own that is deleted on exit, and take no lock.
    """
    if is_chief(strategy):
        os.makedirs(model_dir, exist_ok=True)
        with run_dir.lock(model_dir):
            yield model_dir
        return
    task_id = strategy.cluster_resolver.task_id
    temp_dir = tempfile.mkdtemp(prefix=f"keras_ffl_worker{task_id}_")
    try:
        yield temp_dir
    finally:
        shutil.rmtree(temp_dir, ignore_errors=True)


@contextlib.contextmanager
def keras_fit_scope(model, strategy):
    """The context in which to call `model.fit` under `strategy`.

    Keras releases before `KERAS_MULTI_WORKER_FIX` cannot run `fit` or
    `evaluate` with several workers of MultiWorkerMirroredStrategy: before
    the first step it all-reduces a whole (x, y) batch, which fails, and after
    every step it all-reduces the step's scalar metrics along an axis 0 they do
    not have. Under that strategy this context works around both while `fit`
    runs: the model hides the strategy it recorded (Keras then skips that
    first all-reduce and takes the strategy from the enclosing scope), and its
    train and test steps return their metrics with a leading axis of size 1.
    Every other strategy, and a Keras that has the fix, runs Keras unchanged.
    """
    multi_worker = isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) and (
        strategy.num_replicas_in_sync > len(strategy.extended.worker_devices)
    )
    if not (multi_worker and keras_needs_multi_worker_workaround()):
        yield
        return
    with strategy.scope():
        if not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
        recorded = model._distribute_strategy
        model._distribute_strategy = None
        model.train_step = _with_leading_axis(model.train_step)
        model.test_step = _with_leading_axis(model.test_step)
        model.train_function = model.test_function = None
        try:
            yield
        finally:
            del model.train_step, model.test_step
            model.train_function = model.test_function = None
            model._distribute_strategy = recorded


def keras_needs_multi_worker_workaround(version=None):
    """Whether Keras `version` (default: the installed one) needs `keras_fit_scope`'s workaround."""
    if KERAS_MULTI_WORKER_FIX is None:
        return True
    release = tuple(int(part) for part in re.findall(r"\d+", version or keras.version())[:3])
    return release < KERAS_MULTI_WORKER_FIX


def _with_leading_axis(step):
    def step_with_leading_axis(data):
        return keras.tree.map_structure(
            lambda value: keras.ops.expand_dims(value, 0) if len(value.shape) == 0 else value,
            step(data),
        )

    return step_with_leading_axis
