"""The benchmark's pure parts (tools/benchmarking): the profile's op categories, the
statistics and per-round ratios, the --models entries, and the paired comparison's
table, on op names and timings written out by hand."""

import os
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools"))

from benchmarking import op_profile, reference, timing  # noqa: E402

NET = "ffl_network"


@pytest.mark.parametrize(
    "name,op_type,category",
    [
        ("SPC/ffl_network_1/shared_stem_conv_1/convolution", "Conv2D", "convolution forward"),
        ("SPC/gradient_tape/ffl_network_1/sub1_x_conv_1/conv/Conv2DBackpropFilter",
         "Conv2DBackpropFilter", "convolution backward"),
        ("SPC/ffl_network_1/fusion_1/depthwise_1/depthwise", "DepthwiseConv2dNative",
         "convolution forward"),
        ("SPC/ffl_network_1/shared_stem_bn_1/Sum", "Sum", "BatchNorm"),
        ("SPC/shared_stage1_block1_1_bn_grad/mul", "Mul", "BatchNorm"),
        ("SPC/ffl_network_1/fusion_1/pointwise_bn_1/sub", "Sub", "BatchNorm"),
        ("SPC/ffl_network_1/shared_stage1_block1_out_1/Relu", "Relu", "element-wise"),
        ("SPC/gradient_tape/ffl_network_1/x_relu_1/ReluGrad", "ReluGrad", "element-wise"),
        ("SPC/AddN_3", "AddN", "element-wise"),
        ("SPC/coupled_sgd/mul_29", "Mul", "optimizer"),
        ("SPC/coupled_sgd/ResourceApplyMomentum_3", "ResourceApplyMomentum", "optimizer"),
        ("SPC/ffl_network_1/sub1_logits_1/MatMul", "MatMul", "classifiers"),
        ("SPC/ffl_network_1/fused_pool_1/Mean", "Mean", "classifiers"),
        ("SPC/SparseSoftmaxCrossEntropyWithLogits/SparseSoftmaxCrossEntropyWithLogits",
         "SparseSoftmaxCrossEntropyWithLogits", "loss and metrics"),
        ("SPC/ArgMax", "ArgMax", "loss and metrics"),
        ("SPC/mul_3", "Mul", "loss and metrics"),
        ("SPC/ffl_network_1/shared_stage2_block1_1_conv_pad_1/Pad", "Pad", "element-wise"),
        ("SPC/Identity_4", "Identity", "copies and other"),
    ],
)  # fmt: skip
def test_ops_fall_in_their_category(name, op_type, category):
    assert op_profile.classify(name, op_type, NET) == category


def chunks(*wall_medians):
    return [{"wall": [w, w, w], "cpu": [2 * w] * 3} for w in wall_medians]


def test_paired_ratios_are_per_round():
    # Round by round the official code takes 2x, 3x, 4x keras_ffl's time (load changes
    # between rounds): the median of the per-round ratios is 3.
    ratio = reference.paired_ratio(chunks(0.2, 0.6, 0.4), chunks(0.1, 0.2, 0.1))
    assert ratio["median"] == pytest.approx(3.0)
    assert ratio["p25"] == pytest.approx(2.5) and ratio["p75"] == pytest.approx(3.5)


def test_report_judges_every_target():
    results = {
        "settings": {"batch_size": 128},
        "training": {
            "official/ffl": chunks(0.42, 0.42), "keras_ffl/ffl": chunks(0.21, 0.28),
            "official/vanilla": chunks(0.30, 0.30), "keras_ffl/vanilla": chunks(0.25, 0.25),
        },
        "eval": {
            **{f"official/{m}/{b}": chunks(0.14, 0.14) for m in ("eval", "no_grad") for b in (128, 1)},
            **{f"keras_ffl/savedmodel/{b}": chunks(0.05, 0.05) for b in (128, 1)},
        },
        "training_max_rss_mib": {
            "official/ffl": 850.0, "keras_ffl/ffl": 1000.0,
            "official/vanilla": 700.0, "keras_ffl/vanilla": 900.0,
        },
        "import_rss_mib": {
            "official/ffl": 220.0, "keras_ffl/ffl": 600.0,
            "official/vanilla": 220.0, "keras_ffl/vanilla": 600.0,
        },
    }  # fmt: skip
    rows = {row["what"]: row for row in reference.report(results)}
    ffl = rows["ffl ResNet-32 training step (throughput ratio)"]
    assert ffl["ratio"]["median"] == pytest.approx((2.0 + 1.5) / 2) and ffl["met"]
    vanilla = rows["vanilla ResNet-32 training step (throughput ratio)"]
    assert vanilla["ratio"]["median"] == pytest.approx(1.2) and not vanilla["met"]
    step_ratio = rows["keras_ffl: FFL step / vanilla step"]
    assert step_ratio["ratio"]["median"] == pytest.approx((0.84 + 1.12) / 2) and step_ratio["met"]
    inference = rows["FFL inference, batch 128: official eval forward vs fused SavedModel"]
    assert inference["ratio"]["median"] == pytest.approx(2.8) and inference["met"]
    memory = rows["peak RSS while training ffl (MiB; keras_ffl / official)"]
    assert memory["ratio"]["median"] == pytest.approx(1000 / 850) and memory["met"]
    growth = rows["  of which above the framework's import (ffl)"]
    assert growth["ratio"]["median"] == pytest.approx(400 / 630) and growth["met"] is None


