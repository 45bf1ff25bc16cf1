"""The datalist format: paths resolved against the JSON's folder, sections, and errors naming file, item and key."""

import json
import os

import pytest

from dsp_monai.data.datalist import DatalistError, load_datalist, resolve_path, save_datalist, split_selector

CLASSES = ["background", "liver", "tumour"]


@pytest.fixture
def folder(tmp_path):
    for name in ("img0.nii.gz", "img1.nii.gz", "lab0.nii.gz"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "cell.zarr").mkdir()
    return tmp_path


def write(folder, content, name="datalist.json"):
    path = folder / name
    path.write_text(json.dumps(content))
    return str(path)


def valid_content():
    return {
        "class_names": CLASSES,
        "training": [
            {"image": "img0.nii.gz", "label": "lab0.nii.gz", "subvolume": "p0", "id": "a"},
            {
                "image": "img1.nii.gz",
                "tags": [0, 2],
                "boxes": [[1, 2, 5, 7], [0, 0, 3, 3]],
                "box_classes": [2, 1],
                "boxes_exhaustive": False,
                "points": [[3, 4]],
                "point_classes": [2],
                "id": "b",
            },
        ],
        "validation": [{"image": "cell.zarr?crop=crop1&layer=em&axis=z&index=3", "id": "c"}],
        "test": [{"image": "img0.nii.gz", "annotation_type": "none"}],
    }


def test_load_resolves_paths_and_sections(folder):
    path = write(folder, valid_content())
    training, names = load_datalist(path, "training")
    assert names == CLASSES
    assert training[0]["image"] == str(folder / "img0.nii.gz")
    assert training[0]["label"] == str(folder / "lab0.nii.gz")
    assert training[1]["boxes"] == [[1, 2, 5, 7], [0, 0, 3, 3]]
    validation, _ = load_datalist(path, "validation")
    assert validation[0]["image"] == f"{folder / 'cell.zarr'}?crop=crop1&layer=em&axis=z&index=3"
    everything, _ = load_datalist(path)
    assert [item.get("id") for item in everything] == ["a", "b", "c", None]


def test_paths_are_relative_to_the_json_not_the_cwd(folder, monkeypatch, tmp_path_factory):
    path = write(folder, valid_content())
    monkeypatch.chdir(tmp_path_factory.mktemp("elsewhere"))
    items, _ = load_datalist(path, "training")
    assert os.path.isfile(items[0]["image"])


def test_selector_helpers():
    assert split_selector("a/b.zarr?crop=c1&index=2") == ("a/b.zarr", "crop=c1&index=2")
    assert split_selector("a/b.nii.gz") == ("a/b.nii.gz", "")
    assert resolve_path("b.zarr?x=1", "/data") == "/data/b.zarr?x=1"
    assert resolve_path("/abs/./b.png", "/data") == "/abs/b.png"


def test_data_pool_needs_subvolume(folder):
    path = write(folder, {"class_names": CLASSES, "data": [{"image": "img0.nii.gz", "subvolume": 3},
                                                           {"image": "img1.nii.gz"}]})
    with pytest.raises(DatalistError, match=r"section 'data', item 1, key 'subvolume': missing"):
        load_datalist(path)


def test_save_round_trip_writes_relative_paths(folder):
    items, names = load_datalist(write(folder, valid_content()), "training")
    out = save_datalist(folder / "copy.json", names, {"training": items}, metadata={"acr": 8})
    raw = json.loads(open(out).read())
    assert raw["training"][0]["image"] == "img0.nii.gz"
    assert raw["metadata"] == {"acr": 8}
    again, _ = load_datalist(out, "training")
    assert again == items


def test_save_refuses_invalid_content(folder):
    with pytest.raises(DatalistError, match=r"item 0, key 'tags'"):
        save_datalist(folder / "bad.json", CLASSES, {"training": [{"image": "img0.nii.gz", "tags": [5]}]})
    assert not (folder / "bad.json").exists()


def mutate(key_path, value):
    content = valid_content()
    target = content
    for key in key_path[:-1]:
        target = target[key]
    if value is KeyError:
        del target[key_path[-1]]
    else:
        target[key_path[-1]] = value
    return content


