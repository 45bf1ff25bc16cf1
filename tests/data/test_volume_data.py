"""Volumes as data: the synthetic volume datalist, voxel sizes read from the affines, and the experiment's spacing."""

import json
import logging

import nibabel as nib
import numpy as np
import pytest

from dsp_monai.data.datalist import inspect_file
from dsp_monai.data.experiment import prepare_experiment
from dsp_monai.data.readers import MultiFormatReader
from dsp_monai.data.synthetic import SyntheticConfig, generate_dataset, volume_datalist


def test_synthetic_volume_datalist_holds_every_crop_once_with_its_subvolume(tmp_path):
    summary = generate_dataset(tmp_path, SyntheticConfig(cells=1, crops_per_cell=2, crop_shape=(4, 32, 32)),
                               progress=False, contact_sheet=False)
    slices = json.loads((tmp_path / "datalist.json").read_text())["data"]
    volumes = json.loads((tmp_path / "datalist_3d.json").read_text())
    assert [v["subvolume"] for v in volumes["data"]] == sorted({s["subvolume"] for s in slices})
    assert volumes["data"][0] == {"image": "cell_00.zarr?crop=crop1&layer=em",
                                  "label": "cell_00.zarr?crop=crop1&layer=label", "subvolume": "cell_00/crop1",
                                  "id": "cell_00/crop1"}
    info = inspect_file(str(tmp_path / "cell_00.zarr") + "?crop=crop2&layer=em",
                        MultiFormatReader(class_names=summary["class_names"]), summary["class_names"])
    assert info.spatial_shape == (4, 32, 32) and info.spacing == (10.48, 8.0, 8.0)
    (tmp_path / "datalist_3d.json").unlink()  # datasets of earlier versions get it on first use
    assert json.loads(open(volume_datalist(tmp_path / "datalist.json")).read()) == volumes


def _volume(path, spacing, rotate=False):
    affine = np.diag([*spacing, 1.0])
    if rotate:  # a rotation about the last axis: the columns' lengths are still the spacing
        c, s = np.cos(0.5), np.sin(0.5)
        affine[:2, :2] = np.array([[c, -s], [s, c]]) @ np.diag(spacing[:2])
    nib.save(nib.Nifti1Image(np.random.default_rng(0).random((6, 5, 4), dtype=np.float32) * 100, affine), str(path))


def test_experiment_spacing_is_the_median_of_the_training_volumes_and_outliers_are_counted(tmp_path, caplog):
    spacings = {"a": (0.8, 0.8, 2.0), "b": (0.8, 0.8, 2.0), "c": (0.8, 0.8, 2.0), "d": (1.0, 1.0, 3.0)}
    for name, spacing in spacings.items():
        _volume(tmp_path / f"{name}.nii.gz", spacing, rotate=name == "b")
    content = {"class_names": ["x", "y"],
               "training": [{"image": f"{n}.nii.gz", "tags": [1]} for n in spacings],
               "validation": [{"image": "a.nii.gz", "tags": [0]}], "test": [{"image": "a.nii.gz", "tags": [0]}]}
    (tmp_path / "datalist.json").write_text(json.dumps(content))
    with caplog.at_level(logging.WARNING, logger="dsp_monai.data.experiment"):
        experiment = prepare_experiment(str(tmp_path / "datalist.json"), str(tmp_path / "run"), acr=0,
                                        spatial_dims=3, intensity_range=[0, 100])
    assert experiment["spacing"] == pytest.approx([0.8, 0.8, 2.0])
    assert "1 of 4 training images" in caplog.text and "[0.8, 0.8, 2.0]" in caplog.text
