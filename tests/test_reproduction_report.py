"""tools/reproduction: the protocol's commands, the paper's tables and the claim verdicts,
from run directories as the training command writes them."""

import csv
import json
import pathlib
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "tools"))
from reproduction import mobile, protocol, report, runner, runs, verdicts  # noqa: E402


def write_run(output_dir, name, seed, final_accuracy, finished=True, training=0.5):
    """A run directory with a two-epoch history.csv (and results.json when finished): the
    heads' test accuracy 0.5 then `final_accuracy`, the sub-networks' training accuracy
    0.4 then `training`."""
    path = pathlib.Path(runs.run_path(str(output_dir), name, seed))
    path.mkdir(parents=True)
    columns = [f"val_{head}_acc" for head in final_accuracy]
    with open(path / "history.csv", "w", newline="") as f:
        writer = csv.DictWriter(
            f, ["epoch", "distill_weight", "loss", "sub_mean_acc", *columns]
        )
        writer.writeheader()
        writer.writerow({"epoch": 0, "distill_weight": 0.0067, "loss": 1.0,
                         "sub_mean_acc": 0.4, **dict.fromkeys(columns, 0.5)})
        writer.writerow({"epoch": 1, "distill_weight": 1.0, "loss": 0.5,
                         "sub_mean_acc": training, **{
                             f"val_{head}_acc": acc for head, acc in final_accuracy.items()
                         }})
    if finished:
        (path / "results.json").write_text("{}")


def test_gain_standard_error_and_verdicts_by_hand():
    # Gains 1.0, 2.0, 3.0: mean 2, sample std 1, standard error 1/sqrt(3) = 0.577.
    mean, error, n = verdicts.paired_gain({0: 11.0, 1: 12.0, 2: 13.0, 3: 9.0},
                                        {0: 10.0, 1: 10.0, 2: 10.0})
    assert (mean, n) == (2.0, 3)
    assert error == pytest.approx(1 / 3**0.5)
    assert verdicts.verdict(2.0, 0.577) == "holds"
    assert verdicts.verdict(1.0, 0.577) == "same direction but unresolved"
    assert verdicts.verdict(-0.1, 0.01) == "does not hold"
    assert verdicts.paired_gain({0: 1.0}, {1: 1.0}) is None
    assert report.fmt({0: 10.0, 1: 12.0}) == "11.00 ± 1.41"


