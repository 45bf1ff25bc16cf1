"""The paired table and run plan of benchmarks/bench_no_harm.py on fake results (no training)."""

from pathlib import Path

import pytest

from benchmark_modules import load_benchmark


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("bench_no_harm")


def fake(test):
    return {"test": test, "val": test, "test_per_class": {}, "val_epoch": 1}


def _row(table, dataset):
    line = next(line for line in table.splitlines() if line.startswith(f"| {dataset} "))
    return [cell.strip() for cell in line.split("|")[1:-1]]


def test_paired_differences_and_target_by_hand(bench):
    results = {
        # brain: DSP - U-Net = +0.05, +0.03 -> 4.0 ± 1.4; DSP - FixMatch = -0.02, 0.00 -> -1.0 ± 1.4 (met: >= -1)
        ("brain", "unet", 0): fake(0.70), ("brain", "unet", 1): fake(0.60),
        ("brain", "fixmatch_plf", 0): fake(0.77), ("brain", "fixmatch_plf", 1): fake(0.63),
        ("brain", "dsp", 0): fake(0.75), ("brain", "dsp", 1): fake(0.63),
        # nuclei: DSP - U-Net = -0.02 (not met); the FixMatch run of seed 1 is missing: paired on seed 0 only
        ("nuclei", "unet", 0): fake(0.90), ("nuclei", "fixmatch_plf", 0): fake(0.85),
        ("nuclei", "dsp", 0): fake(0.88), ("nuclei", "unet", 1): fake(0.90), ("nuclei", "dsp", 1): fake(0.88),
    }
    table = bench.paired_table(results, ["nuclei", "brain"])
    brain = _row(table, "brain")
    assert brain[3:] == ["65.0 ± 7.1 (2)", "70.0 ± 9.9 (2)", "69.0 ± 8.5 (2)", "4.0 ± 1.4 (2)", "-1.0 ± 1.4 (2)",
                         "yes"]
    nuclei = _row(table, "nuclei")
    assert nuclei[6:] == ["-2.0 ± 0.0 (2)", "3.0 ± 0.0 (1)", "no"]


def test_dsp_only_overrides_reach_the_dsp_runs_only(bench, tmp_path, monkeypatch):
    monkeypatch.setattr(bench.real_datasets, "ensure_dataset", lambda name, root: Path(root) / name / "datalist.json")
    args = bench.parse_args(["--datasets", "brain", "--seeds", "3", "--set", "diagnostics=true",
                             "--set-dsp", "lambda_dsp=0.5", "--variant", "v"])
    plan = {key: (folder, acr, overrides) for key, folder, _, acr, _, overrides in bench.plan_runs(args, tmp_path)}
    assert sorted(plan) == [("brain", m, 3) for m in ("dsp", "fixmatch_plf", "unet")]
    folder, acr, overrides = plan["brain", "dsp", 3]
    assert folder == tmp_path / "v" / "brain" / "dsp" / "seed3" and acr == 8
    assert overrides == {"datalist": str(tmp_path / "data" / "brain" / "datalist.json"), "diagnostics": True,
                         "lambda_dsp": 0.5}
    assert "lambda_dsp" not in plan["brain", "fixmatch_plf", 3][2]
    assert "lambda_dsp" not in plan["brain", "unet", 3][2]
