"""Crash safety of the bundle's training, through its command line on a tiny CPU configuration: kill -9 at several
moments (one of them in the middle of a checkpoint write) and the same command again ends with the weights of an
uninterrupted run; a damaged newest checkpoint is skipped with a warning; a NaN loss stops the run, naming the
iteration and the term, without saving the bad epoch; the last epoch always validates."""

import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from test_bundle import TRAIN, bundle, run, tiny

HERE = Path(__file__).resolve().parent
EPOCHS = 4


@pytest.fixture(scope="module")
def datalist(tmp_path_factory):
    out = tmp_path_factory.mktemp("crash_data")
    run([sys.executable, "-m", "dsp_monai.data.synthetic", "--out", str(out), "--cells", "2", "--crops-per-cell", "3",
         "--crop-shape", "4", "64", "64", "--no-contact-sheet", "--quiet", "--overwrite"], cwd=out)
    return str(out / "datalist.json")


def training(datalist, out, **extra):
    """The command-line arguments of the tiny 4-epoch run (validation every 3 epochs, so also after the last)."""
    return ["run", "training", "--config_file", TRAIN,
            *tiny(datalist, out, max_epochs=EPOCHS, val_interval=3, **extra)]


@pytest.fixture(scope="module")
def uninterrupted(datalist, tmp_path_factory):
    root = tmp_path_factory.mktemp("uninterrupted")
    bundle(*training(datalist, root / "run"), cwd=root)
    return root / "run"


def weights(path, key="network"):
    state = torch.load(path, map_location="cpu", weights_only=True)
    return state[key] if key else state


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def assert_same_end(out, reference):
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["checkpoint_epoch=3.pt", "checkpoint_epoch=4.pt"]
    final = out / "checkpoints" / f"checkpoint_epoch={EPOCHS}.pt"
    assert_same_weights(weights(final), weights(reference / "checkpoints" / final.name))
    assert_same_weights(weights(out / "models" / "model.pt", None), weights(reference / "models" / "model.pt", None))
    summary, expected = (json.loads((d / "metrics.json").read_text()) for d in (out, reference))
    assert summary["finished"] and summary["epochs"] == EPOCHS
    assert summary["best_validation"] == expected["best_validation"]
    assert summary["last_validation"] == expected["last_validation"]


def test_uninterrupted_run_validates_the_last_epoch_and_keeps_two_checkpoints(uninterrupted):
    summary = json.loads((uninterrupted / "metrics.json").read_text())
    assert summary["last_validation"]["epoch"] == EPOCHS  # 4 is not a multiple of val_interval 3
    assert summary["best_validation"]["epoch"] in (3, 4)
    assert sorted(p.name for p in (uninterrupted / "checkpoints").iterdir()) == [
        "checkpoint_epoch=3.pt", "checkpoint_epoch=4.pt"]
    best = weights(uninterrupted / "checkpoints" / "checkpoint_epoch=4.pt", "best_model")["_saved"]
    assert len(best) == 1 and best[0][0] == pytest.approx(summary["best_validation"]["mean"])


def _popen(args, cwd, log):
    full_env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    with open(log, "w") as handle:
        return subprocess.Popen(args, cwd=cwd, env=full_env, stdout=handle, stderr=subprocess.STDOUT)


def _wait_for(process, condition, timeout=120.0):
    start = time.monotonic()
    while not condition():
        assert process.poll() is None, "the run ended before the kill point"
        assert time.monotonic() - start < timeout, "kill point not reached"
        time.sleep(0.005)


