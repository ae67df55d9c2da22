"""Fashion-MNIST: IDX files in `data_dir`, else from Debian's ``dataset-fashion-mnist``."""

from __future__ import annotations

from keras_ffl.data.base import DatasetSpec, MissingDataError, register_source
from keras_ffl.data.idx import IdxSource, holds_idx_files

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"

#: Fashion-MNIST's labels 0..9, as its authors name them.
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip

# Mean and std of the 60000 training images. Clothes are mirror symmetric, so
# flips are kept (as is customary for Fashion-MNIST).
_SPEC = DatasetSpec("fashion_mnist", 10, (28, 28, 1), (72.94,), (90.02,), recipe="small")


class FashionMnistSource(IdxSource):
    """Fashion-MNIST's IDX files, read and checked as any ``idx:`` dataset's."""

    @property
    def directory(self):
        return fashion_mnist_dir(self.data_dir)

    def spec(self, image_size=None):
        return _SPEC

    def class_names(self, spec):
        return list(FASHION_MNIST_CLASSES)


def fashion_mnist_dir(data_dir: str | None) -> str:
    """Finds Fashion-MNIST's IDX files: in `data_dir` first, then Debian's."""
    candidates = [d for d in (data_dir, FASHION_MNIST_DIR) if d]
    for directory in candidates:
        if holds_idx_files(directory):
            return directory
    raise MissingDataError(
        "data_dir",
        f"Fashion-MNIST's IDX files were not found in {' or '.join(candidates)} — "
        "run `apt-get install dataset-fashion-mnist` (puts them in "
        f"{FASHION_MNIST_DIR}), or pass {{arg}}=<dir holding "
        "train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, "
        "t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz>.",
    )


register_source(_SPEC.name, FashionMnistSource)
