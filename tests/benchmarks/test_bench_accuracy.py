"""The aggregation and bookkeeping of benchmarks/bench_accuracy.py on fake results (no training)."""

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_accuracy.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_accuracy", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def fake(test, val=None, per_class=None):
    return {"test": test, "val": test if val is None else val,
            "test_per_class": per_class or {"mito": test, "vesicle": None}}


def rows_of(markdown):
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in markdown.splitlines()[2:]]


def test_mean_std_skips_missing_values_and_uses_the_sample_deviation(bench):
    mean, std, count = bench.mean_std([0.5, None, 0.7, math.nan])
    assert count == 2 and mean == pytest.approx(0.6) and std == pytest.approx(math.sqrt(0.02))
    assert bench.mean_std([0.4]) == (0.4, 0.0, 1)
    assert math.isnan(bench.mean_std([None])[0])
    assert bench.format_mean_std([0.5, 0.7]) == "60.0 ± 14.1 (2)"
    assert bench.format_mean_std([]) == "-"


def test_summary_table_orders_methods_and_pairs_differences_by_seed(bench):
    results = {
        ("dsp", 32, 0): fake(0.60), ("dsp", 32, 1): fake(0.50), ("dsp", 1, 0): fake(0.80),
        ("unet", 32, 0): fake(0.40), ("unet", 32, 1): fake(0.45), ("unet", 1, 0): fake(0.79),
        ("fixmatch_plf", 32, 0): fake(0.55),
    }
    rows = rows_of(bench.summary_table(results))
    assert [r[0] for r in rows] == ["U-Net (masks only)", "FixMatch + PLF", "DSP",
                                    "DSP − U-Net (masks only) (paired)", "DSP − FixMatch + PLF (paired)"]
    assert rows[0][1:] == ["79.0 ± 0.0 (1)", "42.5 ± 3.5 (2)"]
    assert rows[2][2] == "55.0 ± 7.1 (2)"
    # DSP - U-Net at ACR 32 per seed: 20 and 5 points.
    assert rows[3][2] == "12.5 ± 10.6 (2)"
    # FixMatch has seed 0 only: one pair; at ACR 1 none.
    assert rows[4][1:] == ["-", "5.0 ± 0.0 (1)"]


def test_per_class_table_averages_where_the_class_is_present(bench):
    results = {
        ("unet", 8, 0): fake(0.4, per_class={"mito": 0.5, "vesicle": None}),
        ("unet", 8, 1): fake(0.6, per_class={"mito": 0.7, "vesicle": 0.2}),
        ("dsp", 8, 0): fake(0.5, per_class={"mito": 0.6, "vesicle": None}),
    }
    rows = rows_of(bench.per_class_table(results))
    assert rows[0] == ["8", "U-Net (masks only)", "60.0", "20.0", "**50.0**"]
    assert rows[1] == ["8", "DSP", "60.0", "n/a", "**50.0**"]


def test_seed_table_marks_missing_runs(bench):
    results = {("unet", 32, 0): fake(0.4), ("unet", 32, 2): fake(0.5)}
    assert rows_of(bench.seed_table(results)) == [["32", "U-Net (masks only)", "40.0", "50.0"]]
    results[("dsp", 32, 2)] = fake(0.6)
    assert rows_of(bench.seed_table(results))[1] == ["32", "DSP", "-", "60.0"]


def test_ablation_table_reports_validation_and_paired_difference_to_the_reference(bench):
    variants = {"reference": {"description": "defaults"},
                "low_dsp": {"description": "smaller DSP weight", "overrides": {"lambda_dsp": 0.1}},
                "never_ran": {"overrides": {"temperature": 0.1}}}
    results = {("reference", 32, 0): fake(0.9, val=0.50), ("reference", 32, 1): fake(0.9, val=0.40),
               ("low_dsp", 32, 0): fake(0.1, val=0.55), ("low_dsp", 32, 1): fake(0.1, val=0.47)}
    rows = rows_of(bench.ablation_table(results, variants))
    assert len(rows) == 2
    assert rows[0][1:4] == ["reference", "defaults", "(reference)"] and rows[0][-1] == "-"
    assert rows[1][3] == "`lambda_dsp=0.1`"
    assert rows[1][4:6] == ["55.0", "47.0"]  # validation, not test
    assert rows[1][-1] == "6.0 ± 1.4 (2)"
    assert bench.ablation_table({}, variants) == "(no finished runs)"


