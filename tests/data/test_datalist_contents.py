"""The datalist's content checks (every file opened before training) and the experiment's checks against the
configuration: each bad input is pinned by its message, all problems of a datalist come together."""

import json
import logging

import nibabel as nib
import numpy as np
import pytest
import tifffile
from PIL import Image

from dsp_monai.data.datalist import DatalistError, DatalistNotFoundError, read_datalist
from dsp_monai.data.experiment import ExperimentError, prepare_experiment

CLASSES = ["background", "bright", "dark"]


@pytest.fixture
def folder(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(3):
        image = (rng.random((64, 64)) * 60 + 100).astype(np.uint8)
        label = np.zeros((64, 64), np.uint8)
        label[10:30, 12:40] = 2
        label[40:55, 40:60] = 1
        label[0, :] = 255
        Image.fromarray(image).save(tmp_path / f"img{i}.png")
        Image.fromarray(label).save(tmp_path / f"lab{i}.png")
    Image.fromarray(np.zeros((32, 48), np.uint8)).save(tmp_path / "small_label.png")
    Image.fromarray(np.full((64, 64), 7, np.uint8)).save(tmp_path / "seven.png")
    nan = rng.random((64, 64)).astype(np.float32)
    nan[3, 4], nan[5, 5] = np.nan, np.inf
    tifffile.imwrite(tmp_path / "nan.tif", nan)
    (tmp_path / "broken.png").write_bytes(b"not a png")
    return tmp_path


def write(folder, training, name="datalist.json", **sections):
    content = {"class_names": CLASSES, "training": training,
               "validation": [{"image": "img2.png", "label": "lab2.png"}],
               "test": [{"image": "img2.png", "label": "lab2.png"}], **sections}
    path = folder / name
    path.write_text(json.dumps(content))
    return str(path)


def good():
    return [{"image": "img0.png", "label": "lab0.png"}, {"image": "img1.png", "tags": [0, 1, 2]}]


@pytest.mark.parametrize(
    "item, message",
    [
        ({"image": "img1.png", "boxes": [[10, 10, 300, 40]], "box_classes": [2]},
         r"section 'training', item 2, key 'boxes': boxes\[0\] = \[10, 10, 300, 40\] lies outside the image of shape "
         r"\[64, 64\] on axis 0; .* \(the image .*img1\.png\)\.$"),
        ({"image": "img1.png", "points": [[3, 64]], "point_classes": [1]},
         r"item 2, key 'points': points\[0\] = \(3, 64\) lies outside the image of shape \[64, 64\]"),
        ({"image": "img1.png", "boxes": [[0, 0, 0, 2, 2, 2]], "box_classes": [1]},
         r"item 2, key 'boxes': the boxes are 3D but the image .*img1\.png is 2D with spatial shape \[64, 64\]\.$"),
        ({"image": "nan.tif"},
         r"item 2, key 'image': .*nan\.tif holds 2 NaN or infinite intensities; replace them"),
        ({"image": "broken.png"},
         r"item 2, key 'image': cannot read .*broken\.png: UnidentifiedImageError: "),
        ({"image": "img1.png", "label": "small_label.png"},
         r"item 2, key 'label': .*small_label\.png has spatial shape \[32, 48\] but the image .*img1\.png has "
         r"\[64, 64\]; they must match\.$"),
        ({"image": "img1.png", "label": "seven.png"},
         r"item 2, key 'label': .*seven\.png holds the value\(s\) \[7\] outside the class ids \[0, 3\) and the ignore "
         r"value 255\.$"),
        ({"image": "img1.png", "tags": [0, 1], "points": [[5, 5]], "point_classes": [2]},
         r"item 2, key 'points': points\[0\] = \(5, 5\) has class 2, which is impossible there: class 2 is not among "
         r"the image's tags \[0, 1\]\.$"),
        ({"image": "img0.png", "label": "lab0.png", "points": [[20, 20]], "point_classes": [1]},
         r"item 2, key 'points': points\[0\] = \(20, 20\) has class 1, which is impossible there: the label there is "
         r"2\.$"),
        ({"image": "img1.png", "boxes": [[0, 0, 4, 4]], "box_classes": [1], "boxes_exhaustive": True, "tags": [2]},
         r"item 2, key 'boxes': boxes\[0\] = \[0, 0, 4, 4\] of class 1 holds no pixel where class 1 is possible: "
         r"class 1 is not among the image's tags \[2\]\.$"),
    ],
    ids=["box_outside", "point_outside", "box_dims", "nan_tiff", "unreadable", "label_shape", "label_values",
         "point_vs_tags", "point_vs_mask", "box_vs_tags"],
)
def test_each_bad_file_or_annotation_is_named(folder, item, message):
    path = write(folder, good() + [item])
    with pytest.raises(DatalistError, match=message) as raised:
        read_datalist(path, check_contents=True)
    assert len(raised.value.problems) == 1 and str(raised.value).startswith(path)


def test_every_problem_is_reported_together_up_to_the_limit(folder):
    bad = [{"image": "img1.png", "points": [[3, 64 + i]], "point_classes": [1]} for i in range(5)]
    path = write(folder, good() + bad + [{"image": "img1.png", "tags": [9]}, "not an item"])
    with pytest.raises(DatalistError) as raised:
        read_datalist(path, check_contents=True, max_problems=3)
    lines = str(raised.value).splitlines()
    assert lines[0] == f"{path}: 7 problems (the first 3 listed):"
    assert len(raised.value.problems) == 7 and len(lines) == 4
    assert "item 7, key 'tags': entry 0 is class id 9" in raised.value.problems[0]
    assert "item 8: expected an object with an 'image' key, got str" in raised.value.problems[1]
    assert all("key 'points': points[0] = (3, 6" in p for p in raised.value.problems[2:])


def test_whole_number_floats_are_coordinates_fractions_are_not(folder):
    path = write(folder, good() + [{"image": "img1.png", "boxes": [[10.0, 12, 30, 40.0]], "box_classes": [2]}])
    items = read_datalist(path, check_contents=True).items("training")
    assert items[2]["boxes"] == [[10, 12, 30, 40]] and all(type(v) is int for v in items[2]["boxes"][0])


def test_files_are_read_once(folder, monkeypatch):
    from dsp_monai.data import datalist as module

    path = write(folder, good())
    first = read_datalist(path, check_contents=True)
    calls = []
    monkeypatch.setattr(module, "inspect_file", lambda *args: calls.append(args))
    assert read_datalist(path, check_contents=True) is first and not calls
    assert set(first.images) == {str(folder / f"{name}.png") for name in ("img0", "lab0", "img1", "img2", "lab2")}


def test_missing_datalist_is_both_errors(tmp_path):
    with pytest.raises(DatalistNotFoundError, match=r"datalist not found: .*nope\.json \(set the configuration"):
        read_datalist(tmp_path / "nope.json")
    assert issubclass(DatalistNotFoundError, FileNotFoundError) and issubclass(DatalistNotFoundError, DatalistError)


def test_configuration_mismatches_are_named(folder, tmp_path):
    path = write(folder, good())
    with pytest.raises(ExperimentError, match=r"defines 3 classes .* but the configuration's num_classes is 5"):
        prepare_experiment(path, str(tmp_path / "a"), acr=0, num_classes=5)
    with pytest.raises(ExperimentError) as raised:
        prepare_experiment(path, str(tmp_path / "b"), acr=0, spatial_dims=3)
    assert len(raised.value.problems) == 4  # every image of every section, not only the first
    assert raised.value.problems[0].endswith(
        "section 'training', item 0, key 'image': " + str(folder / "img0.png") + " is a 2D image of spatial shape "
        "[64, 64], but the network expects 3D images (spatial_dims: 3); give 3D volumes, or train in 2D with "
        "bundle/configs/train.yaml alone (without train_3d.yaml)."
    )


def test_split_files_of_earlier_versions_are_read_or_named(folder, tmp_path):
    path = write(folder, good())
    first = prepare_experiment(path, str(tmp_path / "new"), acr=0)
    request = json.loads((tmp_path / "new" / "split.json").read_text())["extra"]["request"]
    earlier = tmp_path / "earlier"  # the unversioned file earlier bundles wrote: its parameters are the request
    earlier.mkdir()
    old = {"parameters": request, **{part: first[part] for part in ("training", "validation", "test", "class_names")}}
    (earlier / "split.json").write_text(json.dumps(old))
    again = prepare_experiment(path, str(earlier), acr=0)
    assert {part: again[part] for part in old if part != "parameters"} == {k: v for k, v in old.items()
                                                                          if k != "parameters"}
    assert json.loads((earlier / "split.json").read_text()) == old  # left as it was
    with pytest.raises(ExperimentError, match=r"split\.json was written for other experiment parameters"):
        prepare_experiment(path, str(earlier), acr=0, seed=4)
    version1 = tmp_path / "version1"
    version1.mkdir()
    (version1 / "split.json").write_text(json.dumps({"format_version": 1, "acr": 8, "training": []}))
    with pytest.raises(ExperimentError, match=r"split\.json' is format version 1, not a split file of format version "
                                              r"2\. Delete it"):
        prepare_experiment(path, str(version1), acr=0)


def _nifti(folder, name, array):
    nib.save(nib.Nifti1Image(array.astype(np.float32), np.eye(4)), str(folder / name))


def test_intensities_squeezed_into_a_small_part_of_the_range_warn(folder, tmp_path, caplog):
    rng = np.random.default_rng(1)
    for i in range(2):
        _nifti(folder, f"unit{i}.nii.gz", rng.random((64, 64)))
    path = write(folder, [{"image": "unit0.nii.gz", "tags": [0]}, {"image": "unit1.nii.gz"}], name="unit.json")
    with caplog.at_level(logging.WARNING, logger="dsp_monai.data.experiment"):
        result = prepare_experiment(path, str(tmp_path), acr=0, intensity_range=[0.0, 255.0])
    assert result["intensity_range"] == [0.0, 255.0]
    (message,) = [r.getMessage() for r in caplog.records]
    assert message.startswith("the training intensities span [0.00")
    assert "only 0.4% of intensity_range [0, 255]" in message
    assert "set the configuration's intensity_range (--intensity_range) to [0.00" in message and "or to auto" in message


def test_intensities_outside_the_range_warn_and_auto_derives_it(folder, tmp_path, caplog):
    values = np.linspace(-100.0, 300.0, 64 * 64).reshape(64, 64)
    _nifti(folder, "wide.nii.gz", values)
    path = write(folder, [{"image": "wide.nii.gz", "tags": [0]}], name="wide.json")
    with caplog.at_level(logging.INFO, logger="dsp_monai.data.experiment"):
        prepare_experiment(path, str(tmp_path / "given"), acr=0, intensity_range=[0, 255])
        auto = prepare_experiment(path, str(tmp_path / "auto"), acr=0, intensity_range="auto",
                                  intensity_percentiles=(1.0, 99.0))
    messages = [r.getMessage() for r in caplog.records]
    share = 100 * np.mean((values < 0) | (values > 255))  # a quarter below 0, 45 / 400 above 255
    assert any(m.startswith(f"{share:.1f}% of the training intensities (observed [-100, 300]) fall outside "
                            "intensity_range [0, 255] and are clipped") for m in messages), messages
    expected = np.percentile(values, [1.0, 99.0])
    np.testing.assert_allclose(auto["intensity_range"], expected, rtol=0, atol=1e-3)
    assert any(m.startswith("intensity_range auto: [") and "percentiles [1.0, 99.0] of 1 training images" in m
               for m in messages)
    with pytest.raises(ExperimentError, match=r"intensity_range must be \[low, high\] or 'auto'; got 'automatic'"):
        prepare_experiment(path, str(tmp_path / "auto"), acr=0, intensity_range="automatic")


def test_the_bundle_entry_ends_with_the_message_alone(folder, tmp_path):
    from dsp_monai.data.experiment import prepare_bundle_experiment

    path = write(folder, good() + [{"image": "img1.png", "tags": [4]}])
    with pytest.raises(SystemExit) as raised:
        prepare_bundle_experiment(datalist=path, output_dir=str(tmp_path), acr=0)
    assert raised.value.code == (
        f"{path}: section 'training', item 2, key 'tags': entry 0 is class id 4, outside [0, 3) (3 class_names)."
    )
    assert raised.value.__cause__ is None and raised.value.__suppress_context__
