"""The name under which the before-training checks were first offered.

Each data source now holds its own checks (`keras_ffl.data`); `check_dataset`
runs those of one dataset.
"""

from keras_ffl.data import check_dataset

__all__ = ["check_dataset"]
