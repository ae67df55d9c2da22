"""Bad data is refused before the first training step, naming the file and the fix."""

import os
import re
import shutil

import numpy as np
import pytest
import tensorflow as tf
from fakedata import band_images, write_idx_dataset, write_png
from filetree import snapshot

from keras_ffl import data, fit, training
from keras_ffl.data import folder

ERROR_LINE = re.compile(r"keras_ffl\.fit: error: \S[^\n]* — \S[^\n]*\n")


def resolve(dataset):
    return training.resolve_config(dataset, arch=("resnet8",), batch_size=2)


def write_images(directory, per_class, classes=("a", "b"), size=8):
    """`per_class` PNGs of one small image in each class folder (writing one encoding)."""
    png = tf.io.encode_png(np.full((size, size, 3), 128, np.uint8)).numpy()
    for name in classes:
        os.makedirs(os.path.join(directory, name), exist_ok=True)
        for i in range(per_class):
            with open(os.path.join(directory, name, f"{i:04d}.png"), "wb") as f:
                f.write(png)
    return str(directory)


def idx(directory, train_labels, test_labels, test_size=8):
    rng = np.random.default_rng(0)
    return write_idx_dataset(
        directory,
        band_images(train_labels, 8, 3, rng),
        train_labels,
        rng.integers(0, 256, (len(test_labels), test_size, test_size)),
        test_labels,
    )


# Images that cannot be decoded -------------------------------------------------


@pytest.fixture
def folder_with_a_corrupt_image(tmp_path):
    """1031 training images, the bad one outside the every-other-image statistics sample."""
    root = tmp_path / "images"
    write_images(root / "train", per_class=515)
    write_images(root / "test", per_class=1)
    bad = os.path.join(root, "train", "a", "0100x.png")  # Index 101: between 0100 and 0101.
    with open(bad, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n but the rest is not a PNG")
    return str(root), bad


def test_a_corrupt_image_among_many_is_named_before_training(folder_with_a_corrupt_image):
    root, bad = folder_with_a_corrupt_image
    with pytest.raises(ValueError) as error:
        resolve(f"folder:{root}")
    message = str(error.value)
    assert message.startswith(f"{bad} in {root} cannot be read as an image (1 of 1033)")
    assert "replace or delete" in message


def test_the_command_refuses_it_in_one_line_and_writes_nothing(
    folder_with_a_corrupt_image, tmp_path, capsys
):
    root, bad = folder_with_a_corrupt_image
    model_dir = tmp_path / "run"
    try:
        argv = fit.parse_flags(["fit", f"--dataset=folder:{root}", f"--model_dir={model_dir}"])
        with pytest.raises(SystemExit) as exit:
            fit.main(argv)
    finally:
        fit.FLAGS.unparse_flags()
    stderr = capsys.readouterr().err
    assert exit.value.code == 1 and ERROR_LINE.fullmatch(stderr) and bad in stderr
    assert not model_dir.exists()


def test_a_decoding_verdict_is_cached_until_a_file_changes(tmp_path, monkeypatch):
    root = write_images(tmp_path / "images", per_class=3)
    data.check_dataset(f"folder:{root}")
    cached = snapshot(folder.cache_dir())

    def no_decoding(*args):
        raise AssertionError("decoded again")

    with monkeypatch.context() as patch:
        patch.setattr(folder, "decode_image", no_decoding)
        data.check_dataset(f"folder:{root}")  # Unchanged files: the cached verdict.
    assert snapshot(folder.cache_dir()) == cached

    changed = os.path.join(root, "b", "0001.png")
    with open(changed, "wb") as f:
        f.write(b"no longer an image")
    with pytest.raises(ValueError, match=re.escape(changed)):
        data.check_dataset(f"folder:{root}")


# Classes -----------------------------------------------------------------------


def test_one_class_is_refused(tmp_path):
    root = write_images(tmp_path / "images", per_class=4, classes=("cats",))
    with pytest.raises(ValueError, match="has one class .cats. — a classifier needs at least 2"):
        resolve(f"folder:{root}")
    directory = idx(tmp_path / "idx", np.zeros(30, int), np.zeros(5, int))
    with pytest.raises(ValueError, match="train-labels-idx1-ubyte has one label, 0"):
        resolve(f"idx:{directory}")


@pytest.mark.parametrize("layout", ["held_out", "train_test"])
def test_an_empty_class_folder_is_refused(tmp_path, layout):
    root = tmp_path / "images"
    class_root = root / "train" if layout == "train_test" else root
    write_images(class_root, per_class=4, classes=("a", "b"))
    (class_root / "empty").mkdir()
    (class_root / "empty" / "notes.txt").write_text("not an image")
    if layout == "train_test":
        write_images(root / "test", per_class=1, classes=("a",))
    with pytest.raises(ValueError) as error:
        resolve(f"folder:{root}")
    assert str(error.value).startswith(f"The class folders {class_root / 'empty'} have no")


def test_test_classes_must_be_training_classes(tmp_path):
    root = tmp_path / "images"
    write_images(root / "train", per_class=4, classes=("a", "b"))
    write_images(root / "test", per_class=2, classes=("a", "zebra"))
    with pytest.raises(ValueError) as error:
        resolve(f"folder:{root}")
    assert str(error.value).startswith(f"{root / 'test'} has class folders that")
    assert "zebra —" in str(error.value)
    # A test split with fewer classes than the training split is fine.
    shutil.rmtree(root / "test" / "zebra")
    assert resolve(f"folder:{root}").num_classes == 2


def test_idx_labels_must_number_trained_classes(tmp_path):
    gap = idx(tmp_path / "gap", np.arange(30) % 3 * 2, np.zeros(5, int))  # Labels 0, 2, 4.
    with pytest.raises(ValueError, match="no image of class 1, 3 — labels must number"):
        resolve(f"idx:{gap}")
    unknown = idx(tmp_path / "unknown", np.arange(30) % 3, np.array([0, 1, 2, 5, 6, 7, 9]))
    with pytest.raises(ValueError) as error:
        resolve(f"idx:{unknown}")
    assert str(error.value).startswith(
        f"{unknown}/t10k-labels-idx1-ubyte has labels 5..7, 9, which no training image has"
    )


def test_idx_test_images_must_have_the_training_size(tmp_path):
    directory = idx(tmp_path / "idx", np.arange(30) % 3, np.arange(5) % 3, test_size=10)
    with pytest.raises(ValueError, match=r"shape \(10, 10, 1\), the training images are \(8, 8"):
        resolve(f"idx:{directory}")


def test_a_good_folder_and_idx_dataset_pass(tmp_path):
    root = tmp_path / "images"
    for split in ("train", "test"):
        for c, name in enumerate(("a", "b")):
            write_png(root / split / name / "0.png", np.full((6, 6, 1), 100 * c, np.uint8))
    data.check_dataset(f"folder:{root}")
    data.check_dataset(f"idx:{idx(tmp_path / 'idx', np.arange(9) % 3, np.arange(3))}")
