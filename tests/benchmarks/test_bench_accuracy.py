"""The aggregation and bookkeeping of benchmarks/bench_accuracy.py on fake results and fake run folders (no
training): tables in the paper's layout, paired differences, per class, plots, resume."""

import json
import math
import sys

import pytest

from benchmark_modules import BENCHMARKS, load_benchmark

BENCH = BENCHMARKS / "bench_accuracy.py"


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("bench_accuracy")


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
    assert bench.format_mean_std([-1e-12, 1e-12]) == "0.0 ± 0.0 (2)"  # never "-0.0"
    assert bench.format_mean_std([-0.0004]) == "0.0 ± 0.0 (1)" and bench.format_mean_std([-0.0006]) == "-0.1 ± 0.0 (1)"


# One variant, the mixed scenario: keys (variant, scenario, method, acr, seed).
MIXED = {
    ("default", "mixed", "dsp", 32, 0): fake(0.60), ("default", "mixed", "dsp", 32, 1): fake(0.50),
    ("default", "mixed", "dsp", 1, 0): fake(0.80),
    ("default", "mixed", "unet", 32, 0): fake(0.40), ("default", "mixed", "unet", 32, 1): fake(0.45),
    ("default", "mixed", "unet", 1, 0): fake(0.79),
    ("default", "mixed", "fixmatch_plf", 32, 0): fake(0.55),
    ("default", "mixed", "cls_branch", 32, 1): fake(0.30),
}


def test_scenario_table_in_the_paper_order_with_mean_std_and_count(bench):
    assert bench.scenario_table(MIXED, "mixed") == (
        "| method | ACR 1 | ACR 32 |\n|---|---|---|\n"
        "| U-Net (masks only) | 79.0 ± 0.0 (1) | 42.5 ± 3.5 (2) |\n"
        "| Classification branch | - | 30.0 ± 0.0 (1) |\n"
        "| FixMatch + PLF | - | 55.0 ± 0.0 (1) |\n"
        "| DSP | 80.0 ± 0.0 (1) | 55.0 ± 7.1 (2) |"
    )


def test_paired_differences_to_the_unet_fixmatch_plf_and_dsp_by_seed(bench):
    rows = rows_of(bench.paired_table(MIXED, "mixed"))
    assert rows == [
        # classification branch - U-Net on seed 1: 30 - 45
        ["Classification branch − U-Net (masks only)", "-", "-15.0 ± 0.0 (1)"],
        ["FixMatch + PLF − U-Net (masks only)", "-", "15.0 ± 0.0 (1)"],
        # DSP - U-Net: ACR 1 seed 0: 1; ACR 32: 20 and 5
        ["DSP − U-Net (masks only)", "1.0 ± 0.0 (1)", "12.5 ± 10.6 (2)"],
        # FixMatch + PLF has seed 0 only; the classification branch seed 1 only: no pair, no row
        ["DSP − FixMatch + PLF", "-", "5.0 ± 0.0 (1)"],
        # the classification branch - DSP on seed 1: 30 - 50; the baselines are not compared with DSP again
        ["Classification branch − DSP", "-", "-20.0 ± 0.0 (1)"],
    ]


