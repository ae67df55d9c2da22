"""tools/reproduction_report.py and tools/reproduction_runner.py: the protocol's commands, the
paper's tables and the claim verdicts, from run directories as the training command
writes them."""

import csv
import json
import pathlib
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "tools"))
import reproduction_report as report  # noqa: E402
import reproduction_runner as runner  # noqa: E402


def write_run(output_dir, name, seed, final_accuracy, finished=True):
    """A run directory with a two-epoch history.csv (and results.json when finished)."""
    path = pathlib.Path(report.run_path(str(output_dir), name, seed))
    path.mkdir(parents=True)
    columns = [f"val_{head}_acc" for head in final_accuracy]
    with open(path / "history.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, ["epoch", "loss", *columns])
        writer.writeheader()
        writer.writerow({"epoch": 0, "loss": 1.0, **dict.fromkeys(columns, 0.5)})
        writer.writerow({"epoch": 1, "loss": 0.5, **{
            f"val_{head}_acc": acc for head, acc in final_accuracy.items()
        }})
    if finished:
        (path / "results.json").write_text("{}")


def test_gain_standard_error_and_verdicts_by_hand():
    # Gains 1.0, 2.0, 3.0: mean 2, sample std 1, standard error 1/sqrt(3) = 0.577.
    mean, error, n = report.paired_gain({0: 11.0, 1: 12.0, 2: 13.0, 3: 9.0},
                                        {0: 10.0, 1: 10.0, 2: 10.0})
    assert (mean, n) == (2.0, 3)
    assert error == pytest.approx(1 / 3**0.5)
    assert report.verdict(2.0, 0.577) == "holds"
    assert report.verdict(1.0, 0.577) == "same direction but unresolved"
    assert report.verdict(-0.1, 0.01) == "does not hold"
    assert report.paired_gain({0: 1.0}, {1: 1.0}) is None
    assert report.fmt({0: 10.0, 1: 12.0}) == "11.00 ± 1.41"


def test_report_tables_and_claims_from_run_directories(tmp_path):
    out, docs = tmp_path / "runs", tmp_path / "docs"
    for seed, offset in ((0, 0.0), (1, 0.01)):
        write_run(out, "vanilla", seed, {"sub1": 0.85})
        write_run(out, "ffl", seed, {"sub1": 0.89, "sub2": 0.91, "sub_mean": 0.90 + offset,
                                     "fused": 0.92, "ensemble": 0.91})
        write_run(out, "ffl_average", seed, {"sub_mean": 0.90, "fused": 0.93 + offset})
        write_run(out, "ensemble", seed, {"sub1": 0.86, "sub2": 0.86, "sub_mean": 0.86,
                                          "ensemble": 0.90})
    write_run(out, "dualnet", 0, {"sub_mean": 0.80, "fused": 0.85, "avg": 0.88}, finished=False)
    (out / "timing.json").write_text(json.dumps({
        "ffl/seed0": {"cpu_s": 3600.0, "wall_s": 4000.0},
        "ffl/seed1": {"cpu_s": 1800.0, "wall_s": 2000.0},
    }))

    path = report.write_report(str(out), str(docs), [0, 1], "python tools/reproduce.py",
                               parameters={"ffl": 146510, "ensemble": 155508})
    text = pathlib.Path(path).read_text()
    # Vanilla 85% -> 15% error on both seeds; FFL's sub-networks 10% and 9%.
    assert "| vanilla | | | | | 15.00 ± 0.00 |" in text
    assert "| A | ✓ | ✓ | ✓ | 8.00 ± 0.00 | 9.50 ± 0.71 |" in text
    assert "| 2-net (two independent networks, averaged logits) | 155,508 | 10.00 ± 0.00 |" in text
    # Gains 5 and 6 points: mean 5.5, standard error 0.5; more than twice it: holds.
    assert "| FFL's sub-networks beat a vanilla network | IV | 1.11 (Table IV, ImageNet) " \
           "| +5.50 ± 0.50 | 2 | holds |" in text
    # Averaging's fused classifier is better here (7% and 6% error vs 8%).
    assert "| The fusion module beats averaging: fused (A vs B) | II | 0.54 (Table II) " \
           "| -1.50 ± 0.50 | 2 | does not hold |" in text
    # DualNet has not finished: its claims are reported as not run, not dropped.
    assert "| FFL's fused classifier beats DualNet's Z_avg | I | 1.93 (Table I(a)) | — | 0 " \
           "| not run yet |" in text
    assert "Finished runs: 8 of 24. The runs have recorded 1.5 CPU-hours" in text
    assert "| D | ✓ | | | — | — |" in text and report.fmt({0: 9.0}) == "9.00 (1 seed)"
    # Standard errors 0.5 (three claims) and 0 (one): the largest is 0.5.
    assert "the largest standard error of a gain is 0.50 points" in text
    assert "    python tools/reproduce.py" in text
    for filename in report.PLOTS:
        assert (docs / filename).stat().st_size > 5_000
        assert f"]({filename})" in text


def test_every_run_is_the_training_command_with_its_options(tmp_path):
    command = runner.run_command("ffl_no_kd", 2, str(tmp_path))
    assert command[1:4] == ["-m", "keras_ffl.fit", "--dataset=fashion_mnist"]
    assert {"--method=ffl", "--seed=2", "--ekd=false", "--fkd=false"} <= set(command)
    assert f"--model_dir={tmp_path}/ffl_no_kd/seed2" in command
    case2 = runner.run_command("dml_case2", 0, str(tmp_path))
    assert f"--arch={','.join(report.CASE2_ARCH)}" in case2


def test_finished_runs_are_not_trained_again(tmp_path):
    write_run(tmp_path, "ffl", 0, {"fused": 0.9})
    write_run(tmp_path, "vanilla", 0, {"sub1": 0.9}, finished=False)
    todo = runner.pending(["ffl", "vanilla"], [0, 1], str(tmp_path))
    assert todo == [("vanilla", 0), ("ffl", 1), ("vanilla", 1)]


def test_runs_train_side_by_side_recording_cpu_time_and_failures(tmp_path, monkeypatch):
    def fake_command(name, seed, output_dir, data_dir=None):
        code = 1 if name == "vanilla" else 0
        return [sys.executable, "-c", f"import sys; sum(range(3_000_000)); sys.exit({code})"]

    monkeypatch.setattr(runner, "run_command", fake_command)
    failed = runner.train_missing([("ffl", 0), ("vanilla", 0), ("ffl", 1)], str(tmp_path),
                                     workers=2, threads=1)
    assert failed == [("vanilla", 0)]
    timing = report.read_timing(str(tmp_path))
    assert set(timing) == {"ffl/seed0", "vanilla/seed0", "ffl/seed1"}
    for entry in timing.values():
        assert 0 < entry["cpu_s"] and 0 < entry["wall_s"]
    assert (tmp_path / "ffl" / "seed1.log").exists()


def test_a_stopped_runner_stops_its_runs_and_keeps_their_time(tmp_path, monkeypatch):
    monkeypatch.setattr(runner, "run_command", lambda *args, **kwargs: [
        sys.executable, "-c", "import time; time.sleep(60)"
    ])
    sleeps = iter([None, KeyboardInterrupt])

    def sleep(seconds):
        if (event := next(sleeps)) is not None:
            raise event

    monkeypatch.setattr(runner.time, "sleep", sleep)
    with pytest.raises(KeyboardInterrupt):
        runner.train_missing([("ffl", 0)], str(tmp_path), workers=1, threads=1)
    assert set(report.read_timing(str(tmp_path))) == {"ffl/seed0"}