def test_report_tables_and_claims_from_run_directories(tmp_path):
    out, docs = tmp_path / "runs", tmp_path / "docs"
    for seed, offset in ((0, 0.0), (1, 0.01)):
        write_run(out, "ffl", seed, {"sub1": 0.89, "sub2": 0.91, "sub_mean": 0.90 + offset,
                                     "fused": 0.92, "ensemble": 0.91})
        write_run(out, "ffl_average", seed, {"sub_mean": 0.90, "fused": 0.93 + offset})
        write_run(out, "ensemble", seed, {"sub1": 0.86, "sub2": 0.86, "sub_mean": 0.86,
                                          "ensemble": 0.93})
        # The convergence check: the same configurations under the shorter schedule.
        write_run(out, "ffl_short", seed, {"sub_mean": 0.895 + offset, "fused": 0.915 + offset})
        write_run(out, "ensemble_short", seed, {"sub_mean": 0.85, "ensemble": 0.91})
    write_run(out, "ffl_short", 2, {"fused": 0.5})  # Not a seed of the report: ignored.
    write_run(out, "dualnet", 0, {"sub_mean": 0.80, "fused": 0.85, "avg": 0.88}, finished=False)
    (out / "timing.json").write_text(json.dumps({
        "ffl/seed0": {"cpu_s": 3600.0, "wall_s": 4000.0},
        "ffl/seed1": {"cpu_s": 1800.0, "wall_s": 3200.0},
        "ffl_short/seed0": {"cpu_s": 1800.0, "wall_s": 1800.0},
        "retired_run/seed0": {"cpu_s": 9000.0, "wall_s": 9000.0},  # No longer a run: ignored.
    }))

    path = report.write_report(str(out), str(docs), [0, 1], "python tools/reproduce.py",
                               parameters={"ffl": 146510, "ensemble": 155508, "vanilla": 77754},
                               mobile_parameters={})
    text = pathlib.Path(path).read_text()
    # The vanilla network is the 2-net's members: 86% -> 14% error on both seeds.
    assert "| vanilla | | | | | 14.00 ± 0.00 |" in text
    assert "| vanilla (the 2-net's members) | 77,754 | 14.00 ± 0.00 |" in text
    assert "| A | ✓ | ✓ | ✓ | 8.00 ± 0.00 | 9.50 ± 0.71 |" in text
    assert "| 2-net (two independent networks, averaged logits) | 155,508 | 7.00 ± 0.00 |" in text
    # Gains 4 and 5 points: mean 4.5, standard error 0.5 (0.45 of the paper's 1.11): holds.
    assert "| FFL's sub-networks beat a vanilla network | IV | 1.11 (Table IV, ImageNet) " \
           "| +4.50 ± 0.50 | 0.45 | 2 | holds |" in text
    # Averaging's fused classifier is better here (7% and 6% error vs 8%).
    assert "| The fusion module beats averaging: fused (A vs B) | II | 0.54 (Table II) " \
           "| -1.50 ± 0.50 | 0.93 | 2 | does not hold |" in text
    # ... so the report says what pins FFL's loss, and the ramp-up the runs recorded.
    assert "- *The fusion module beats averaging: fused (A vs B)*: FFL's loss terms" in text
    assert "FFL B (averaging): w = 0.0067, 1; FFL: w = 0.0067, 1." in text
    # DualNet has not finished: its claims are reported as not run, not dropped.
    assert "| FFL's fused classifier beats DualNet's Z_avg | I | 1.93 (Table I(a)) | — | — | 0 " \
           "| not run yet |" in text
    n_runs, n_checks = len(protocol.RUNS) * 2, len(protocol.CONVERGENCE_RUNS) * 2
    assert f"Finished runs: 6 of {n_runs}, and 4 of {n_checks} runs of the convergence check." \
        in text
    assert "| the protocol | 1.5 | 2.0 | 1.0 |" in text
    assert "| the convergence check | 0.5 | 0.5 | 0.2 |" in text
    assert "| D | ✓ | | | — | — |" in text and report.fmt({0: 9.0}) == "9.00 (1 seed)"
    # Convergence: pass by pass, mean over seeds (50% after pass 1; 90.5% after pass 2).
    assert "| FFL sub-networks | 50.00 | 90.50 | +40.50 |" in text
    # Over seeds 0 and 1, after the shorter schedule and the protocol's: FFL fused 8.0
    # (8.5 and 7.5) and 8.0, vanilla 15.0 and 14.0; the shorter runs' last pass took 50%
    # to 92% and 85%.
    assert "| FFL fused | 8.00 | 8.00 | +0.00 | +42.00 |" in text
    assert "| vanilla resnet8x0.5 (2-net members) | 15.00 | 14.00 | -1.00 | +35.00 |" in text
    assert "| FFL C (no EKD) fused | — | — | — | — |" in text
    # Last passes of the heads with both schedules: 42, 40, 41, 35 and 42, 40.5, 43, 36.
    assert "after 6 passes, at most 42.00 points (median 40.50); after 8 passes, at most " \
           "43.00 points (median 41.25)." in text
    # Claims after both schedules: sub-networks vs vanilla, gains 4.5, 5.5 then 4, 5.
    assert "| FFL's sub-networks beat a vanilla network | +5.00 ± 0.50 | holds | +4.50 ± 0.50 " \
           "| holds |" in text
    assert "| EKD helps the fused classifier (A vs C) | — | not run yet | — | not run yet |" \
        in text
    # The 2-net beats FFL's fused classifier (7% vs 8%), but not after the shorter
    # schedule (9% vs 8.5% and 7.5%): the defect check says so.
    assert "| FFL's fused classifier beats the 2-net ensemble, with fewer parameters | VI " \
           "| 0.85 (Table VI) | -1.00 ± 0.00 |" in text
    assert "Schedule: after 6 passes instead of 8 (the convergence check, seeds 0, 1) the " \
           "gain is +1.00 ± 0.50 (same direction but unresolved), against -1.00 ± 0.00 " \
           "after 8 passes on the same seeds." in text
    # Standard errors 0.5 (four claims) and 0 (one): the largest is 0.5.
    assert "the largest standard error of a gain is 0.50 points" in text
    assert "    python tools/reproduce.py" in text
    assert "scaled to 8 passes, rather than the `small` recipe's own 6" in text
    assert "Case 1 uses `resnet8x0.5` sub-networks" in text and "{" not in text
    for filename in protocol.PLOTS:
        assert (docs / filename).stat().st_size > 5_000
        assert f"]({filename})" in text