def test_variants_side_by_side_and_dsp_against_every_variants_baseline(bench):
    results = {
        ("ce", "boxes", "unet", 8, 0): fake(0.40), ("ce", "boxes", "unet", 8, 1): fake(0.50),
        ("ce", "boxes", "dsp", 8, 0): fake(0.60), ("ce", "boxes", "dsp", 8, 1): fake(0.62),
        ("ce_dice", "boxes", "unet", 8, 0): fake(0.55), ("ce_dice", "boxes", "unet", 8, 1): fake(0.57),
        ("ce_dice", "boxes", "dsp", 8, 0): fake(0.61),
    }
    assert rows_of(bench.scenario_table(results, "boxes")) == [
        ["U-Net (masks only) [ce]", "45.0 ± 7.1 (2)"], ["U-Net (masks only) [ce_dice]", "56.0 ± 1.4 (2)"],
        ["DSP [ce]", "61.0 ± 1.4 (2)"], ["DSP [ce_dice]", "61.0 ± 0.0 (1)"]]
    assert rows_of(bench.paired_table(results, "boxes")) == [
        ["DSP [ce] − U-Net (masks only) [ce]", "16.0 ± 5.7 (2)"],       # 20, 12
        ["DSP [ce] − U-Net (masks only) [ce_dice]", "5.0 ± 0.0 (2)"],   # 5, 5: the stronger baseline
        ["DSP [ce_dice] − U-Net (masks only) [ce_dice]", "6.0 ± 0.0 (1)"],
        ["DSP [ce_dice] − U-Net (masks only) [ce]", "21.0 ± 0.0 (1)"],
    ]


def test_share_table_pairs_all_items_with_masked_items_only_and_no_weak_labels(bench):
    results = {
        ("default", "mixed", "dsp", 8, 0): fake(0.60), ("default", "mixed", "dsp", 8, 1): fake(0.50),
        ("default", "masks", "dsp", 8, 0): fake(0.52), ("default", "masks", "dsp", 8, 1): fake(0.46),
        ("default", "none", "dsp", 8, 1): fake(0.49),
        ("default", "mixed", "unet", 8, 0): fake(0.40), ("default", "masks", "unet", 8, 0): fake(0.40),
    }
    assert rows_of(bench.share_table(results)) == [  # the U-Net trains on the masks in every scenario: no share
        ["DSP", "mixed", "55.0 ± 7.1 (2)"],
        ["DSP", "masks", "49.0 ± 4.2 (2)"],
        ["DSP", "mixed − masks (paired)", "6.0 ± 2.8 (2)"],   # 8, 4
        ["DSP", "none", "49.0 ± 0.0 (1)"],
        ["DSP", "mixed − none (paired)", "1.0 ± 0.0 (1)"],
    ]
    assert bench.share_table(MIXED) == ""


def test_per_class_table_averages_where_the_class_is_present(bench):
    results = {
        ("v", "tags", "unet", 8, 0): fake(0.4, per_class={"mito": 0.5, "vesicle": None}),
        ("v", "tags", "unet", 8, 1): fake(0.6, per_class={"mito": 0.7, "vesicle": 0.2}),
        ("v", "tags", "dsp", 8, 0): fake(0.5, per_class={"mito": 0.6, "vesicle": None}),
        ("v", "mixed", "dsp", 8, 0): fake(0.9, per_class={"er": 0.9}),
    }
    rows = rows_of(bench.per_class_table(results, "tags"))
    assert rows == [["8", "U-Net (masks only)", "60.0", "20.0", "**50.0**"],
                    ["8", "DSP", "60.0", "n/a", "**50.0**"]]


def test_seed_table_marks_missing_runs(bench):
    results = {("v", "mixed", "unet", 32, 0): fake(0.4), ("v", "mixed", "unet", 32, 2): fake(0.5)}
    assert rows_of(bench.seed_table(results, "mixed")) == [["32", "U-Net (masks only)", "40.0", "50.0"]]
    results[("v", "mixed", "dsp", 32, 2)] = fake(0.6)
    assert rows_of(bench.seed_table(results, "mixed"))[1] == ["32", "DSP", "-", "60.0"]