def test_statistics_of_step_times():
    assert timing.intervals([1.0, 1.5, 2.5]) == pytest.approx([0.5, 1.0])
    stats = timing.summarize([1.0, 2.0, 3.0, 4.0, 5.0])
    assert (stats["median"], stats["p25"], stats["p75"], stats["n"]) == (3.0, 2.0, 4.0, 5)
    assert stats["iqr"] == 2.0 and stats["mean"] == 3.0
    assert timing.quartiles([1.0, 2.0, 3.0, 4.0, 5.0]) == {"median": 3.0, "p25": 2.0, "p75": 4.0, "n": 5}
    calls = []
    times = timing.timed(lambda: calls.append(1), 3)
    assert len(calls) == 3 and len(times["wall"]) == len(times["cpu"]) == 3


def fit_entry(wall_medians, cpu_median, images_per_s):
    return {
        "step_s": {"median": float(sorted(wall_medians)[len(wall_medians) // 2])},
        "cpu_s": {"median": cpu_median},
        "chunk_medians": [(w, cpu_median) for w in wall_medians],
        "images_per_s": images_per_s,
    }


def test_benchmark_ratios_against_the_baseline_the_loop_and_the_pipeline():
    from benchmarking import report

    results = {
        "training": {
            "vanilla_resnet8": {"fit": fit_entry([0.1, 0.2, 0.1], 0.2, 40.0)},
            "ffl_resnet8_x2": {
                "fit": fit_entry([0.2, 0.3, 0.15], 0.3, 20.0),
                "loop": fit_entry([0.1, 0.1, 0.1], 0.25, 40.0),
            },
        },
        "pipeline": {"images_per_s": 2000.0, "cpu_s_per_image": {"median": 0.0003}},
    }
    ratios = report.ratios(results, "vanilla_resnet8", batch_size=4)
    versus = ratios["ffl_resnet8_x2 fit / vanilla_resnet8 fit"]
    # Per round 2.0, 1.5, 1.5: median 1.5; of medians 0.2 / 0.1.
    assert versus["wall_paired"] == pytest.approx({"median": 1.5, "p25": 1.5, "p75": 1.75})
    assert versus["wall"] == pytest.approx(2.0) and versus["cpu"] == pytest.approx(1.5)
    assert ratios["ffl_resnet8_x2 fit / loop"]["cpu"] == pytest.approx(1.2)
    pipeline = ratios["pipeline / ffl_resnet8_x2 fit images per s"]
    # 2000 / 20 images per s; 0.3 ms of the pipeline's CPU per image against 75 ms of training's.
    assert pipeline["wall"] == pytest.approx(100.0) and pipeline["cpu_share"] == pytest.approx(0.004)
    assert "vanilla_resnet8 fit / loop" not in ratios


@pytest.mark.parametrize(
    "key,name,branches",
    [("vanilla", "vanilla_resnet32", 1), ("ffl", "ffl_resnet32_x2", 2),
     ("ffl:3", "ffl_resnet32_x3", 3), ("ffl@case2", "ffl_resnet32_wrn16_2", 2)],
)  # fmt: skip
def test_models_entries_name_the_method_its_networks_and_their_number(key, name, branches):
    from benchmarking import models

    spec = models.parse_model(key, "resnet32", "wrn16_2")
    assert (spec.name, spec.branches, spec.key) == (name, branches, key)


def test_an_unknown_variant_is_refused():
    from benchmarking import models

    with pytest.raises(ValueError, match="the one variant is @case2"):
        models.parse_model("ffl@case3", "resnet32", "wrn16_2")


def test_the_pytorch_worker_runs_without_tensorflow():
    # Its peak RSS is compared with keras_ffl's: it must be PyTorch's alone.
    tools = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools")
    code = "import sys, benchmarking.reference_workers; print('tensorflow' in sys.modules)"
    env = dict(os.environ, PYTHONPATH=tools)
    output = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert output.stdout.strip() == "False", output.stderr