def write_run(folder, test_mean, val_mean, finished=True):
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text(json.dumps({
        "finished": finished, "iterations": 300, "seconds": 100.0,
        "best_validation": {"epoch": 4, "mean": val_mean, "per_class": {"mito": val_mean}}}))
    if test_mean is not None:
        (folder / "test_metrics.json").write_text(json.dumps({"dice": {"mean": test_mean,
                                                                       "per_class": {"mito": test_mean}}}))


def test_finished_runs_are_read_and_skipped_without_running_anything(bench, tmp_path, monkeypatch):
    folder = bench.run_dir(tmp_path, "dsp", 32, 1)
    assert folder == tmp_path / "dsp" / "acr32" / "seed1"
    write_run(folder, 0.61, 0.58)
    monkeypatch.setattr(bench, "_call", lambda *a: pytest.fail("a finished run must not be run again"))
    assert bench.execute(folder, ["bundle/configs/train.yaml"], 32, 1, {}) == {"status": "skipped"}
    result = bench.load_result(folder)
    assert (result["test"], result["val"], result["val_epoch"], result["iterations"]) == (0.61, 0.58, 4, 300)
    assert bench.load_result(tmp_path / "missing") is None


def test_a_trained_but_unevaluated_run_is_only_evaluated(bench, tmp_path, monkeypatch):
    folder = tmp_path / "run"
    write_run(folder, None, 0.5)
    calls = []
    monkeypatch.setattr(bench, "_call", lambda args, log: calls.append(args))
    outcome = bench.execute(folder, ["bundle/configs/train.yaml", "configs/methods/dsp.yaml"], 8, 2,
                            {"lambda_dsp": 0.5, "pseudo_label_source": "ema"})
    assert outcome["status"] == "ran" and len(calls) == 1
    args = calls[0]
    assert args[:5] == [sys.executable, "-m", "monai.bundle", "run", "evaluating"]
    configs = args[args.index("--config_file") + 1]
    assert configs.endswith(f"'{folder / 'overrides.yaml'}','bundle/configs/evaluate.yaml']")
    assert args[args.index("--acr") + 1] == "8" and args[args.index("--seed") + 1] == "2"
    assert (folder / "overrides.yaml").read_text() == 'lambda_dsp: 0.5\npseudo_label_source: "ema"\n'


def test_reproduce_command_drops_output_only_options(bench):
    script = str(BENCH)
    argv = [script, "--acrs", "1", "32", "--root", "/tmp/x", "--report-only", "--note", "seeds 3 and 4 later",
            "--note=x", "--no-write", "--set", "lambda_dsp=0.5 "]
    assert bench.reproduce_command(argv) == (
        "python benchmarks/bench_accuracy.py --acrs 1 32 --set 'lambda_dsp=0.5 '"
    )


def test_variants_file_is_validated(bench, tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text("reference: {description: defaults}\nweak_only: {overrides: {loss_terms#dsp_strong#weight: 0}}\n")
    assert bench.load_variants(str(good))["weak_only"]["overrides"] == {"loss_terms#dsp_strong#weight": 0}
    bad = tmp_path / "bad.yaml"
    bad.write_text("broken: {overrides: [1, 2]}\n")
    with pytest.raises(ValueError, match="variant 'broken'"):
        bench.load_variants(str(bad))


def test_plot_writes_a_png(bench, tmp_path):
    results = {(m, a, s): fake(0.3 + 0.1 * s) for m in ("unet", "dsp") for a in (1, 32) for s in (0, 1)}
    path = tmp_path / "plot.png"
    bench.plot(results, path, "test")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