def test_every_run_is_the_training_command_with_the_protocol_and_its_options(tmp_path):
    command = runner.run_command("ffl_no_kd", 2, str(tmp_path))
    assert command[1:4] == ["-m", "keras_ffl.fit", "--dataset=fashion_mnist"]
    assert {"--method=ffl", "--seed=2", "--ekd=false", "--fkd=false"} <= set(command)
    assert {f"--arch={protocol.ARCH}", "--epochs=8", "--lr_milestones=4,6"} <= set(command)
    assert f"--model_dir={tmp_path}/ffl_no_kd/seed2" in command
    case2 = runner.run_command("dml_case2", 0, str(tmp_path))
    assert f"--arch={','.join(protocol.CASE2_ARCH)}" in case2
    assert len([flag for flag in case2 if flag.startswith("--arch=")]) == 1
    shorter = runner.run_command("ffl_no_ekd_short", 0, str(tmp_path))
    assert [flag for flag in shorter if flag.startswith("--epochs=")] == ["--epochs=6"]
    assert {"--method=ffl", "--ekd=false", "--lr_milestones=3,5"} <= set(shorter)
    # DualNet's iterative stage ends at the first drop of either schedule.
    assert "--iterative_epochs=4" in runner.run_command("dualnet", 0, str(tmp_path))
    assert "--iterative_epochs=3" in runner.run_command("dualnet_short", 0, str(tmp_path))


def test_finished_runs_are_not_trained_again(tmp_path):
    write_run(tmp_path, "ffl", 0, {"fused": 0.9})
    write_run(tmp_path, "ensemble", 0, {"ensemble": 0.9}, finished=False)
    todo = runner.pending(["ffl_short", "ffl", "ensemble"], [0, 1, 2, 3], str(tmp_path))
    # Seed by seed, the convergence check last and with its first seeds only.
    assert protocol.CONVERGENCE_SEEDS == 3
    assert todo == [("ensemble", 0), ("ffl", 1), ("ensemble", 1), ("ffl", 2), ("ensemble", 2),
                    ("ffl", 3), ("ensemble", 3), ("ffl_short", 0), ("ffl_short", 1),
                    ("ffl_short", 2)]


def test_runs_train_side_by_side_recording_cpu_time_and_failures(tmp_path, monkeypatch):
    def fake_command(name, seed, output_dir, data_dir=None):
        code = 1 if name == "vanilla" else 0
        return [sys.executable, "-c", f"import sys; sum(range(3_000_000)); sys.exit({code})"]

    monkeypatch.setattr(runner, "run_command", fake_command)
    failed = runner.train_missing([("ffl", 0), ("vanilla", 0), ("ffl", 1)], str(tmp_path),
                                     workers=2, threads=1)
    assert failed == [("vanilla", 0)]
    timing = runs.read_timing(str(tmp_path))
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
    assert set(runs.read_timing(str(tmp_path))) == {"ffl/seed0"}


def test_every_claim_table_and_plot_reads_a_run_of_the_protocol():
    for claim in protocol.CLAIMS:
        for name, head in (claim.worse, claim.better):
            assert name in protocol.RUNS and protocol.label(name, head)
            assert protocol.ALL_RUNS[name][0] in protocol.METHOD_CHECKS
    for table in protocol.TABLES:
        assert table.plot in protocol.PLOTS
        for cell in [cell for row in table.rows for cell in row] + list(table.note):
            if isinstance(cell, protocol.Error):
                assert cell.run in protocol.RUNS
            elif isinstance(cell, protocol.Params):
                assert set(cell.runs) <= {*protocol.RUNS, "vanilla"}
    for _, series in protocol.PLOTS.values():
        for name, head in series:
            assert name in protocol.ALL_RUNS and protocol.label(name, head)
    # Each run of the protocol has its convergence-check twin under the shorter schedule.
    assert protocol.shorter(("ffl3", "fused")) == ("ffl3_short", "fused")
    assert protocol.short_run("ffl3_short") is None


def test_options_are_spelled_as_the_training_command_reads_them():
    assert protocol.flag_args({"ekd": False, "lr_milestones": (4, 6), "epochs": 8}) == [
        "--ekd=false", "--lr_milestones=4,6", "--epochs=8"
    ]


def test_the_timing_file_is_replaced_whole(tmp_path):
    runs.write_timing(str(tmp_path), {"ffl/seed1": {"cpu_s": 2.0, "wall_s": 3.0},
                                      "dml_case2/seed0": {"cpu_s": 1.0, "wall_s": 1.0}})
    assert [p.name for p in tmp_path.iterdir()] == [runs.TIMING_FILE]  # No temporary file left.
    timing = runs.read_timing(str(tmp_path))
    assert list(timing) == ["dml_case2/seed0", "ffl/seed1"]
    assert timing["ffl/seed1"] == {"cpu_s": 2.0, "wall_s": 3.0}


