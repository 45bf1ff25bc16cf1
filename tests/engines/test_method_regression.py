"""Regression of the training methods: the loss terms of the first iterations of dsp, fixmatch_plf and unet (and two
DSP variants, and the point branches), built through the bundle's config files, equal the values recorded in
``fixtures/method_loss_terms.json`` (to 1e-6).

The fixture of dsp, fixmatch_plf and unet was recorded before the trainer became a list of named loss terms, so it
pins that refactor; the point branches' and the baselines' entries were recorded when they were added. Record it
again only on purpose (a method's numbers are meant to change): ``DSP_RECORD_FIXTURE=1 python -m pytest
tests/engines/test_method_regression.py``.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from ignite.engine import Events
from monai.bundle import ConfigParser

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = Path(__file__).resolve().parent / "fixtures" / "method_loss_terms.json"
ITERATIONS = 3

# The bundle's default network (train.yaml's network_def), for cases pinned with it under a method file that names
# another network.
DSP_NETWORK = {"_target_": "dsp_monai.networks.DSPBasicUNet", "spatial_dims": 2, "in_channels": 1,
               "num_classes": "@num_classes", "features": "$@size['features']",
               "embedding_dim": "$@size['embedding_dim']", "num_prototypes": "@num_prototypes",
               "temperature": "@temperature"}

# case -> (method config file or None for the bundle defaults, extra overrides)
CASES = {
    "dsp": (None, {}),
    "dsp_method_file": ("dsp", {}),
    # recorded when fixmatch_plf used the DSP network; the method file now names the plain BasicUNet (as unet and
    # fixmatch), so this case keeps the configuration it pinned by naming the DSP network explicitly:
    "fixmatch_plf": ("fixmatch_plf", {"network_def": DSP_NETWORK}),
    "unet": ("unet", {}),
    "dsp_ema_teacher": ("dsp", {"pseudo_label_source": "ema", "ema_decay": 0.5}),
    "dsp_weak_view_only": ("dsp", {"loss_terms#dsp_strong#weight": 0.0}),
    # recorded when the point branches were added (masks + points):
    "euclidean_branch": ("euclidean_branch", {"weak_types": ["points"]}),
    "geodesic_branch": ("geodesic_branch", {"weak_types": ["points"]}),
    # recorded when the baselines were added (each with the weak type of its row of the paper's comparison):
    "pseudo_label": ("pseudo_label", {}),
    "pseudo_label_plf": ("pseudo_label_plf", {"weak_types": ["boxes"]}),
    "fixmatch": ("fixmatch", {"weak_types": []}),
    "fixmatch_plf_basic_unet": ("fixmatch_plf", {}),
    "cls_branch": ("cls_branch", {"weak_types": ["tags"]}),
    "box_projection": ("box_projection", {"weak_types": ["boxes"]}),
    "con2r": ("con2r", {}),
}
BASELINE_TERMS = ("pseudo_label", "fixmatch", "tags", "box_projection", "box_pairwise", "con2r")


@pytest.fixture(scope="module")
def tiny_datalist(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny_data")
    subprocess.run(
        [sys.executable, "-m", "dsp_monai.data.synthetic", "--out", str(out), "--cells", "2", "--crops-per-cell", "3",
         "--crop-shape", "4", "64", "64", "--no-contact-sheet", "--quiet", "--overwrite"],
        cwd=out, check=True, capture_output=True,
    )
    return str(out / "datalist.json")


def first_iterations(datalist: str, output_dir: Path, method, overrides: dict) -> list:
    """The logged loss terms and total of the first ITERATIONS iterations of one method on the CPU."""
    files = [str(ROOT / "bundle" / "configs" / "train.yaml")]
    if method is not None:
        files.append(str(ROOT / "configs" / "methods" / f"{method}.yaml"))
    parser = ConfigParser()
    parser.read_config(files)
    parser.update({
        "datalist": datalist, "output_dir": str(output_dir), "models_dir": str(output_dir / "models"),
        "device": "$torch.device('cpu')", "profile": "cpu", "amp": False, "roi_size": [64, 64],
        "sizes#cpu#features": [4, 4, 8, 8, 16, 4], "sizes#cpu#embedding_dim": 8, "batch_size": 4,
        "iterations_per_epoch": ITERATIONS, "max_epochs": 1, "val_interval": 10, "num_workers": 0, "acr": 2,
        "warmup_iterations": 2,
        # the recipe the fixture was recorded with, before the no-harm defaults (docs/diagnosis.md): the DSP loss
        # summed over classes with weight 1
        "lambda_dsp": 1.0, "dsp_loss#class_reduction": "sum", **overrides,
    })
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        parser.get_parsed_content("initialize")
        trainer = parser.get_parsed_content("train#trainer")
        records = []

        @trainer.on(Events.ITERATION_COMPLETED)
        def record(engine):
            output = engine.state.output
            records.append({"loss": float(output["loss"]), **output["terms"], **output["term_parts"]})

        trainer.run()
    finally:
        torch.set_num_threads(threads)
    return records


def comparable(record: dict) -> dict:
    """The quantities the fixture pins, from one iteration's logged terms: the total, CE, PLF (0 when the method
    has none), the DSP loss summed over its views (0 when none) and, when the method has it, the weak view's DSP
    loss per annotation type (the names the trainer logged when the fixture was recorded)."""
    out = {"loss": record["loss"], "ce": record["ce"], "plf": record.get("plf", 0.0),
           "dsp": record.get("dsp_weak", 0.0) + record.get("dsp_strong", 0.0)}
    if "dsp_weak" in record:
        out.update({f"dsp_{kind}": record[f"dsp_weak_{kind}"] for kind in ("mask", "box", "point", "image")})
    if "point_distance" in record:
        out["point_distance"] = record["point_distance"]
    out.update({name: record[name] for name in BASELINE_TERMS if name in record})
    return out


@pytest.mark.parametrize("case", list(CASES))
def test_first_iterations_reproduce_the_recorded_loss_terms(tiny_datalist, tmp_path, case):
    method, overrides = CASES[case]
    observed = [comparable(r) for r in first_iterations(tiny_datalist, tmp_path / case, method, overrides)]
    if os.environ.get("DSP_RECORD_FIXTURE"):
        recorded = json.loads(FIXTURE.read_text()) if FIXTURE.exists() else {}
        recorded[case] = observed
        FIXTURE.write_text(json.dumps(recorded, indent=1, sort_keys=True) + "\n")
    expected = json.loads(FIXTURE.read_text())[case]
    assert len(observed) == len(expected) == ITERATIONS
    for iteration, (got, want) in enumerate(zip(observed, expected), 1):
        assert got.keys() == want.keys(), f"iteration {iteration}"
        for key in want:
            assert got[key] == pytest.approx(want[key], rel=1e-6, abs=1e-6), f"{case}, iteration {iteration}, {key}"