def test_report_has_table_3_then_table_2_blocks_then_the_share(bench):
    results = dict(MIXED)
    results[("default", "points", "dsp", 32, 0)] = fake(0.3)
    results[("default", "tags", "dsp", 32, 0)] = fake(0.2)
    results[("default", "masks", "dsp", 32, 0)] = fake(0.5)
    markdown = bench.report(results, "cpu", "HEADER\n\n", plots={"mixed": "accuracy_vs_acr.png"})
    headings = [line for line in markdown.splitlines() if line.startswith("#")]
    assert headings == [
        "## Accuracy versus annotation compression rate (cpu)", "### Table 3: masks + mixed weak labels",
        "### Table 2: masks + one weak type", "#### masks + tags (`tags`)", "#### masks + points (`points`)",
        "### the masked images only (the other images left out of training) (`masks`)",
        "### The weak labels' own share", "### Details"]
    assert "![Dice versus ACR, mixed](accuracy_vs_acr.png)" in markdown
    assert "| DSP | mixed − masks (paired) | - | 10.0 ± 0.0 (1) |" in markdown


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


def test_plot_draws_mean_and_std_per_method_and_variant(bench, tmp_path):
    results = {("ce", "mixed", "unet", 1, 0): fake(0.3), ("ce", "mixed", "unet", 1, 1): fake(0.5),
               ("ce", "mixed", "unet", 32, 0): fake(0.2),
               ("dice", "mixed", "unet", 32, 0): fake(0.25), ("ce", "boxes", "unet", 8, 0): fake(0.9)}
    path = tmp_path / "plot.png"
    drawn = bench.plot(results, "mixed", path, "test")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(drawn) == ["U-Net (masks only) [ce]", "U-Net (masks only) [dice]"]
    acrs, mean, std = drawn["U-Net (masks only) [ce]"]
    assert acrs == [1, 32] and mean == pytest.approx([40.0, 20.0]) and std == pytest.approx([100 * 0.02 ** 0.5, 0])
    assert drawn["U-Net (masks only) [dice]"][:2] == ([32], [25.0])
    assert bench.plot_path("mixed", "cpu").name == "accuracy_vs_acr.png"
    assert bench.plot_path("boxes", "gpu").name == "accuracy_vs_acr_boxes_gpu.png"
    assert bench.plot_path("mixed", "budget").name == "accuracy_vs_acr_budget.png"
    assert bench.figure_paths("budget")["figure4"].name == "figure4_predictions_budget.png"


def test_profiles_choose_the_config_files_and_budget_excludes_gpu(bench):
    assert bench.profile_of(bench.parse_args([])) == ("cpu", ["configs/sweeps/cpu_study.yaml"])
    assert bench.profile_of(bench.parse_args(["--budget"])) == (
        "budget", ["configs/sweeps/cpu_study.yaml", "configs/sweeps/cpu_budget.yaml"])
    assert bench.profile_of(bench.parse_args(["--gpu"])) == ("gpu", [])
    with pytest.raises(SystemExit, match="--gpu and --budget exclude each other"):
        bench.profile_of(bench.parse_args(["--gpu", "--budget"]))
    for path in bench.profile_of(bench.parse_args(["--budget"]))[1]:
        assert (bench.REPO / path).exists()


# ---------------------------------------------------------------------------------------------------------------
# Fake run folders: the report from disk, and the resume rules
# ---------------------------------------------------------------------------------------------------------------


def write_run(folder, test_mean, val_mean, finished=True, settings=None):
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text(json.dumps({
        "finished": finished, "iterations": 300, "seconds": 100.0,
        "best_validation": {"epoch": 4, "mean": val_mean, "per_class": {"mito": val_mean}}}))
    if test_mean is not None:
        (folder / "test_metrics.json").write_text(json.dumps({"dice": {"mean": test_mean,
                                                                       "per_class": {"mito": test_mean}}}))
    if settings is not None:
        (folder / "run.json").write_text(json.dumps(settings))


