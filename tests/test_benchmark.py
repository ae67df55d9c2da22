"""tools/benchmark.py runs end to end on tiny settings and writes the JSON it promises.

No timing is asserted: only that every section ran and reported positive numbers.
"""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_benchmark_writes_every_section(tmp_path):
    output = tmp_path / "benchmark.json"
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    process = subprocess.run(
        [
            sys.executable,
            os.path.join(ROOT, "tools", "benchmark.py"),
            "--device=cpu",
            "--arch=resnet8",
            "--models=ffl",
            "--num_classes=10",
            "--batch_size=4",
            "--steps=2",
            "--warmup=1",
            "--chunk=1",
            "--pipeline_images=64",
            "--pipeline_epochs=1",
            "--serving_steps=2",
            "--serving_batch=4",
            "--serving_heads=fused,sub1",
            f"--output={output}",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert process.returncode == 0, process.stderr[-3000:]
    assert "Ratios" in process.stdout
    results = json.loads(output.read_text())

    machine = results["machine"]
    assert machine["device"] == "cpu" and machine["cpu_count"] >= 1
    assert machine["tensorflow"] and machine["keras"]
    assert machine["jit_compile"] is False  # The CPU default.

    # The vanilla baseline is always measured.
    assert set(results["training"]) == {"vanilla_resnet8", "ffl_resnet8_x2"}
    for entry in results["training"].values():
        assert entry["trainable_params"] > 0
        for mode in ("fit", "loop"):
            stats = entry[mode]
            assert stats["step_s"]["n"] == 2 and stats["step_s"]["median"] > 0
            assert stats["cpu_s"]["median"] > 0 and stats["images_per_s"] > 0
            assert stats["step_memory_mib"] >= 0 and stats["peak_rss_mib"] >= 0
        assert entry["fit"]["steps_per_execution"] == 1
    # At batch 4 a step may fit in memory freed by the previous one; not for every model.
    assert max(e["fit"]["step_memory_mib"] for e in results["training"].values()) > 0

    pipeline = results["pipeline"]
    assert pipeline["images_per_s"] > 0 and pipeline["cpu_s_per_image"]["median"] > 0

    assert set(results["serving"]) == {
        "vanilla_resnet8/sub1", "ffl_resnet8_x2/fused", "ffl_resnet8_x2/sub1"
    }
    for entry in results["serving"].values():
        for batch in ("batch_1", "batch_4"):
            assert entry[batch]["latency_s"]["median"] > 0 and entry[batch]["images_per_s"] > 0

    ratios = results["ratios"]
    assert ratios["ffl_resnet8_x2 fit / vanilla_resnet8 fit"]["cpu"] > 0
    assert ratios["ffl_resnet8_x2 fit / loop"]["wall_paired"]["median"] > 0
    assert ratios["pipeline / ffl_resnet8_x2 fit images per s"]["wall"] > 0
    assert results["memory"]["max_rss_mib"] > 0
