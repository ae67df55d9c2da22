"""Training a method on a dataset in a model directory, split by job.

`config` resolves and checks a run's configuration, `run` starts or resumes it
and commits every epoch, `callbacks` are the run's Keras callbacks, `results`
summarises its history. The public names of each are re-exported here, so
`from keras_ffl import training; training.train(...)` is the entry point.
"""

from keras_ffl.run_dir import RunError
from keras_ffl.training.callbacks import EpochCommit, NonFiniteLoss, StopOnNonFiniteLoss
from keras_ffl.training.config import (
    DTYPE_POLICIES,
    RESUMABLE_CHANGES,
    RunConfig,
    check_same_run,
    resolve_config,
)
from keras_ffl.training.results import best_row, format_results, summarize
from keras_ffl.training.run import Run, build_model, prepare, train

__all__ = [
    "DTYPE_POLICIES",
    "RESUMABLE_CHANGES",
    "EpochCommit",
    "NonFiniteLoss",
    "Run",
    "RunConfig",
    "RunError",
    "StopOnNonFiniteLoss",
    "best_row",
    "build_model",
    "check_same_run",
    "format_results",
    "prepare",
    "resolve_config",
    "summarize",
    "train",
]
