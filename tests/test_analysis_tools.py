"""tools/gradcam.py and tools/report.py on tiny trained runs: files, sizes, numbers, errors."""

import json
import os
import re
import shutil
import struct
import subprocess
import sys

import keras
import numpy as np
import pytest
from test_analysis import numpy_ece
from test_fit import REPO, subprocess_env, write_idx

from keras_ffl import run_dir, training
from keras_ffl.analysis import draw_gradcam, load_run, predict_test_split, write_report
from keras_ffl.analysis.cam_figure import Column, _pick_cases
from keras_ffl.analysis.predictions import Predictions
from keras_ffl.validation import ArgumentError

pytestmark = pytest.mark.slow  # Each module run trains two tiny runs first.

#: Two epochs of two steps: enough for a checkpoint and a history, in seconds.
TINY = {
    "arch": ("resnet8",),
    "batch_size": 32,
    "eval_batch_size": 16,
    "rampup_epochs": 2,
    "steps_per_epoch": 2,
    "validation_steps": 1,
}
SIZE = 12  # write_idx's image size.
TEST_IMAGES = 48


@pytest.fixture(scope="module")
def idx_data(tmp_path_factory):
    return write_idx(str(tmp_path_factory.mktemp("data") / "idx"), n_test=TEST_IMAGES, size=SIZE)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, idx_data):
    """{method: model_dir} of a 2-epoch FFL run and a 1-epoch vanilla run."""
    root = tmp_path_factory.mktemp("runs")
    model_dirs = {}
    for method, epochs in (("ffl", 2), ("vanilla", 1)):
        config = training.resolve_config(f"idx:{idx_data}", method=method, epochs=epochs, **TINY)
        model_dirs[method] = str(root / method)
        training.train(config, model_dirs[method], verbose=0)
    return model_dirs


def png_size(path):
    """(width, height) of a PNG file, read from its signature and IHDR chunk."""
    with open(path, "rb") as f:
        header = f.read(24)
    assert header[:8] == b"\x89PNG\r\n\x1a\n" and header[12:16] == b"IHDR", f"{path} is no PNG"
    return struct.unpack(">II", header[16:24])


def test_gradcam_draws_one_row_per_image_and_a_column_per_head(runs, tmp_path):
    output = str(tmp_path / "cams" / "gradcam.png")
    lines = draw_gradcam(runs["ffl"], output, indices=[5, 0, 47])
    # Columns: the image, sub1, sub2, fused; 1.7 x 2.0 inches each at 100 dpi.
    assert png_size(output) == (4 * 170, 3 * 200)
    assert "test images [5, 0, 47]; sub1, sub2, fused" in lines[-1]


def test_gradcam_with_compare_adds_the_compared_network_and_picks_cases(runs, tmp_path):
    output = str(tmp_path / "gradcam.png")
    lines = draw_gradcam(runs["ffl"], output, compare=runs["vanilla"], images=3)
    drawn = re.search(r"test images \[([\d, ]*)\]", lines[-1]).group(1).split(", ")
    missing = [line for line in lines[:-1] if line.startswith("No test image where")]
    assert len(drawn) + len(missing) == 3
    # Columns: the image, the compared run, sub1, sub2, fused; plus a margin for the cases.
    assert png_size(output) == (5 * 170 + 30, len(drawn) * 200)
    assert "vanilla, sub1, sub2, fused" in lines[-1]


def test_cases_follow_the_paper_and_report_a_missing_one():
    labels = np.array([0, 1, 2, 0, 1, 2])

    def predictions(head, right):
        # Right rows predict the label, wrong ones the next class.
        predicted = np.where(right, labels, (labels + 1) % 3)
        return Predictions({head: np.eye(3)[predicted]}, labels)

    vanilla = predictions("sub1", np.array([1, 0, 1, 0, 1, 0], bool))
    ffl = predictions("fused", np.array([1, 1, 1, 0, 1, 0], bool))
    columns = [Column("vanilla", None, "sub1"), Column("fused", None, "fused")]
    indices, row_labels, notes = _pick_cases(columns, ffl, "fused", vanilla, 6)
    # All right: 0, 2, 4, of which two are wanted, classes not shown yet first (0 and 2);
    # fused right and vanilla wrong: 1 only; all wrong: 3 and 5.
    assert indices == [0, 2, 1, 3, 5]
    assert row_labels == ["all right"] * 2 + ["fused right, vanilla wrong"] + ["all wrong"] * 2
    assert notes == ["Only 1 of 2 test images where fused right, vanilla wrong."]
    ffl = predictions("fused", np.array([1, 0, 1, 0, 1, 0], bool))
    indices, _, notes = _pick_cases(columns, ffl, "fused", vanilla, 3)
    assert indices == [0, 1]
    assert notes == ["No test image where fused right, vanilla wrong."]


def test_gradcam_rejects_indices_outside_the_test_split(runs, tmp_path):
    with pytest.raises(ArgumentError, match=rf"indices holds {TEST_IMAGES}, outside.* 0 to 47"):
        draw_gradcam(runs["ffl"], str(tmp_path / "g.png"), indices=[0, TEST_IMAGES])
    assert not os.path.exists(tmp_path / "g.png")