def test_report_only_reads_fake_run_folders(bench, tmp_path, capsys):
    numbers = {("default", "mixed", "unet", 8, 0): 0.40, ("default", "mixed", "unet", 8, 1): 0.44,
               ("default", "mixed", "dsp", 8, 0): 0.50, ("default", "mixed", "dsp", 8, 1): 0.56,
               ("default", "boxes", "dsp", 8, 0): 0.45, ("dice", "mixed", "unet", 8, 0): 0.47}
    for key, value in numbers.items():
        settings = {"configs": ["bundle/configs/train.yaml", f"configs/methods/{key[2]}.yaml", "x.yaml"],
                    "acr": 8, "seed": key[4], "overrides": {"weak_types": ["boxes"], "lambda_dsp": 0.5}}
        write_run(bench.run_dir(tmp_path, *key), value, value - 0.01, settings=settings)
    write_run(bench.run_dir(tmp_path, "default", "mixed", "dsp", 8, 2), None, 0.3, finished=False)  # unfinished
    assert bench.run_dir(tmp_path, "v", "tags", "dsp", 32, 1) == tmp_path / "v" / "tags" / "dsp" / "acr32" / "seed1"
    assert bench.main(["--report-only", "--no-write", "--root", str(tmp_path), "--records", str(tmp_path / "rec"),
                       "--methods", "unet", "dsp",
                       "--scenarios", "mixed", "boxes", "--acrs", "8", "--seeds", "0", "1", "2",
                       "--variant", "default", "dice"]) == 0
    out = capsys.readouterr().out
    assert "| U-Net (masks only) [default] | 42.0 ± 2.8 (2) |" in out
    assert "| U-Net (masks only) [dice] | 47.0 ± 0.0 (1) |" in out
    assert "| DSP [default] | 53.0 ± 4.2 (2) |" in out
    assert "| DSP [default] − U-Net (masks only) [default] | 11.0 ± 1.4 (2) |" in out
    assert "| DSP [default] − U-Net (masks only) [dice] | 3.0 ± 0.0 (1) |" in out
    # the boxes block takes the U-Net runs of the mixed folders (the U-Net's run is the same in every scenario)
    assert ("#### masks + boxes (`boxes`)\n\n| method | ACR 8 |\n|---|---|\n"
            "| U-Net (masks only) [default] | 42.0 ± 2.8 (2) |\n| U-Net (masks only) [dice] | 47.0 ± 0.0 (1) |\n"
            "| DSP [default] | 45.0 ± 0.0 (1) |\n") in out
    assert "| DSP [default] − U-Net (masks only) [default] | 5.0 ± 0.0 (1) |" in out
    assert "- `dice`: configs x.yaml after the method file; overrides {'lambda_dsp': 0.5}" in out
    assert "mixed dsp ACR 8 seed 2: no finished result" in out


def test_several_variants_are_refused_for_training(bench, tmp_path):
    with pytest.raises(SystemExit, match="several names only with --report-only"):
        bench.main(["--root", str(tmp_path), "--variant", "a", "b"])


def test_plan_applies_scenario_snapshots_and_caller_overrides(bench, tmp_path):
    args = bench.parse_args(["--methods", "unet", "dsp", "--scenarios", "masks", "points", "--acrs", "32",
                             "--seeds", "4", "--variant", "ce_dice"])
    plan = {key: (folder, configs, overrides) for key, folder, configs, _, _, overrides
            in bench.plan_study(args, tmp_path, ["budget.yaml"], {"supervised_loss": "ce_dice"})}
    assert list(plan) == [("ce_dice", s, m, 32, 4) for s in ("masks", "points") for m in ("unet", "dsp")]
    folder, configs, overrides = plan["ce_dice", "masks", "dsp", 32, 4]
    assert folder == tmp_path / "ce_dice" / "masks" / "dsp" / "acr32" / "seed4"
    assert configs == ["bundle/configs/train.yaml", "configs/methods/dsp.yaml", "budget.yaml"]
    assert overrides == {"training_types": ["mask"], "snapshot_iterations": bench.SNAPSHOTS,
                         "supervised_loss": "ce_dice"}
    # the U-Net trains on the masked images alone: one run, in the mixed folder, serves every scenario
    for scenario in ("masks", "points"):
        assert plan["ce_dice", scenario, "unet", 32, 4][0] == tmp_path / "ce_dice" / "mixed" / "unet" / "acr32" / "seed4"
        assert plan["ce_dice", scenario, "unet", 32, 4][2] == {"weak_types": ["tags", "boxes", "points"],
                                                               "supervised_loss": "ce_dice"}
    assert bench.masks_only("unet") and not bench.masks_only("cls_branch") and not bench.masks_only("dsp")
    # unless the caller's overrides choose the training types themselves
    again = {key: folder for key, folder, *_ in bench.plan_study(args, tmp_path, [], {"training_types": ["mask"]})}
    assert again["ce_dice", "points", "unet", 32, 4] == tmp_path / "ce_dice" / "points" / "unet" / "acr32" / "seed4"
    with pytest.raises(SystemExit, match="unknown method 'nope'"):
        bench.plan_study(bench.parse_args(["--methods", "nope"]), tmp_path, [], {})


