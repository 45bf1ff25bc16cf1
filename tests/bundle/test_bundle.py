"""The MONAI bundle through its command line: metadata and network checks, a short train / evaluate / infer run,
resume after interruption, a 2-process gloo run and the errors of bad configurations. Runs tiny sizes on CPU."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from user_data import write_user_datalist

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "bundle" / "configs"
TRAIN = str(CONFIGS / "train.yaml")
INFERENCE = f"['{TRAIN}','{CONFIGS / 'inference.yaml'}']"


def run(args, cwd, env=None, check=True):
    """Runs a command in ``cwd`` (not the repository: the bundle must work from anywhere)."""
    full_env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", **(env or {}))
    done = subprocess.run(args, cwd=cwd, env=full_env, capture_output=True, text=True)
    if check and done.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, args))} failed ({done.returncode}):\n{done.stdout[-4000:]}\n"
                             f"{done.stderr[-6000:]}")
    return done


def bundle(*args, cwd, check=True, launcher=None):
    command = [sys.executable, "-m", "monai.bundle", *args] if launcher is None else [*launcher, "-m", "monai.bundle",
                                                                                      *args]
    return run(command, cwd, check=check)


@pytest.fixture(scope="module")
def tiny_datalist(tmp_path_factory):
    """24 slices of 64x64 from 6 crops of 2 synthetic cells."""
    out = tmp_path_factory.mktemp("tiny_data")
    run([sys.executable, "-m", "dsp_monai.data.synthetic", "--out", str(out), "--cells", "2", "--crops-per-cell", "3",
         "--crop-shape", "4", "64", "64", "--no-contact-sheet", "--quiet", "--overwrite"], cwd=out)
    return str(out / "datalist.json")


def tiny(datalist_path, output_dir, **extra):
    """Command-line overrides of a tiny CPU configuration."""
    overrides = {
        "datalist": datalist_path, "output_dir": str(output_dir), "models_dir": str(Path(output_dir) / "models"),
        "roi_size": "[64,64]", "sizes#cpu#features": "[4,4,8,8,16,4]", "sizes#cpu#embedding_dim": "8",
        "batch_size": "4", "iterations_per_epoch": "2", "max_epochs": "2", "val_interval": "1", "num_workers": "0",
        "acr": "2", "warmup_iterations": "2",
    }
    overrides.update({k: str(v) for k, v in extra.items()})
    return [token for key, value in overrides.items() for token in (f"--{key}", value)]


def test_metadata_verifies_against_the_local_schema(tmp_path):
    done = bundle("verify_metadata", "--meta_file", str(CONFIGS / "metadata.json"), "--filepath",
                  str(CONFIGS / "schema" / "metadata_schema.json"), cwd=tmp_path)
    assert "metadata is verified with no error" in done.stdout + done.stderr


def test_metadata_schema_rejects_a_missing_key(tmp_path):
    meta = json.loads((CONFIGS / "metadata.json").read_text())
    del meta["network_data_format"]["outputs"]["pred"]["channel_def"]
    broken = tmp_path / "metadata.json"
    broken.write_text(json.dumps(meta))
    done = bundle("verify_metadata", "--meta_file", str(broken), "--filepath",
                  str(CONFIGS / "schema" / "metadata_schema.json"), cwd=tmp_path, check=False)
    assert done.returncode != 0 and "channel_def" in done.stderr


def test_metadata_matches_the_default_classes():
    meta = json.loads((CONFIGS / "metadata.json").read_text())
    from dsp_monai.data.label_tables import HELA2_CLASS_NAMES

    channel_def = meta["network_data_format"]["outputs"]["pred"]["channel_def"]
    assert [channel_def[str(i)] for i in range(len(channel_def))] == list(HELA2_CLASS_NAMES)
    assert meta["network_data_format"]["outputs"]["pred"]["num_channels"] == len(HELA2_CLASS_NAMES)
    assert len(meta["network_data_format"]["inputs"]["image"]["spatial_shape"]) == 2
    assert meta["version"] in meta["changelog"]


def test_network_input_and_output_shapes(tmp_path):
    done = bundle("verify_net_in_out", "network_def", "--meta_file", str(CONFIGS / "metadata.json"), "--config_file",
                  INFERENCE, cwd=tmp_path)
    assert "verified with no error" in done.stdout + done.stderr


def test_train_evaluate_and_infer_from_the_command_line(tiny_datalist, tmp_path):
    out = tmp_path / "run"
    bundle("run", "training", "--config_file", TRAIN, *tiny(tiny_datalist, out), cwd=tmp_path)
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["finished"] and summary["epochs"] == 2 and summary["iterations"] == 4
    best = summary["best_validation"]
    assert 0.0 <= best["mean"] <= 1.0
    scored = [v for v in best["per_class"].values() if v is not None]
    assert scored and abs(best["mean"] - sum(scored) / len(scored)) < 1e-9
    assert (out / "models" / "model.pt").is_file() and (out / "checkpoints" / "checkpoint_epoch=2.pt").is_file()
    split = json.loads((out / "split.json").read_text())
    train_ids = {i["subvolume"] for i in split["training"]}
    assert train_ids.isdisjoint({i["subvolume"] for i in split["test"]})

    bundle("run", "evaluating", "--config_file", f"['{TRAIN}','{CONFIGS / 'evaluate.yaml'}']",
           *tiny(tiny_datalist, out), cwd=tmp_path)
    report = json.loads((out / "test_metrics.json").read_text())
    assert report["images"] == len(split["test"]) and 0.0 <= report["dice"]["mean"] <= 1.0
    assert "| **mean** |" in (out / "test_metrics.md").read_text()

    predictions = tmp_path / "predictions"
    bundle("run", "--config_file", INFERENCE, "--input", tiny_datalist, "--output_dir",
           str(predictions), "--checkpoint", str(out / "models" / "model.pt"), "--roi_size", "[64,64]",
           "--sizes#cpu#features", "[4,4,8,8,16,4]", "--sizes#cpu#embedding_dim", "8", cwd=tmp_path)
    masks = sorted(predictions.glob("*_seg.zarr"))
    assert len(masks) == 24 and len(list((predictions / "overlays").glob("*.png"))) == 24
    import zarr

    mask = zarr.open_array(str(masks[0]), mode="r")
    assert mask.shape == (64, 64) and mask.dtype == "uint8" and int(mask[...].max()) < 11


def _weights(path, part="network"):
    state = torch.load(path, map_location="cpu", weights_only=False)
    return state[part]


@pytest.mark.parametrize("extra", [{}, {"pseudo_label_source": "ema"}], ids=["student", "ema_teacher"])
def test_resumed_run_ends_where_an_uninterrupted_run_ends(tiny_datalist, tmp_path, extra):
    interrupted, straight = tmp_path / "interrupted", tmp_path / "straight"
    # A 3-epoch run that stops after its first epoch (same schedule), then the same command again.
    bundle("run", "training", "--config_file", TRAIN,
           *tiny(tiny_datalist, interrupted, max_epochs=1, lr_schedule_epochs=3, **extra), cwd=tmp_path)
    assert (interrupted / "checkpoints" / "checkpoint_epoch=1.pt").is_file()
    resumed = bundle("run", "training", "--config_file", TRAIN,
                     *tiny(tiny_datalist, interrupted, max_epochs=3, **extra), cwd=tmp_path)
    log = resumed.stdout + resumed.stderr
    assert "Restored all variables from" in log and "checkpoint_epoch=1.pt" in log
    assert "Epoch [2/3]" in log and "Epoch [1/3]" not in log
    bundle("run", "training", "--config_file", TRAIN, *tiny(tiny_datalist, straight, max_epochs=3, **extra),
           cwd=tmp_path)
    # The EMA teacher is checkpointed with the network; a restarted teacher would differ.
    parts = ["network", "teacher"] if extra else ["network"]
    saved = torch.load(straight / "checkpoints" / "checkpoint_epoch=3.pt", map_location="cpu", weights_only=False)
    assert ("teacher" in saved) == bool(extra)
    for part in parts:
        a = _weights(interrupted / "checkpoints" / "checkpoint_epoch=3.pt", part)
        b = _weights(straight / "checkpoints" / "checkpoint_epoch=3.pt", part)
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(a[key], b[key]), f"{part}: {key}"


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_gloo_training(tiny_datalist, tmp_path):
    out = tmp_path / "ddp"
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
                "--master_port", str(_free_port())]
    bundle("run", "training", "--config_file", f"['{TRAIN}','{CONFIGS / 'multi_gpu_train.yaml'}']",
           *tiny(tiny_datalist, out, max_epochs=1), cwd=tmp_path, launcher=launcher)
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["finished"] and summary["iterations"] == 2
    assert (out / "checkpoints" / "checkpoint_epoch=1.pt").is_file()


@pytest.mark.parametrize(
    "overrides,pattern",
    [
        ({"datalist": "/nonexistent/datalist.json"}, r"^datalist not found: /nonexistent/datalist.json \(set the"),
        ({"num_classes": "5"}, r"defines 11 classes .* but the configuration's num_classes is 5"),
        ({"experiment#spatial_dims": "3"}, r"is a 2D image of spatial shape \[64, 64\], but the network expects 3D"),
    ],
    ids=["missing_datalist", "class_count", "dimensionality"],
)
def test_bad_configuration_fails_before_training(tiny_datalist, tmp_path, overrides, pattern):
    import re

    done = bundle("run", "training", "--config_file", TRAIN, *tiny(tiny_datalist, tmp_path / "bad", **overrides),
                  cwd=tmp_path, check=False)
    assert done.returncode != 0
    last_line = done.stderr.strip().splitlines()[-1]
    assert re.search(pattern, last_line), done.stderr[-3000:]
    assert not (tmp_path / "bad" / "checkpoints").exists()


def test_every_datalist_problem_is_named_before_training_and_the_last_line_says_it(user_datalist, tmp_path):
    """A box past the image and a class id out of range: both reported in one run, before any training."""
    content = json.loads(Path(user_datalist).read_text())
    content["training"][1]["tags"] = [0, 1, 5]
    content["training"][2]["boxes"] = [[10, 10, 300, 40]]
    bad = Path(user_datalist).with_name("bad_datalist.json")
    bad.write_text(json.dumps(content))
    done = bundle("run", "training", "--config_file", TRAIN, *tiny(str(bad), tmp_path / "bad", acr=0), cwd=tmp_path,
                  check=False)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert lines[-3] == f"{bad}: 2 problems:"
    assert lines[-2] == (
        f"{bad}: section 'training', item 1, key 'tags': entry 2 is class id 5, outside [0, 3) (3 class_names)."
    )
    assert lines[-1] == (
        f"{bad}: section 'training', item 2, key 'boxes': boxes[0] = [10, 10, 300, 40] lies outside the image of shape "
        "[64, 64] on axis 0; expected [start..., end...] in array order with 0 <= start < end <= size on every axis "
        f"(end exclusive) (the image {bad.parent / 'images' / 'case2.png'})."
    )
    assert "Traceback" not in done.stderr and not (tmp_path / "bad").exists()


@pytest.fixture(scope="module")
def user_datalist(tmp_path_factory):
    """A user's own PNG images with a mask, tags, a box, clicks and one unannotated image, in sections."""
    root = tmp_path_factory.mktemp("user_data")
    write_user_datalist(root)
    return str(root / "datalist.json")


def test_training_on_a_users_png_datalist_keeps_their_annotations(user_datalist, tmp_path):
    out = tmp_path / "user"
    bundle("run", "training", "--config_file", TRAIN, *tiny(user_datalist, out, acr=0, max_epochs=1), cwd=tmp_path)
    split = json.loads((out / "split.json").read_text())
    kinds = {Path(i["image"]).name: i["annotation_type"] for i in split["training"]}
    assert kinds == {"case0.png": "mask", "case1.png": "tags", "case2.png": "boxes", "case3.png": "points",
                     "case4.png": "none"}
    assert split["training"][2]["boxes"] == [[10, 12, 30, 40]]
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["finished"] and set(summary["best_validation"]["per_class"]) == {"background", "bright", "dark"}
