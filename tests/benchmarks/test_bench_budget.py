"""The curve analysis and bookkeeping of benchmarks/bench_budget.py on hand-made curves and fake run folders (no
training)."""

import pytest

from benchmark_modules import load_benchmark


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("bench_budget")


def test_trailing_mean_covers_full_windows_only(bench):
    curve = {1: 0.1, 2: 0.2, 3: 0.6, 4: 0.4}
    assert bench.trailing_mean(curve, 2) == pytest.approx({2: 0.15, 3: 0.4, 4: 0.5})
    assert bench.trailing_mean(curve, 5) == {}


def test_plateau_is_the_first_epoch_within_tolerance_of_the_highest_trailing_mean(bench):
    # trailing means (window 2): e2 0.15, e3 0.35, e4 0.48, e5 0.495, e6 0.5, e7 0.49
    curve = {1: 0.1, 2: 0.2, 3: 0.5, 4: 0.46, 5: 0.53, 6: 0.47, 7: 0.51}
    found = bench.plateau(curve, window=2, tolerance=0.02)
    assert found["epoch"] == 4 and found["smoothed"] == pytest.approx(0.48)
    assert found["top_smoothed"] == pytest.approx(0.5)
    assert (found["best"], found["best_epoch"]) == (0.53, 5)
    assert bench.plateau(curve, window=2, tolerance=0.0)["epoch"] == 6
    assert bench.plateau({1: 0.3}, window=2, tolerance=0.01) is None


def test_curve_table_has_one_row_per_epoch_and_a_dash_where_a_curve_stops(bench):
    table = bench.curve_table({"CE, seed 0": {1: 0.1, 2: 0.25}, "CE + Dice, seed 0": {1: 0.2}}, 50)
    lines = table.splitlines()
    assert lines[0] == "| epoch | iterations | CE, seed 0 | CE + Dice, seed 0 |"
    assert lines[2:] == ["| 1 | 50 | 10.0 | 20.0 |", "| 2 | 100 | 25.0 | - |"]


def test_validation_curve_reads_the_tensorboard_events_and_keeps_the_last_value_of_an_epoch(bench, tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(tmp_path))
    for epoch, value in [(1, 0.1), (2, 0.2), (2, 0.25), (3, 0.3)]:
        writer.add_scalar("val_mean_dice", value, epoch)
    writer.add_scalar("loss", 9.0, 1)
    writer.close()
    assert bench.validation_curve(tmp_path) == pytest.approx({1: 0.1, 2: 0.25, 3: 0.3})
    assert bench.validation_curve(tmp_path / "missing") == {}


def test_profile_settings_need_the_budget_numbers(bench, tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text("roi_size: [64, 64]\nmax_epochs: 30\niterations_per_epoch: 50\n")
    assert bench.profile_settings(str(good))["max_epochs"] == 30
    bad = tmp_path / "bad.yaml"
    bad.write_text("max_epochs: 30\n")
    with pytest.raises(ValueError, match=r"bad.yaml: expected an integer 'iterations_per_epoch'"):
        bench.profile_settings(str(bad))


def test_the_repository_profile_is_a_valid_budget(bench):
    settings = bench.profile_settings(bench.PROFILE)
    assert settings["max_epochs"] * settings["iterations_per_epoch"] > 300  # longer than the earlier study


def _fake_run(folder, values):
    from torch.utils.tensorboard import SummaryWriter

    folder.mkdir(parents=True)
    writer = SummaryWriter(str(folder))
    for epoch, value in enumerate(values, 1):
        writer.add_scalar("val_mean_dice", value, epoch)
    writer.close()
    (folder / "train.log").write_text("".join(
        f"x - ignite.engine.engine.MethodTrainer - INFO - Epoch[{e}] Complete. Time taken: 00:00:30.000\n"
        for e in range(1, len(values) + 1)))


def test_report_of_fake_runs_lists_plateau_budget_run_and_cost(bench, tmp_path, capsys):
    profile = tmp_path / "profile.yaml"
    profile.write_text("max_epochs: 3\niterations_per_epoch: 10\n")
    _fake_run(tmp_path / "long" / "ce" / "unet" / "acr1" / "seed0", [0.1, 0.3, 0.5, 0.52, 0.51, 0.52])
    _fake_run(tmp_path / "epochs3" / "ce" / "unet" / "acr1" / "seed0", [0.2, 0.45, 0.5])
    _fake_run(tmp_path / "cost" / "dsp", [0.1, 0.1])
    assert bench.main(["--losses", "ce", "--epochs", "6", "--profile", str(profile), "--root", str(tmp_path),
                       "--window", "2", "--tolerance", "0.02", "--shorter", "3", "--cost-methods", "dsp",
                       "--report-only",
                       "--no-write"]) == 0
    out = capsys.readouterr().out
    # trailing means (window 2): 0.2, 0.4, 0.51, 0.515, 0.515: the plateau is epoch 4 (0.51 >= 0.515 - 0.02)
    assert "| CE, seed 0 | 6 / 6 | 52.0 (epoch 4) | 4 (40 it.) | 51.0 / 51.5 | 3.0 |" in out
    # the shorter run: trailing means 0.325, 0.475; plateau at epoch 3
    assert "| CE, seed 0, 30 it. | 3 / 3 | 50.0 (epoch 3) | 3 (30 it.) | 47.5 / 47.5 | 1.5 |" in out
    assert "| dsp | 30.0 | 3.00 | 1.5 |" in out
    assert "| epoch | iterations | CE, seed 0 | CE, seed 0, 30 it. |" in out
    assert "| 6 | 60 | 52.0 | - |" in out