def _numpy_probabilities(model_dir, idx_data):
    """Every head's softmax on the IDX test files, computed without the data pipeline."""
    with open(os.path.join(model_dir, run_dir.CONFIG_FILE)) as f:
        config = json.load(f)
    with open(os.path.join(idx_data, "t10k-images-idx3-ubyte"), "rb") as f:
        images = np.frombuffer(f.read()[16:], np.uint8).reshape(-1, SIZE, SIZE, 1)
    with open(os.path.join(idx_data, "t10k-labels-idx1-ubyte"), "rb") as f:
        labels = np.frombuffer(f.read()[8:], np.uint8)
    x = (images.astype(np.float32) - np.float32(config["mean"])) / np.float32(config["std"])
    model = keras.saving.load_model(os.path.join(model_dir, run_dir.BEST_CHECKPOINT))
    logits = {h: np.float64(v) for h, v in model.network(x, training=False).items()}
    return {h: np.exp(v) / np.exp(v).sum(axis=1, keepdims=True) for h, v in logits.items()}, labels


def _table_rows(report, first_column):
    """The cells of report.md's table rows that start with `first_column`."""
    return [
        [cell.strip() for cell in line.strip("|").split("|")]
        for line in report.splitlines()
        if line.startswith(f"| {first_column} |")
    ]


def test_report_numbers_equal_an_independent_computation(runs, idx_data, tmp_path):
    output_dir = str(tmp_path / "report")
    files = write_report([runs["ffl"], runs["vanilla"]], output_dir)
    with open(os.path.join(output_dir, "report.md"), encoding="utf-8") as f:
        report = f.read()
    probabilities, labels = _numpy_probabilities(runs["ffl"], idx_data)
    rows = _table_rows(report, "ffl")
    calibration = {row[1]: row for row in rows if len(row) == 5 and "," not in row[1]}
    assert set(calibration) == {"sub1", "sub2", "fused"}
    for head, row in calibration.items():
        accuracy = np.mean(probabilities[head].argmax(axis=1) == labels)
        assert float(row[2].rstrip("%")) == pytest.approx(100 * accuracy, abs=0.005)
        ece = numpy_ece(probabilities[head], labels)
        assert float(row[4].rstrip("%")) == pytest.approx(100 * ece, abs=0.005 + 1e-9)
    (pair,) = [row for row in rows if row[1] == "sub1, sub2"]
    p, q = probabilities["sub1"], probabilities["sub2"]
    disagreement = np.mean(p.argmax(axis=1) != q.argmax(axis=1))
    assert float(pair[2].rstrip("%")) == pytest.approx(100 * disagreement, abs=0.005 + 1e-9)
    assert float(pair[3]) == pytest.approx(np.mean(np.sum(p * np.log(p / q), axis=1)), abs=5e-5)
    assert float(pair[4]) == pytest.approx(np.mean(np.sum(q * np.log(q / p), axis=1)), abs=5e-5)
    assert "vanilla: one sub-network, no pair to compare." in report
    # The figures: two runs side by side; two schedule panels; 2 runs x 3 heads of diagrams.
    sizes = {os.path.basename(path): png_size(path) for path in files if path.endswith(".png")}
    assert sizes == {
        "accuracy.png": (800, 320),
        "schedule.png": (800, 320),
        "calibration.png": (960, 640),
    }
    for name in sizes:
        assert f"]({name})" in report


def test_report_and_gradcam_refuse_a_run_without_checkpoints(runs, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    shutil.copy(os.path.join(runs["ffl"], run_dir.CONFIG_FILE), empty)
    with pytest.raises(FileNotFoundError, match="holds no checkpoint"):
        write_report([str(empty)], str(tmp_path / "report"))
    with pytest.raises(run_dir.RunError, match="not a training run's directory"):
        draw_gradcam(str(tmp_path / "nowhere"), str(tmp_path / "g.png"))
    assert not os.path.exists(tmp_path / "report" / "report.md")


def test_predictions_are_the_whole_test_split_in_order(runs, idx_data):
    run = load_run(runs["ffl"])
    assert run.checkpoint == "best" and run.primary_head == "fused"
    test = predict_test_split(run, batch_size=5)  # A last batch of 3.
    probabilities, labels = _numpy_probabilities(runs["ffl"], idx_data)
    np.testing.assert_array_equal(test.labels, labels)
    for head in ("sub1", "sub2", "fused"):
        np.testing.assert_allclose(test.probabilities[head], probabilities[head], atol=1e-5)


def test_the_commands_write_their_files_and_explain_bad_input(runs, tmp_path):
    report = subprocess.run(
        [sys.executable, "tools/report.py", f"--model_dir={runs['ffl']}", runs["vanilla"],
         f"--output_dir={tmp_path / 'report'}"],
        cwd=REPO, env=subprocess_env(), capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert report.returncode == 0, report.stderr
    assert (tmp_path / "report" / "report.md").exists()
    cams = subprocess.run(
        [sys.executable, "tools/gradcam.py", f"--model_dir={runs['ffl']}", "--indices=0,99",
         f"--output={tmp_path / 'g.png'}"],
        cwd=REPO, env=subprocess_env(), capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert cams.returncode == 1
    assert "gradcam failed: --indices holds 99, outside the test split" in cams.stderr
