"""Every method file of configs/methods/ trains through the bundle's command line (from another directory, tiny
sizes) and writes a models/model.pt that inference.yaml, with the same method file, loads and segments with."""

import json
import sys
from pathlib import Path

import pytest
import torch

from test_bundle import CONFIGS, TRAIN, bundle, run, tiny

ROOT = Path(__file__).resolve().parents[2]
METHODS = sorted((ROOT / "configs" / "methods").glob("*.yaml"))


@pytest.fixture(scope="module")
def tiny_datalist(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny_data_methods")
    run([sys.executable, "-m", "dsp_monai.data.synthetic", "--out", str(out), "--cells", "2", "--crops-per-cell", "3",
         "--crop-shape", "2", "64", "64", "--no-contact-sheet", "--quiet", "--overwrite"], cwd=out)
    return str(out / "datalist.json")


@pytest.mark.parametrize("method_file", METHODS, ids=[m.stem for m in METHODS])
def test_method_trains_two_iterations_and_its_model_segments(tiny_datalist, tmp_path, method_file):
    out = tmp_path / "run"
    configs = f"['{TRAIN}','{method_file}']"
    bundle("run", "training", "--config_file", configs,
           *tiny(tiny_datalist, out, max_epochs=1), cwd=tmp_path)
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["finished"] and summary["iterations"] == 2 and summary["method"] == method_file.stem
    assert summary["loss_weights"] and all(w > 0 for w in summary["loss_weights"].values())
    model = torch.load(out / "models" / "model.pt", map_location="cpu", weights_only=True)
    assert not any(key.startswith("heads.") for key in model), "the exported model must be the segmentation network"

    predictions = tmp_path / "predictions"
    bundle("run", "--config_file", f"['{TRAIN}','{method_file}','{CONFIGS / 'inference.yaml'}']", "--input",
           tiny_datalist, "--output_dir", str(predictions), "--checkpoint", str(out / "models" / "model.pt"),
           "--roi_size", "[64,64]", "--sizes#cpu#features", "[4,4,8,8,16,4]", "--sizes#cpu#embedding_dim", "8",
           cwd=tmp_path)
    assert len(sorted(predictions.glob("*_seg.zarr"))) == 12