def test_the_mobile_study_is_the_training_command_with_its_backbone_and_size(tmp_path):
    command = runner.run_command("mobile_ffl_unshared", 1, str(tmp_path))
    assert {"--method=ffl", "--seed=1", f"--arch={mobile.ARCH}", "--image_size=32",
            "--shared_stages=0", "--epochs=8", "--lr_milestones=4,6"} <= set(command)
    case2 = runner.run_command("mobile_ffl_case2", 0, str(tmp_path))
    assert [flag for flag in case2 if flag.startswith("--arch=")] == [
        f"--arch=resnet8x0.5,{mobile.ARCH}"
    ]
    assert "--branches=2" in runner.run_command("mobile_one", 0, str(tmp_path))
    # The reproduction's runs keep their own protocol.
    assert not any(flag.startswith("--image_size")
                   for flag in runner.run_command("ffl", 0, str(tmp_path)))
    for claim in mobile.CLAIMS:
        for name, head in (claim.worse, claim.better):
            assert name in mobile.RUNS and mobile.label(name, head)
    for name, head in mobile.PLOT_SERIES:
        assert name in mobile.RUNS and mobile.label(name, head)


def test_the_mobile_section_reads_its_runs_beside_the_resnet(tmp_path):
    out, docs = tmp_path / "runs", tmp_path / "docs"
    for seed, offset in ((0, 0.0), (1, 0.03)):
        # The ResNet: FFL's sub-networks 4 and 7 points better than vanilla.
        write_run(out, "ffl", seed, {"sub_mean": 0.90 + offset, "fused": 0.92})
        write_run(out, "ensemble", seed, {"sub_mean": 0.86, "ensemble": 0.93})
        # The mobile network: FFL's sub-networks 1 point worse than vanilla on both seeds.
        write_run(out, "mobile_ensemble", seed,
                  {"sub1": 0.86, "sub2": 0.88, "sub_mean": 0.87, "ensemble": 0.88},
                  training=0.86)
        write_run(out, "mobile_ffl", seed,
                  {"sub1": 0.86, "sub2": 0.86, "sub_mean": 0.86, "fused": 0.87 + offset},
                  training=0.80 + offset)
    (out / "timing.json").write_text(json.dumps({
        "mobile_ffl/seed0": {"cpu_s": 1800.0, "wall_s": 1200.0},
        "ffl/seed0": {"cpu_s": 3600.0, "wall_s": 3600.0},  # The reproduction's.
    }))
    path = report.write_report(str(out), str(docs), [0, 1], "python tools/reproduce.py",
                               parameters={}, mobile_parameters={"vanilla": 307_420,
                                                                 "mobile_ffl": 965_604})
    text = pathlib.Path(path).read_text()
    assert "## A mobile network: FFL with MobileNetV3Small sub-networks" in text
    assert "Finished runs: 4 of 12, costing 0.5 CPU-hours (0.3 wall hours summed" in text
    assert "| vanilla (each member of the 2-net) | 307,420 | | | 13.00 ± 0.00 | | | |" in text
    # Averaging the 2-net's members: 13% -> 12% error on both seeds.
    assert "| 2-net: two vanilla networks, averaged logits | — | 14.00 ± 0.00 | 12.00 ± 0.00 " \
           "| 13.00 ± 0.00 | ensemble: 12.00 ± 0.00 | +1.00 ± 0.00 | 86.00% |" in text
    # Fused 13% and 10% error; training accuracy 80% and 83%, mean 81.5%.
    assert "| FFL: two branches on a shared trunk, fused | 965,604 | 14.00 ± 0.00 " \
           "| 14.00 ± 0.00 | 14.00 ± 0.00 | fused: 11.50 ± 2.12 | — | 81.50% |" in text
    assert "| DML: two peers | — | — | — | — | ensemble: — | — | — |" in text
    assert "| FFL's sub-networks beat a vanilla network | Table IV | -1.00 ± 0.00 | 2 " \
           "| does not hold |" in text
    # Fused over sub-networks: gains 1 and 4 points, mean 2.5, standard error 1.5.
    assert "| FFL's fused classifier beats its own sub-networks | Table II, A | +2.50 ± 1.50 " \
           "| 2 | same direction but unresolved |" in text
    assert "| FFL's sub-networks beat ONE's branches | Table III | — | 0 | not run yet |" in text
    # Beside the ResNet: +5.50 ± 1.50 there (gains 4 and 7), -1.00 here.
    assert "| FFL's sub-networks beat a vanilla network | +5.50 ± 1.50 | -1.00 ± 0.00 |" in text
    assert "python tools/reproduce.py --runs=mobile_ffl,mobile_ensemble," in text
    assert (docs / mobile.PLOT).stat().st_size > 5_000 and f"]({mobile.PLOT})" in text