def test_finished_runs_are_read_and_skipped_without_running_anything(bench, tmp_path, monkeypatch):
    folder = tmp_path / "run"
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
    assert json.loads((folder / "run.json").read_text()) == {
        "configs": ["bundle/configs/train.yaml", "configs/methods/dsp.yaml"], "acr": 8, "seed": 2,
        "overrides": {"lambda_dsp": 0.5, "pseudo_label_source": "ema"}}


def test_a_half_written_run_is_trained_on_and_evaluated_again(bench, tmp_path, monkeypatch):
    folder = tmp_path / "run"
    write_run(folder, None, 0.5, finished=False)
    (folder / "test_metrics.json").write_text('{"dice": {"mean": 0.')  # an interrupted write
    (folder / "metrics.json").write_text('{"finished": tr')
    assert bench.load_result(folder) is None
    calls = []
    monkeypatch.setattr(bench, "_call", lambda args, log: calls.append(args[4]))
    assert bench.execute(folder, ["bundle/configs/train.yaml"], 8, 0, {})["status"] == "ran"
    assert calls == ["training", "evaluating"]
    assert not (folder / "test_metrics.json").exists()


def test_a_run_folder_of_other_settings_is_refused(bench, tmp_path, monkeypatch):
    folder = tmp_path / "run"
    write_run(folder, 0.6, 0.5, settings={"configs": ["bundle/configs/train.yaml"], "acr": 8, "seed": 0,
                                          "overrides": {"supervised_loss": "ce"}})
    monkeypatch.setattr(bench, "_call", lambda *a: pytest.fail("nothing may run"))
    with pytest.raises(RuntimeError, match=r"holds a run with other settings: .*'supervised_loss': 'ce'"):
        bench.execute(folder, ["bundle/configs/train.yaml"], 8, 0, {"supervised_loss": "ce_dice"})
    assert bench.execute(folder, ["bundle/configs/train.yaml"], 8, 0, {"supervised_loss": "ce"}) == {
        "status": "skipped"}


def test_epoch_seconds_reads_the_trainer_epochs_and_keeps_the_last_record_of_a_resumed_epoch(bench, tmp_path):
    log = tmp_path / "train.log"
    prefix = "2026-11-30 11:53:43,450 - ignite.engine.engine.MethodTrainer - INFO - "
    log.write_text(
        "2026 - ignite.engine.engine.SupervisedEvaluator - INFO - Epoch[1] Complete. Time taken: 00:00:02.956\n"
        f"{prefix}Epoch[1] Complete. Time taken: 00:02:21.460\n"
        f"{prefix}Epoch[2] Complete. Time taken: 00:01:00.000\n"
        f"progress\rbar {prefix}Epoch[2] Complete. Time taken: 01:00:01.500\n"  # epoch 2 again after a resume
    )
    assert bench.epoch_seconds(log) == pytest.approx({1: 141.46, 2: 3601.5})
    assert bench.epoch_seconds(tmp_path / "missing.log") == {}


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


