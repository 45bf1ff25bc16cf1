"""The 3D override (bundle/configs/train_3d.yaml) through the bundle's command line, tiny sizes on CPU: training,
evaluation and inference on the synthetic volumes and on a user's NIfTI datalist (masks written with the input's
affine), and every method file training two iterations in 3D."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from test_bundle import CONFIGS, TRAIN, bundle, run
from user_data import write_user_volume_datalist

ROOT = Path(__file__).resolve().parents[2]
TRAIN_3D = str(CONFIGS / "train_3d.yaml")
EVALUATE = str(CONFIGS / "evaluate.yaml")
INFERENCE = str(CONFIGS / "inference.yaml")
METHODS = sorted((ROOT / "configs" / "methods").glob("*.yaml"))
NETWORK = {"roi_size": "[16,32,32]", "sizes#cpu#features": "[4,4,8,8,16,4]", "sizes#cpu#embedding_dim": "8"}


def configs(*files):
    return "[" + ",".join(f"'{f}'" for f in files) + "]"


def tiny3d(datalist_path, output_dir, **extra):
    """Command-line overrides of a tiny 3D CPU configuration."""
    overrides = {
        "datalist": datalist_path, "output_dir": str(output_dir), "models_dir": str(Path(output_dir) / "models"),
        **NETWORK, "sizes#cpu#cutout_size": "4", "batch_size": "2", "iterations_per_epoch": "2", "max_epochs": "1",
        "val_interval": "1", "num_workers": "0", "acr": "2", "warmup_iterations": "2",
    }
    overrides.update({k: str(v) for k, v in extra.items()})
    return [token for key, value in overrides.items() for token in (f"--{key}", value)]


def flags(**values):
    return [token for key, value in values.items() for token in (f"--{key}", str(value))]


@pytest.fixture(scope="module")
def volume_datalist(tmp_path_factory):
    """6 synthetic crops of 8 x 32 x 32 voxels (10.48 x 8 x 8 nm) from 2 cells, one 3D item each."""
    out = tmp_path_factory.mktemp("tiny_volumes")
    run([sys.executable, "-m", "dsp_monai.data.synthetic", "--out", str(out), "--cells", "2", "--crops-per-cell", "3",
         "--crop-shape", "8", "32", "32", "--no-contact-sheet", "--quiet", "--overwrite"], cwd=out)
    return str(out / "datalist_3d.json")


def test_3d_training_evaluation_and_inference_on_the_synthetic_volumes(volume_datalist, tmp_path):
    out = tmp_path / "run"
    bundle("run", "training", "--config_file", configs(TRAIN, TRAIN_3D), *tiny3d(volume_datalist, out), cwd=tmp_path)
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["finished"] and summary["iterations"] == 2 and summary["method"] == "dsp"
    best = summary["best_validation"]
    scored = [v for v in best["per_class"].values() if v is not None]
    assert scored and abs(best["mean"] - sum(scored) / len(scored)) < 1e-9
    model = torch.load(out / "models" / "model.pt", map_location="cpu", weights_only=True)
    assert {w.dim() for k, w in model.items() if k.endswith("conv.weight")} == {5}  # 3D convolutions
    split = json.loads((out / "split.json").read_text())
    assert all("?crop=" in i["image"] and "axis=" not in i["image"] for i in split["training"])

    bundle("run", "evaluating", "--config_file", configs(TRAIN, TRAIN_3D, EVALUATE), *tiny3d(volume_datalist, out),
           cwd=tmp_path)
    report = json.loads((out / "test_metrics.json").read_text())
    assert report["images"] == len(split["test"]) and 0.0 <= report["dice"]["mean"] <= 1.0

    predictions = tmp_path / "predictions"
    bundle("run", "--config_file", configs(TRAIN, TRAIN_3D, INFERENCE), "--datalist", volume_datalist,
           "--output_dir", str(predictions), "--checkpoint", str(out / "models" / "model.pt"), *flags(**NETWORK),
           cwd=tmp_path)
    import zarr
    from PIL import Image

    masks = sorted(predictions.glob("*_seg.zarr"))
    assert len(masks) == 6
    mask = zarr.open_array(str(masks[0]), mode="r")
    assert mask.shape == (8, 32, 32) and mask.dtype == "uint8" and int(mask[...].max()) < 11
    assert mask.attrs["spacing"] == [10.48, 8.0, 8.0]
    overlay = Image.open(next((predictions / "overlays").glob("*.png")))
    # one row per axis through its middle: (y, x) 32 x 32, then (z, x) and (z, y) 8 x 32; image | prediction
    assert overlay.size == (64, 32 + 8 + 8)


@pytest.fixture(scope="module")
def nifti_datalist(tmp_path_factory):
    root = tmp_path_factory.mktemp("nifti_volumes")
    write_user_volume_datalist(root)
    return str(root / "datalist.json")


def test_3d_training_evaluation_and_inference_on_a_users_nifti_volumes(nifti_datalist, tmp_path):
    import nibabel as nib

    out = tmp_path / "run"
    bundle("run", "training", "--config_file", configs(TRAIN, TRAIN_3D), *tiny3d(nifti_datalist, out, acr=0),
           cwd=tmp_path)
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["finished"] and summary["iterations"] == 2
    split = json.loads((out / "split.json").read_text())
    kinds = sorted(item["annotation_type"] for item in split["training"])
    assert kinds == ["boxes", "mask", "none", "points", "tags"]
    assert split["training"][2]["boxes"] == [[3, 4, 2, 12, 15, 7]]

    bundle("run", "evaluating", "--config_file", configs(TRAIN, TRAIN_3D, EVALUATE),
           *tiny3d(nifti_datalist, out, acr=0), cwd=tmp_path)
    report = json.loads((out / "test_metrics.json").read_text())
    assert report["images"] == 2 and set(report["dice"]["per_class"]) == {"background", "bright", "dark"}

    predictions = tmp_path / "predictions"
    bundle("run", "--config_file", configs(TRAIN, TRAIN_3D, INFERENCE), "--datalist", nifti_datalist,
           "--input", nifti_datalist, "--input_section", "test", "--output_dir", str(predictions),
           "--checkpoint", str(out / "models" / "model.pt"), *flags(**NETWORK), cwd=tmp_path)
    source = nib.load(str(Path(nifti_datalist).parent / "images" / "case6.nii.gz"))
    written = nib.load(str(predictions / "case6_seg.nii.gz"))
    assert written.shape == source.shape == (20, 24, 12)
    np.testing.assert_array_equal(written.affine, source.affine)
    np.testing.assert_allclose(written.header.get_zooms(), (0.8, 0.8, 2.0), rtol=1e-6)
    assert set(np.unique(np.asarray(written.dataobj))) <= {0, 1, 2}


def test_a_2d_datalist_in_the_3d_configuration_is_named_before_training(tmp_path):
    from user_data import write_user_datalist

    write_user_datalist(tmp_path / "png")
    done = bundle("run", "training", "--config_file", configs(TRAIN, TRAIN_3D),
                  *tiny3d(str(tmp_path / "png" / "datalist.json"), tmp_path / "bad", acr=0), cwd=tmp_path,
                  check=False)
    assert done.returncode != 0
    assert done.stderr.strip().splitlines()[-1].endswith(
        "is a 2D image of spatial shape [64, 64], but the network expects 3D images (spatial_dims: 3); give 3D "
        "volumes, or train in 2D with bundle/configs/train.yaml alone (without train_3d.yaml)."
    )


@pytest.mark.parametrize("method_file", [m for m in METHODS if m.stem != "dsp"],
                         ids=[m.stem for m in METHODS if m.stem != "dsp"])
def test_every_method_trains_two_iterations_in_3d(volume_datalist, tmp_path, method_file):
    out = tmp_path / "run"
    bundle("run", "training", "--config_file", configs(TRAIN, method_file, TRAIN_3D),
           *tiny3d(volume_datalist, out), cwd=tmp_path)
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["finished"] and summary["iterations"] == 2 and summary["method"] == method_file.stem
    model = torch.load(out / "models" / "model.pt", map_location="cpu", weights_only=True)
    assert {w.dim() for k, w in model.items() if k.endswith("conv.weight")} == {5}
