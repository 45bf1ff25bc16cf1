"""Crash-safe checkpoint handlers and training guards on small ignite engines (in process, no bundle)."""

import logging
import math
import os
import re

import pytest
import torch
from ignite.engine import Engine, Events

from dsp_monai.engines import CrashSafeCheckpointSaver, IntervalValidation, ResumeFromCheckpoint, StopOnNonFiniteLoss
from dsp_monai.engines.checkpoints import AtomicDiskSaver, checkpoint_problem, saved_checkpoints


class Counter(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("value", torch.zeros(()))


def counting_engine(counter):
    def step(engine, batch):
        counter.value += 1
        return {"loss": torch.tensor(0.5), "terms": {"ce": torch.tensor(0.5)}}

    return Engine(step)


def names(folder):
    return sorted(p.name for p in folder.iterdir())


def test_atomic_saver_keeps_n_saved_files_and_deletes_a_retired_one_only_after_its_successor(tmp_path, monkeypatch):
    counter = Counter()
    engine = counting_engine(counter)
    saver = CrashSafeCheckpointSaver(str(tmp_path), {"counter": counter, "trainer": engine}, save_interval=1, n_saved=2)
    saver.attach(engine)
    engine.run([0, 1], max_epochs=3)
    assert names(tmp_path) == ["checkpoint_epoch=2.pt", "checkpoint_epoch=3.pt"]
    assert torch.load(tmp_path / "checkpoint_epoch=3.pt", weights_only=True)["counter"]["value"] == 6

    # The write of epoch 4 fails half-way: epoch 2 (retired by ignite before the write) and 3 stay, no temporary file.
    def fail(self, checkpoint, stream):
        stream.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(AtomicDiskSaver, "_serialize", fail)
    with pytest.raises(OSError, match="disk full"):
        engine.run([0, 1], max_epochs=4)
    assert names(tmp_path) == ["checkpoint_epoch=2.pt", "checkpoint_epoch=3.pt"]


def test_saver_counts_the_checkpoints_already_on_disk_and_removes_leftover_temporary_files(tmp_path):
    for epoch in (1, 2, 3):
        torch.save({"x": epoch}, tmp_path / f"checkpoint_epoch={epoch}.pt")
    (tmp_path / ".checkpoint_epoch=4.pt.abc123.tmp").write_bytes(b"half")  # no process id: an old leftover
    (tmp_path / f".model.pt.{os.getpid()}.x1y2.tmp").write_bytes(b"being written")  # a live writer's: kept
    counter = Counter()
    engine = counting_engine(counter)
    saver = CrashSafeCheckpointSaver(str(tmp_path), {"counter": counter, "trainer": engine}, save_interval=1, n_saved=2)
    assert names(tmp_path) == [f".model.pt.{os.getpid()}.x1y2.tmp", "checkpoint_epoch=1.pt", "checkpoint_epoch=2.pt",
                               "checkpoint_epoch=3.pt"]
    (tmp_path / f".model.pt.{os.getpid()}.x1y2.tmp").unlink()
    saver.attach(engine)
    engine.state.epoch, engine.state.max_epochs = 3, 4  # as resumed from epoch 3
    engine.run([0], max_epochs=4)
    assert names(tmp_path) == ["checkpoint_epoch=3.pt", "checkpoint_epoch=4.pt"]


def test_fixed_name_best_model_is_replaced_in_one_step_and_its_score_survives_a_restart(tmp_path):
    network = torch.nn.Linear(2, 1)
    scores = iter([0.3, 0.2, 0.5])

    def make():
        evaluator = Engine(lambda engine, batch: None)
        evaluator.state.key_metric_name = "dice"
        return evaluator, CrashSafeCheckpointSaver(str(tmp_path), {"model": network}, save_key_metric=True,
                                                   key_metric_filename="model.pt")

    def validate(evaluator, saver, score):
        with torch.no_grad():
            network.weight.fill_(score)
        evaluator.state.metrics = {"dice": score}
        saver.metrics_completed(evaluator)

    evaluator, saver = make()
    validate(evaluator, saver, next(scores))
    state = saver.state_dict()
    assert state == {"_saved": [(0.3, "model_key_metric=0.3000.pt")]}
    evaluator, restarted = make()
    restarted.load_state_dict(state)
    validate(evaluator, restarted, next(scores))  # worse than 0.3: model.pt keeps the 0.3 weights
    assert names(tmp_path) == ["model.pt"]
    assert torch.load(tmp_path / "model.pt", weights_only=True)["weight"].eq(0.3).all()
    validate(evaluator, restarted, next(scores))
    assert names(tmp_path) == ["model.pt"]
    assert torch.load(tmp_path / "model.pt", weights_only=True)["weight"].eq(0.5).all()


def test_checkpoint_problem_detects_truncation_and_altered_bytes(tmp_path):
    good = tmp_path / "good.pt"
    torch.save({"weight": torch.arange(4096.0)}, good)
    assert checkpoint_problem(str(good)) is None
    data = good.read_bytes()
    (tmp_path / "short.pt").write_bytes(data[: len(data) // 2])
    assert checkpoint_problem(str(tmp_path / "short.pt")) == "BadZipFile: File is not a zip file"
    altered = bytearray(data)
    altered[len(data) // 2] ^= 0x01
    (tmp_path / "altered.pt").write_bytes(bytes(altered))
    assert re.fullmatch(r"member .*data/0 fails its CRC-32 checksum", checkpoint_problem(str(tmp_path / "altered.pt")))
    assert checkpoint_problem(str(tmp_path / "missing.pt")).startswith("FileNotFoundError")


def test_saved_checkpoints_newest_first_by_number_not_by_name(tmp_path):
    for epoch in (2, 10, 9):
        (tmp_path / f"checkpoint_epoch={epoch}.pt").touch()
    (tmp_path / ".checkpoint_epoch=11.pt.x.tmp").touch()
    assert [n for n, _ in saved_checkpoints(str(tmp_path))] == [10, 9, 2]


def _resume(folder, counter):
    engine = counting_engine(counter)
    ResumeFromCheckpoint(str(folder), {"counter": counter, "trainer": engine}).attach(engine)
    return engine


def test_resume_skips_a_damaged_newest_checkpoint_with_a_warning(tmp_path, caplog):
    for epoch in (1, 2):
        counter = Counter()
        counter.value.fill_(10 * epoch)
        engine = counting_engine(counter)
        engine.state.epoch, engine.state.iteration, engine.state.epoch_length = epoch, 2 * epoch, 2
        engine.state.max_epochs = 3
        torch.save({"counter": counter.state_dict(), "trainer": engine.state_dict()},
                   tmp_path / f"checkpoint_epoch={epoch}.pt")
    newest = tmp_path / "checkpoint_epoch=2.pt"
    newest.write_bytes(newest.read_bytes()[:100])
    counter = Counter()
    engine = _resume(tmp_path, counter)
    with caplog.at_level(logging.WARNING, logger="dsp_monai.engines.checkpoints"):
        engine.run([0, 1], max_epochs=3)
    expected = (f"checkpoint {newest} is damaged (BadZipFile: File is not a zip file); resuming from an earlier "
                "checkpoint instead")
    assert expected in caplog.text
    assert engine.state.epoch == 3 and counter.value == 10 + 4  # from epoch 1's state, two more epochs of 2


def test_resume_without_checkpoints_starts_from_the_beginning_and_refuses_when_all_are_damaged(tmp_path):
    counter = Counter()
    _resume(tmp_path, counter).run([0], max_epochs=2)
    assert counter.value == 2
    (tmp_path / "checkpoint_epoch=1.pt").write_bytes(b"PK\x03\x04 not a whole archive")
    with pytest.raises(RuntimeError, match=re.escape(
            f"no checkpoint in {tmp_path} can be read: {tmp_path}/checkpoint_epoch=1.pt: BadZipFile: File is not a zip "
            "file. Move the folder away to train from the beginning, or restore a checkpoint from a backup.")):
        _resume(tmp_path, Counter()).run([0], max_epochs=2)


def _engine_with_terms(values):
    """An engine whose iteration i outputs the terms values[i - 1] and their sum as the loss."""

    def step(engine, batch):
        terms = {name: torch.tensor(v) for name, v in values[engine.state.iteration - 1].items()}
        return {"loss": sum(terms.values()), "terms": terms}

    engine = Engine(step)
    StopOnNonFiniteLoss().attach(engine)
    return engine


def test_non_finite_term_stops_at_its_iteration_naming_it():
    values = [{"ce": 1.0, "plf": 0.5, "dsp_box": 0.1}] * 3 + [{"ce": 1.0, "plf": math.inf, "dsp_box": math.nan}]
    saved = []
    engine = _engine_with_terms(values)
    engine.add_event_handler(Events.EPOCH_COMPLETED, lambda e: saved.append(e.state.epoch))
    with pytest.raises(FloatingPointError, match=re.escape(
            "training stopped at iteration 4 (epoch 2): the loss is nan; non-finite terms: plf = inf, dsp_box = nan. "
            "Nothing of epoch 2 is saved")):
        engine.run([0, 1], max_epochs=3)
    assert saved == [1]


def test_non_finite_sum_of_finite_terms_is_caught_too():
    engine = _engine_with_terms([{"ce": 3e38, "plf": 3e38}])
    with pytest.raises(FloatingPointError, match=r"iteration 1 \(epoch 1\): the loss is inf; non-finite terms: none "
                                                 r"\(only their weighted sum\)"):
        engine.run([0], max_epochs=1)


class RecordingValidation(IntervalValidation):
    def __init__(self, interval):
        super().__init__(interval)
        self.epochs = []

    def __call__(self, engine):
        self.epochs.append(engine.state.epoch)


@pytest.mark.parametrize("interval,max_epochs,expected",
                         [(2, 1, [1]), (2, 5, [2, 4, 5]), (3, 6, [3, 6]), (1, 3, [1, 2, 3])])
def test_interval_validation_also_runs_after_the_last_epoch(interval, max_epochs, expected):
    engine = counting_engine(Counter())
    validation = RecordingValidation(interval)
    validation.attach(engine)
    engine.run([0], max_epochs=max_epochs)
    assert validation.epochs == expected


def test_interval_validation_rejects_a_zero_interval():
    with pytest.raises(ValueError, match=r"IntervalValidation: interval must be an int >= 1 \(epochs\); got 0"):
        IntervalValidation(0)


def test_iteration_snapshots_hold_the_weights_after_exactly_those_iterations(tmp_path):
    from dsp_monai.engines import IterationSnapshots

    weight = torch.nn.Linear(1, 1, bias=False)
    torch.nn.init.zeros_(weight.weight)

    def step(engine, batch):
        with torch.no_grad():
            weight.weight += 1.0  # after iteration n the weight is n

    trainer = Engine(step)
    IterationSnapshots(str(tmp_path / "snapshots"), {"network": weight}, [5, 2]).attach(trainer)
    trainer.run(range(3), max_epochs=2)  # iterations 1..6
    files = sorted(p.name for p in (tmp_path / "snapshots").iterdir())
    assert files == ["network_iteration=2.pt", "network_iteration=5.pt"]
    for n in (2, 5):
        assert torch.load(tmp_path / "snapshots" / f"network_iteration={n}.pt")["weight"].item() == n


@pytest.mark.parametrize("iterations, save_dict, pattern", [
    ([], {"network": torch.nn.Linear(1, 1)}, "iterations must be positive integers; got \\[\\]"),
    ([0, 3], {"network": torch.nn.Linear(1, 1)}, "iterations must be positive integers; got \\[0, 3\\]"),
    ([2.5], {"network": torch.nn.Linear(1, 1)}, "iterations must be positive integers"),
    ([3], {}, "save_dict is empty"),
])
def test_iteration_snapshots_reject_bad_settings(tmp_path, iterations, save_dict, pattern):
    from dsp_monai.engines import IterationSnapshots

    with pytest.raises(ValueError, match=pattern):
        IterationSnapshots(str(tmp_path), save_dict, iterations)