def test_support_table_counts_and_flags_scant_classes(bench):
    supports = {1: {"ecs": 11, "mito": 39593, "nucleus": 960436, "mvb": 0},
                0: {"ecs": 4000, "mito": 6000, "nucleus": 990000, "mvb": 0}}
    assert rows_of(bench.support_table(supports)) == [
        ["ecs", "4000 (0.40%)", "11 (0.00%) (scant)"],
        ["mito", "6000 (0.60%)", "39593 (3.96%)"],
        ["nucleus", "990000 (99.00%)", "960436 (96.04%)"],
        ["mvb", "0", "0"],
    ]
    markdown = bench.report(dict(MIXED), "cpu", "HEADER\n\n", supports=supports)
    assert "still counts fully in the mean over present classes" in markdown
    assert "| class | seed 0 | seed 1 |" in markdown


def test_test_split_support_counts_the_test_labels_without_the_ignore_value(bench, tmp_path):
    from PIL import Image
    import numpy as np

    labels = [np.array([[0, 0, 1], [2, 255, 2]], dtype=np.uint8), np.array([[2, 2, 2], [255, 255, 1]], dtype=np.uint8)]
    items = []
    for index, label in enumerate(labels):
        Image.fromarray(label).save(tmp_path / f"label{index}.png")
        items.append({"image": str(tmp_path / f"label{index}.png"), "label": str(tmp_path / f"label{index}.png")})
    split = {"class_names": ["a", "b", "c"], "training": [], "validation": [], "test": items}
    (tmp_path / "split.json").write_text(json.dumps(split))
    assert bench.test_split_support(tmp_path / "split.json") == {"a": 2, "b": 2, "c": 5}


def test_means_without_scant_classes_leave_out_each_seeds_own_scant_classes(bench):
    supports = {0: {"ecs": 11, "mito": 39989, "vesicle": 0}, 1: {"ecs": 4000, "mito": 6000, "vesicle": 0}}
    assert bench.scant_classes(supports[0]) == {"ecs"} and bench.scant_classes(supports[1]) == set()
    results = {
        ("v", "mixed", "unet", 32, 0): fake(0.30, per_class={"ecs": 0.0, "mito": 0.6, "vesicle": None}),
        ("v", "mixed", "dsp", 32, 0): fake(0.40, per_class={"ecs": 0.2, "mito": 0.6, "vesicle": None}),
        ("v", "mixed", "unet", 32, 1): fake(0.50, per_class={"ecs": 0.4, "mito": 0.6, "vesicle": None}),
        ("v", "mixed", "dsp", 32, 1): fake(0.55, per_class={"ecs": 0.5, "mito": 0.6, "vesicle": None}),
        ("v", "mixed", "dsp", 32, 2): fake(0.70, per_class={"ecs": 0.7, "mito": 0.7, "vesicle": None}),
    }
    bench.add_supported_means(results, supports)
    supported = {key[2:]: round(result["test_supported"], 6) for key, result in results.items()}
    # seed 0 drops ecs (scant), seed 1 keeps it, seed 2 has no support count and keeps everything
    assert supported == {("unet", 32, 0): 0.6, ("dsp", 32, 0): 0.6, ("unet", 32, 1): 0.5, ("dsp", 32, 1): 0.55,
                         ("dsp", 32, 2): 0.7}
    assert math.isnan(bench.mean_without({"ecs": 0.1, "mito": None}, {"ecs"}))
    markdown = bench.report(results, "cpu", "HEADER\n\n", supports=supports)
    section = markdown.split("### Without the scant classes")[1].split("### Details")[0]
    assert "| DSP − U-Net (masks only) | 2.5 ± 3.5 (2) |" in section  # pairs (0.6 - 0.6, 0.55 - 0.5)
    assert "| DSP | 61.7 ± 7.6 (3) |" in section
    assert "### Without the scant classes" not in bench.report(dict(MIXED), "cpu", "HEADER\n\n")


# ---------------------------------------------------------------------------------------------------------------
# The study's record: one JSON per finished run, kept in the repository
# ---------------------------------------------------------------------------------------------------------------

