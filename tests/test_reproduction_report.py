"""tools/reproduction_report.py: the RESULTS.md tables and claim verdicts from run results."""

import pathlib
import sys

import numpy as np
import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "tools"))
import reproduction_report  # noqa: E402


def run(accuracy_by_head):
    return {
        "arch": "resnet8",
        "epochs": 2,
        "steps_per_epoch": 3,
        "batch_size": 128,
        "seconds": 30.0,
        "test_accuracy": {head: [0.5, acc] for head, acc in accuracy_by_head.items()},
    }


@pytest.fixture
def runs(tmp_path):
    labels = np.array([0, 1, 1, 0])
    runs = {}
    for seed, offset in ((0, 0.0), (1, 0.01)):
        ffl = {"sub1": 0.90, "sub2": 0.90, "sub_mean": 0.90 + offset, "ensemble": 0.91, "fused": 0.92}
        runs.setdefault("ffl", {})[seed] = run(ffl)
        runs.setdefault("ffl_average", {})[seed] = run({**ffl, "fused": 0.93 + offset})
        runs.setdefault("ffl_no_ekd", {})[seed] = run({**ffl, "fused": 0.91})
        runs.setdefault("ffl_no_kd", {})[seed] = run({**ffl, "sub_mean": 0.88})
        for name, logits in (("vanilla", [[1, 0], [0, 1], [1, 0], [1, 0]]),
                             ("vanilla_b", [[1, 0], [0, 1], [0, 3], [0, 2]])):
            runs.setdefault(name, {})[seed] = run({"net": 0.85})
            run_dir = tmp_path / f"{name}_seed{seed}"
            run_dir.mkdir()
            np.save(run_dir / "test_logits.npy", np.array(logits, "float32"))
            np.save(run_dir / "test_labels.npy", labels)
    return runs


def test_report_tables_and_verdicts(runs, tmp_path):
    docs = tmp_path / "docs"
    reproduction_report.write_report(runs, str(tmp_path), str(docs), "python tools/reproduce.py")
    text = (docs / "RESULTS.md").read_text()
    assert (docs / "results_accuracy.png").stat().st_size > 10_000
    # Vanilla 85% -> 15% error; the averaged logits of the two vanilla nets get 3/4 right.
    assert "| vanilla (one network) | 15.00 ± 0.00 |" in text
    assert "| 2-net (two independent networks) | 15.00 ± 0.00 | 25.00 ± 0.00 |" in text
    assert "| FFL | 9.50 ± 0.50 | 9.00 ± 0.00 | 8.00 ± 0.00 |" in text
    # Sub-networks: 15 -> 10 or 9 points of error, a gain of 5.5 ± 0.5: holds.
    assert "| FFL's sub-networks beat a vanilla network | +5.50 ± 0.50 | holds |" in text
    # Averaging fused 7% / 6% error vs fusion module 8%: the claim does not hold here.
    assert "A vs B) | -1.50 ± 0.50 | does not hold |" in text
    assert "EKD helps the fused classifier (A vs C) | +1.00 ± 0.00 | holds |" in text
    assert "python tools/reproduce.py" in text
    # 12 runs of 30 s; of the six claims 5 hold, none is within noise, 1 does not hold.
    assert "Training took 6 minutes" in text
    assert "5 hold beyond seed noise here, 0 point the paper's way" in text
    assert "and 1 does not hold" in text and "2 seeds resolve" in text