def _kill_when(process, condition):
    _wait_for(process, condition)
    process.send_signal(signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL


def test_kill_9_at_several_moments_then_the_same_command_ends_like_an_uninterrupted_run(datalist, uninterrupted,
                                                                                          tmp_path):
    out = tmp_path / "run"
    args = training(datalist, out)
    checkpoints = out / "checkpoints"
    env = {"PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}

    # 1. In the middle of writing the checkpoint of epoch 2: half of it is in the temporary file.
    killed = run([sys.executable, str(HERE / "fault_injection.py"), "2", *args], cwd=tmp_path, env=env, check=False)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert sorted(p.name for p in checkpoints.iterdir() if not p.name.startswith(".")) == ["checkpoint_epoch=1.pt"]
    assert [p.name for p in checkpoints.glob(".checkpoint_epoch=2.pt.*.tmp")], "no partial checkpoint was left"

    # 2. As soon as the checkpoint of epoch 3 exists (the resumed run first redoes epoch 2).
    process = _popen([sys.executable, "-m", "monai.bundle", *args], cwd=tmp_path, log=tmp_path / "second.log")
    _kill_when(process, lambda: (checkpoints / "checkpoint_epoch=3.pt").exists())
    assert not list(checkpoints.glob(".*.tmp")), "the unfinished checkpoint of the first kill was not cleaned up"

    # 3. At a random moment (seeded) of the last epoch of the next run: training, validation or saving.
    log = tmp_path / "third.log"
    process = _popen([sys.executable, "-m", "monai.bundle", *args], cwd=tmp_path, log=log)
    _wait_for(process, lambda: "Restored all variables from" in log.read_text())
    time.sleep(random.Random(17).uniform(0.0, 0.5))
    process.send_signal(signal.SIGKILL)  # (if the run has already ended, the next one only finds it finished)
    process.wait()

    # Then the same command to the end: it resumes from the newest checkpoint (epoch 3 or 4).
    done = bundle(*args, cwd=tmp_path)
    log = done.stdout + done.stderr
    assert re.search(r"Restored all variables from .*checkpoint_epoch=[34]\.pt", log), log[-3000:]
    assert_same_end(out, uninterrupted)


@pytest.mark.parametrize("damage", ["truncated", "flipped_byte"])
def test_damaged_newest_checkpoint_is_reported_and_the_previous_one_used(datalist, uninterrupted, tmp_path, damage):
    out = tmp_path / "run"
    shutil.copytree(uninterrupted, out)
    newest = out / "checkpoints" / f"checkpoint_epoch={EPOCHS}.pt"
    data = bytearray(newest.read_bytes())
    if damage == "truncated":
        data = data[: len(data) // 3]
    else:
        data[len(data) // 2] ^= 0xFF
    newest.write_bytes(bytes(data))
    (out / "metrics.json").write_text(json.dumps({**json.loads((out / "metrics.json").read_text()),
                                                   "finished": False}))
    done = bundle(*training(datalist, out), cwd=tmp_path)
    log = done.stdout + done.stderr
    assert re.search(rf"WARNING - checkpoint {re.escape(str(newest))} is damaged \(.+\); resuming from an earlier "
                     "checkpoint instead", log), log[-3000:]
    assert re.search(r"Restored all variables from .*checkpoint_epoch=3\.pt", log)
    assert "Epoch [4/4]" in log and "Epoch [3/4]" not in log
    assert_same_end(out, uninterrupted)


def test_nan_loss_stops_the_run_naming_iteration_and_term_and_keeps_the_last_good_checkpoint(datalist, tmp_path):
    out = tmp_path / "run"
    # Two DSP calls per iteration (weak and strong views), two iterations per epoch: call 5 is iteration 3, epoch 2.
    args = ["run", "training", "--config_file", TRAIN,
            *tiny(datalist, out, max_epochs=3, **{"dsp_loss#_target_": "fault_injection.DSPLossWithNaN",
                                                  "dsp_loss#nan_from_call": 5})]
    env = {"PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}
    done = run([sys.executable, "-m", "monai.bundle", *args], cwd=tmp_path, env=env, check=False)
    assert done.returncode != 0
    # (Which line comes last is the bundle entry's business: MONAI wraps errors of the `run` expression.)
    assert re.search(
        r"^FloatingPointError: training stopped at iteration 3 \(epoch 2\): the loss is nan; non-finite terms: "
        r"(\w+ = nan, )*\w*box\w* = nan(, \w+ = nan)*\. Nothing of epoch 2 is saved; the checkpoints of the earlier "
        r"epochs are kept, and running the same command resumes from the newest\.", done.stderr, re.M
    ), done.stderr[-3000:]
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["checkpoint_epoch=1.pt"]


def test_one_epoch_run_with_a_longer_validation_interval_validates_and_saves_the_best_model(datalist, tmp_path):
    out = tmp_path / "run"
    bundle("run", "training", "--config_file", TRAIN, *tiny(datalist, out, max_epochs=1, val_interval=2),
           cwd=tmp_path)
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["finished"] and summary["best_validation"]["epoch"] == 1
    assert 0.0 <= summary["best_validation"]["mean"] <= 1.0
    assert (out / "models" / "model.pt").is_file()