UNET_SETTINGS = {"configs": ["bundle/configs/train.yaml", "configs/methods/unet.yaml"], "acr": 32, "seed": 0,
                 "overrides": {"weak_types": ["tags", "boxes", "points"]}}


def study(bench, tmp_path, *extra):
    return bench.main(["--root", str(tmp_path / "runs"), "--records", str(tmp_path / "rec"), "--methods", "unet",
                       "--acrs", "32", "--seeds", "0", *extra])


def test_a_finished_run_leaves_a_record_that_reports_it_when_its_folder_is_gone(bench, tmp_path, capsys,
                                                                               monkeypatch):
    folder = bench.run_dir(tmp_path / "runs", "default", "mixed", "unet", 32, 0)
    write_run(folder, 0.41, 0.45, settings=UNET_SETTINGS)
    (folder / "train.log").write_text("".join(
        f"x - ignite.engine.engine.MethodTrainer - INFO - Epoch[{e}] Complete. Time taken: 00:00:{s}.000\n"
        for e, s in ((1, 10), (2, 30), (3, 12))))
    monkeypatch.setattr(bench, "_call", lambda *a: pytest.fail("a finished run must not be run again"))
    monkeypatch.setattr(bench.common, "write_section", lambda *a: None)
    monkeypatch.setattr(bench, "plot", lambda *a: None)
    assert study(bench, tmp_path, "--report-only") == 0
    path = tmp_path / "rec" / "default" / "mixed" / "unet" / "acr32" / "seed0.json"
    assert bench.record_file(tmp_path / "rec", tmp_path / "runs", folder) == path
    record = json.loads(path.read_text())
    assert record["settings"] == UNET_SETTINGS and record["result"] == bench.load_result(folder)
    assert record["epoch_seconds_median"] == 12.0 and record["test_support"] is None and record["machine"]
    first = capsys.readouterr().out
    for name in ("metrics.json", "test_metrics.json", "run.json", "train.log"):
        (folder / name).unlink()
    assert study(bench, tmp_path, "--report-only") == 0
    second = capsys.readouterr().out
    assert "| U-Net (masks only) | 41.0 ± 0.0 (1) |" in second and "val 45.0, test 41.0 Dice" in second
    table = "Table 3" + first.split("Table 3")[1]
    assert table == "Table 3" + second.split("Table 3")[1]  # the same report from the record alone
    assert "- `default`: configs none after the method file; no overrides" in second


def test_a_recorded_run_is_not_trained_again_and_other_settings_are_refused(bench, tmp_path, monkeypatch):
    path = tmp_path / "rec" / "default" / "mixed" / "unet" / "acr32" / "seed0.json"
    path.parent.mkdir(parents=True)
    settings = {**UNET_SETTINGS, "configs": [*UNET_SETTINGS["configs"], "configs/sweeps/cpu_study.yaml"]}
    path.write_text(json.dumps({"settings": settings, "result": {"test": 0.5}}))
    monkeypatch.setattr(bench, "execute", lambda *a: pytest.fail("a recorded run must not be trained again"))
    assert study(bench, tmp_path, "--no-write") == 0
    path.write_text(json.dumps({"settings": {**settings, "acr": 8}, "result": {"test": 0.5}}))
    with pytest.raises(RuntimeError, match=r"seed0.json holds a run with other settings: it records .*'acr': 8"):
        study(bench, tmp_path, "--no-write")
    path.write_text('{"settings": {}, "result": {"test": 0.')  # a record that does not read back: no record
    assert bench.read_record(path) is None
    calls = []
    monkeypatch.setattr(bench, "execute", lambda *a: calls.append(a[0]) or {"status": "ran", "total_s": 1.0})
    assert study(bench, tmp_path, "--no-write") == 0
    assert calls == [tmp_path / "runs" / "default" / "mixed" / "unet" / "acr32" / "seed0"]


