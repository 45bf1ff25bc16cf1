"""benchmarks/bench_3d.py without training: the profiles and the memory estimate against a hand count on a network
small enough to count."""

import json

import pytest

from benchmark_modules import load_benchmark


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("bench_3d")


def test_profiles_are_read_from_train_3d(bench):
    cpu, gpu = bench.profile_sizes("cpu"), bench.profile_sizes("gpu")
    assert gpu["roi_size"] == [96, 96, 96] and len(cpu["roi_size"]) == 3
    assert all(side % 16 == 0 for side in cpu["roi_size"] + gpu["roi_size"])  # four poolings of the BasicUNet


def test_memory_estimate_scales_with_the_patch_and_counts_parameters_four_times(bench):
    sizes = {"features": [2, 2, 2, 2, 2, 2], "embedding_dim": 2, "batch_size": 1, "roi_size": [32, 32, 32]}
    small = bench.estimate_bytes(sizes)
    large = bench.estimate_bytes({**sizes, "roi_size": [64, 64, 64]})
    assert small["state_bytes"] == 16 * small["parameters"] == large["state_bytes"]
    # every leaf output scales with the voxel count, except the per-image ones (prototype norms and the like)
    assert 7.5 < large["activation_bytes"] / small["activation_bytes"] <= 8.0
    assert bench.estimate_bytes(sizes, bytes_per_value=2)["activation_bytes"] * 2 == small["activation_bytes"]


def test_report_reads_finished_runs_from_the_3d_layout(bench, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(bench, "memory_table", lambda: "(memory table)")  # it measures in a subprocess
    folder = tmp_path / "dsp" / "acr8" / "seed0"
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text(json.dumps({"best_validation": {"mean": 0.5, "epoch": 2},
                                                     "iterations": 10, "seconds": 20.0}))
    (folder / "test_metrics.json").write_text(json.dumps({"dice": {"mean": 0.45, "per_class": {"mito": 0.45}}}))
    assert bench.main(["--report-only", "--no-write", "--root", str(tmp_path), "--seeds", "0", "1",
                       "--methods", "dsp"]) == 0
    out = capsys.readouterr().out
    assert "dsp seed 0: test 45.0, 10 iterations in 20 s" in out
    assert "dsp seed 1: no finished result" in out
    assert "| dsp | 45.0 ± 0.0 (1) | 45.0 | n/a |" in out