@pytest.mark.parametrize(
    "key_path, value, message",
    [
        (("training", 0, "image"), "missing.nii.gz", r"item 0, key 'image': file not found: .*missing\.nii\.gz"),
        (("training", 0, "label"), "nolabel.nii.gz", r"item 0, key 'label': file not found"),
        (("training", 0, "image"), KeyError, r"item 0, key 'image': missing"),
        (("training", 0, "image"), 7, r"item 0, key 'image': expected a non-empty path string"),
        (("training", 1, "tags"), [0, 3], r"item 1, key 'tags': entry 1 is class id 3, outside \[0, 3\)"),
        (("training", 1, "tags"), [1, 1], r"item 1, key 'tags': class ids repeat"),
        (("training", 1, "tags"), [True], r"item 1, key 'tags': entry 0 must be an integer"),
        (("training", 1, "box_classes"), [2], r"key 'box_classes': has 1 entries but 'boxes' has 2"),
        (("training", 1, "box_classes"), [2, -1], r"key 'box_classes': entry 1 is class id -1"),
        (("training", 1, "box_classes"), KeyError, r"key 'box_classes': missing; 'boxes' needs 'box_classes'"),
        (("training", 1, "boxes"), [[1, 2, 5, 7], [0, 0, 3]],
         r"key 'boxes': entry 1 must hold 4 or 6 numbers \(2D or 3D box\), got 3"),
        (("training", 1, "boxes"), [[1, 2, 1, 7], [0, 0, 3, 3]],
         r"key 'boxes': boxes\[0\] = \[1, 2, 1, 7\] is empty on axis 0 \(start = end = 1\); expected \[start"),
        (("training", 1, "boxes"), [[1, 2, 5, 7], [0, 0, 0, 3, 3, 3]], r"key 'boxes': entry 1 is 3D but"),
        (("training", 1, "boxes"), [[1, 2, 5, 7.5], [0, 0, 3, 3]],
         r"key 'boxes': boxes must hold whole numbers; got 7.5 at index \(0, 3\)"),
        (("training", 1, "points"), [[3, 4, 5]], r"key 'points': points are 3D but boxes are 2D"),
        (("training", 1, "points"), [[-3, 4]], r"key 'points': points\[0\] = \(-3, 4\) has a negative coordinate"),
        (("training", 1, "point_classes"), [9], r"key 'point_classes': entry 0 is class id 9"),
        (("training", 1, "boxes_exhaustive"), "yes", r"key 'boxes_exhaustive': expected true or false"),
        (("training", 1, "colour"), "red", r"item 1, key 'colour': unknown key"),
        (("training", 1, "id"), "a", r"item 1, key 'id': 'a' repeats item 0 of section 'training'"),
        (("test", 0, "annotation_type"), "scribbles", r"section 'test', item 0, key 'annotation_type'"),
        (("test", 0, "annotation_type"), "mask", r"item 0, key 'annotation_type': 'mask', but the item has no 'label'"),
        (("test", 0, "annotation_type"), "points",
         r"item 0, key 'annotation_type': 'points', but the item has neither 'points' nor a 'label' to derive them"),
        (("validation",), {"image": "x"}, r"section 'validation' must be a list"),
        (("class_names",), ["a", "a"], r"'class_names' repeats \['a'\]"),
        (("class_names",), KeyError, r"missing 'class_names'"),
        (("splits",), [], r"unknown top-level key 'splits'"),
    ],
)
def test_errors_name_file_item_and_key(folder, key_path, value, message):
    path = write(folder, mutate(key_path, value))
    with pytest.raises(DatalistError, match=message) as raised:
        load_datalist(path)
    assert str(raised.value).startswith(path)


def test_file_level_errors(folder):
    with pytest.raises(FileNotFoundError, match="datalist not found"):
        load_datalist(folder / "nope.json")
    broken = folder / "broken.json"
    broken.write_text("{\"class_names\": [")
    with pytest.raises(DatalistError, match="not valid JSON"):
        load_datalist(broken)
    path = write(folder, {"class_names": CLASSES, "training": []})
    with pytest.raises(DatalistError, match=r"no section 'test'; the file has \['training'\]"):
        load_datalist(path, "test")
    with pytest.raises(DatalistError, match="unknown section 'train'"):
        load_datalist(path, "train")
    assert load_datalist(path, "training") == ([], CLASSES)


def test_check_files_can_be_disabled(folder):
    content = mutate(("training", 0, "image"), "not_there.png")
    items, _ = load_datalist(write(folder, content), "training", check_files=False)
    assert items[0]["image"].endswith("not_there.png")
