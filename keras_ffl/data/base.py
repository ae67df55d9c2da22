"""What every data source declares, and the registry that finds a source by dataset name.

A data source is one module of `keras_ffl.data` that subclasses `DataSource`
and registers it with `register_source` under the form of the `dataset`
argument it answers to: a name ("cifar10") or a prefix with its argument
("idx:<dir>"). The pipeline and the training run reach every dataset through
the functions here, so none of them switches on a dataset's name.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import Callable

import tensorflow as tf

from keras_ffl.validation import ArgumentError

_SPLITS = ("train", "test")


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """What the model and the pipeline need to know about one dataset.

    ``image_shape`` is (H, W, C) as fed to the model; ``mean`` and ``std`` are
    per channel in 0..255 pixel units; ``recipe`` ("cifar", "imagenet" or
    "small") names the training recipe; ``random_flip`` says whether a mirrored
    image is still an example of its class.
    """

    name: str
    num_classes: int
    image_shape: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    train_split: str = "train"
    eval_split: str = "test"
    recipe: str = "cifar"
    random_flip: bool = True

    def split_name(self, split: str) -> str:
        """Maps the role "train"/"test" to the dataset's own split name."""
        if split not in _SPLITS:
            raise ArgumentError(
                "split", f"{{arg}} must be 'train' or 'test', got {split!r} — pass one of them"
            )
        return self.train_split if split == "train" else self.eval_split


class MissingDataError(ArgumentError, FileNotFoundError):
    """Data that is not where a source looked; the fix names an argument such as `data_dir`.

    It is a FileNotFoundError for callers that catch those, and an
    `ArgumentError`, so that a command shows the argument as its flag.
    """


class DataSource(abc.ABC):
    """One dataset: its facts, its checks, its splits' examples and its class names.

    `get_source` constructs a source as ``cls(argument, data_dir)``: `argument`
    is the dataset's name, or what follows the prefix ("idx:<dir>" gives the
    directory); `data_dir` is the `data_dir` argument of the public functions,
    for the sources that look there. Constructing one reads nothing.
    """

    #: Whether `spec` takes an `image_size` (images resized to that square size).
    resizable = False

    def __init__(self, argument: str, data_dir: str | None):
        self.argument = argument
        self.data_dir = data_dir

    @abc.abstractmethod
    def spec(self, image_size: int | None = None) -> DatasetSpec:
        """The dataset's facts (read from its training data where they are not fixed)."""

    @abc.abstractmethod
    def check(self) -> None:
        """Raises ValueError or FileNotFoundError, naming the file and the fix, for
        data that would fail mid-training or train a wrong classifier."""

    @abc.abstractmethod
    def num_examples(self, split_name: str) -> int:
        """How many examples the split (by the dataset's own split name) holds."""

    @abc.abstractmethod
    def examples(
        self, spec: DatasetSpec, split_name: str, *, training: bool, seed: int | None
    ) -> tf.data.Dataset:
        """The split's ``(uint8 image, label)`` examples, shuffled (by `seed`) when `training`.

        Images have `spec`'s shape, except with the "imagenet" recipe, whose
        images keep their own size for the recipe's crops.
        """

    def class_names(self, spec: DatasetSpec) -> list[str]:
        """The name of each class, indexed by label; the labels' numbers unless known."""
        return [str(label) for label in range(spec.num_classes)]


def shuffled(
    ds: tf.data.Dataset, buffer_size: int, *, training: bool, seed: int | None
) -> tf.data.Dataset:
    """`ds` reshuffled each epoch (by `seed`) when `training`, else `ds` in its order."""
    if not training:
        return ds
    return ds.shuffle(buffer_size, seed=seed, reshuffle_each_iteration=True)


#: Factories by the dataset argument's form, a name or a prefix ("idx:"), with the form
#: as users see it ("idx:<dir>").
_SOURCES: dict[str, tuple[str, Callable[[str, str | None], DataSource]]] = {}


def register_source(form: str, factory: Callable[[str, str | None], DataSource]) -> None:
    """Makes `factory` (a `DataSource` subclass) answer to the dataset argument `form`.

    `form` is a name ("cifar10"), or a prefix and a placeholder for what follows
    it ("folder:<dir>"), which `factory` receives as its argument.
    """
    key = _key(form)
    if key in _SOURCES:
        raise ValueError(f"A data source for {_SOURCES[key][0]!r} is already registered.")
    _SOURCES[key] = (form, factory)


def source_forms() -> list[str]:
    """The registered forms of the dataset argument: names sorted, then prefixes sorted."""
    forms = sorted(form for form, _ in _SOURCES.values())
    return [f for f in forms if ":" not in f] + [f for f in forms if ":" in f]


def get_source(name: str, data_dir: str | None = None) -> DataSource:
    """The source of dataset `name` (a registered name or ``<prefix>:<argument>``)."""
    key = _key(name)
    if key not in _SOURCES:
        raise ArgumentError(
            "dataset", f"Unknown dataset {name!r} — use one of: {', '.join(source_forms())}"
        )
    argument = name.removeprefix(key) if key.endswith(":") else name
    return _SOURCES[key][1](argument, data_dir)


def _key(form: str) -> str:
    """A form's key: the name itself, or the prefix with its colon."""
    prefix, colon, _ = form.partition(":")
    return prefix + colon


def get_spec(
    name: str, data_dir: str | None = None, *, image_size: int | None = None
) -> DatasetSpec:
    """Returns the facts of dataset `name`.

    `name` is a registered dataset, ``folder:<dir>`` or ``idx:<dir>``; for the
    last two the classes, image shape, mean and std are read from the training
    data. `image_size` resizes ``folder:`` images to that square size (default:
    their own size if all sampled images share it, else 32). `data_dir` is
    accepted so that every function here takes the same arguments; the facts of
    registered datasets do not depend on it.
    """
    source = get_source(name, data_dir)
    if image_size is not None:
        if not source.resizable:
            raise ArgumentError(
                "image_size",
                f"{{arg}}={image_size!r} resizes the images of image folders, not {name}'s "
                "— leave it out",
            )
        if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
            raise ArgumentError(
                "image_size",
                f"{{arg}}={image_size!r} is not a whole number >= 1 — pass a size in pixels, "
                "or leave it out for the images' own size",
            )
    return source.spec(image_size)


def check_dataset(name: str, data_dir: str | None = None) -> None:
    """Raises ValueError or FileNotFoundError if dataset `name` cannot train a classifier.

    `name` and `data_dir` are as `get_spec` takes them. Run before anything
    trains, it names the file and the fix ("<what> — <how to fix it>") for
    what would otherwise surface mid-training as a TensorFlow traceback, or not
    at all; each source checks what can go wrong with its files.
    """
    get_source(name, data_dir).check()


def num_examples(spec: DatasetSpec, split: str, data_dir: str | None = None) -> int:
    """Returns how many examples `split` ("train" or "test") of `spec` holds."""
    return get_source(spec.name, data_dir).num_examples(spec.split_name(split))


def class_names(spec: DatasetSpec, data_dir: str | None = None) -> list[str]:
    """Returns the name of each class, indexed by label, for captions and reports.

    Fashion-MNIST has its ten names, ``folder:`` datasets their sub-folders'
    names, TFDS datasets the names their prepared info records; otherwise
    (``idx:``, or TFDS data that is not prepared) the labels' numbers.
    """
    return get_source(spec.name, data_dir).class_names(spec)
