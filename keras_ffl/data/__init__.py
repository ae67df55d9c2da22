"""Input pipelines: the datasets FFL trains on, as normalised tf.data batches.

Every dataset comes from a data source, one module of this package each:
TFDS (CIFAR-10/100, ImageNet), MNIST-format IDX files (``idx:<dir>``),
Fashion-MNIST (IDX files from Debian's ``dataset-fashion-mnist``) and a
directory with one sub-folder of images per class (``folder:<dir>``). A
source subclasses `DataSource`, holds its own checks, and registers the form
of the `dataset` argument it answers to; importing the package imports every
module, so a new source is one new module here and nothing else.
`pipeline.make_dataset` turns any source's examples into training batches.
"""

import importlib
import pkgutil

from keras_ffl.data.base import (
    DatasetSpec,
    DataSource,
    MissingDataError,
    check_dataset,
    class_names,
    get_source,
    get_spec,
    num_examples,
    register_source,
    source_forms,
)
from keras_ffl.data.pipeline import make_dataset, normalization_layer

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

# Functions of single sources that callers use directly.
from keras_ffl.data.fashion_mnist import (  # noqa: E402
    FASHION_MNIST_CLASSES,
    FASHION_MNIST_DIR,
    fashion_mnist_dir,
)
from keras_ffl.data.folder import decode_image, folder_classes, folder_files  # noqa: E402
from keras_ffl.data.idx import idx_files, read_idx_split  # noqa: E402

__all__ = [
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_DIR",
    "DataSource",
    "DatasetSpec",
    "MissingDataError",
    "check_dataset",
    "class_names",
    "decode_image",
    "fashion_mnist_dir",
    "folder_classes",
    "folder_files",
    "get_source",
    "get_spec",
    "idx_files",
    "make_dataset",
    "normalization_layer",
    "num_examples",
    "read_idx_split",
    "register_source",
    "source_forms",
]