def test_a_run_folder_replaces_a_record_recovered_from_an_earlier_report(bench, tmp_path, capsys, monkeypatch):
    path = tmp_path / "rec" / "default" / "mixed" / "unet" / "acr32" / "seed0.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"settings": UNET_SETTINGS, "result": {"test": 0.428},
                                "recovered": "per-seed table of an earlier report"}))
    write_run(bench.run_dir(tmp_path / "runs", "default", "mixed", "unet", 32, 0), 0.4283, 0.5,
              settings=UNET_SETTINGS)
    assert study(bench, tmp_path, "--report-only", "--no-write") == 0
    assert "the run folder's result replaces the record's (test 42.80 -> 42.83 Dice)" in capsys.readouterr().out
    assert json.loads(path.read_text())["result"] == {"test": 0.428}  # --no-write leaves the record
    monkeypatch.setattr(bench.common, "write_section", lambda *a: None)
    monkeypatch.setattr(bench, "plot", lambda *a: None)
    assert study(bench, tmp_path, "--report-only") == 0
    assert json.loads(path.read_text())["result"]["test"] == 0.4283 and "recovered" not in path.read_text()


def test_records_with_the_test_mean_alone_are_reported_where_they_can_be(bench):
    results = {
        ("v", "mixed", "unet", 32, 0): {"test": 0.40},  # recovered: no validation, no per-class Dice
        ("v", "mixed", "unet", 32, 1): fake(0.50, val=0.55, per_class={"mito": 0.5}),
        ("v", "mixed", "dsp", 32, 0): fake(0.46, per_class={"mito": 0.46}),
        ("v", "mixed", "dsp", 32, 1): fake(0.52, per_class={"mito": 0.52}),
    }
    assert rows_of(bench.scenario_table(results, "mixed")) == [["U-Net (masks only)", "45.0 ± 7.1 (2)"],
                                                               ["DSP", "49.0 ± 4.2 (2)"]]
    assert rows_of(bench.scenario_table(results, "mixed", "val")) == [["U-Net (masks only)", "55.0 ± 0.0 (1)"],
                                                                      ["DSP", "49.0 ± 4.2 (2)"]]
    assert rows_of(bench.paired_table(results, "mixed")) == [["DSP − U-Net (masks only)", "4.0 ± 2.8 (2)"]]
    assert rows_of(bench.per_class_table(results, "mixed")) == [
        ["32", "U-Net (masks only) (1 of 2 seeds)", "50.0", "**50.0**"], ["32", "DSP", "49.0", "**49.0**"]]
    bench.add_supported_means(results, {})
    assert "test_supported" not in results["v", "mixed", "unet", 32, 0]
    section = bench.report(results, "cpu", "HEADER\n\n").split("### Without the scant classes")[1]
    assert "| DSP − U-Net (masks only) | 2.0 ± 0.0 (1) |" in section.split("### Details")[0]


def test_the_recovered_runs_other_tables_close_the_section_only_when_some_runs_are_recovered(bench):
    archive = "KEPT TABLE\n\n| a | b |\n"
    measured = {("v", "mixed", "unet", 32, 1): fake(0.50, val=0.55, per_class={"mito": 0.5})}
    recovered = {**measured, ("v", "mixed", "unet", 32, 0): {"test": 0.40, "recovered": "an earlier report"}}
    markdown = bench.report(recovered, "cpu", "HEADER\n\n", archive=archive)
    assert markdown.endswith("### The recovered runs' other tables\n\nKEPT TABLE\n\n| a | b |\n")
    assert ("hold only the other runs; the earlier report's own tables of them close this section "
            "(\"The recovered runs' other tables\").") in markdown
    without = bench.report(recovered, "cpu", "HEADER\n\n")
    assert "KEPT TABLE" not in without and "hold only the other runs.\n" in without
    assert "KEPT TABLE" not in bench.report(measured, "cpu", "HEADER\n\n", archive=archive)
