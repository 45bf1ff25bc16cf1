"""The datastore's mixed datalist (dsp_monai.label.datalist) with a stand-in datastore; no MONAI Label needed."""

import numpy as np
import pytest
from PIL import Image

from dsp_monai.data.datalist import load_datalist
from dsp_monai.label.datalist import datastore_items, split_items, write_datalist

CLASSES = ["background", "mito", "er"]


class FakeDatastore:
    """The datastore methods the datalist reads, over a dict id -> (image path, final mask path or None, info)."""

    def __init__(self, objects):
        self.objects = objects

    def list_images(self):
        return list(self.objects)

    def get_image_uri(self, image_id):
        return self.objects[image_id][0]

    def get_image_info(self, image_id):
        return dict(self.objects[image_id][2], path=self.objects[image_id][0])

    def get_labels_by_image_id(self, image_id):
        return {"final": image_id} if self.objects[image_id][1] else {}

    def get_label_uri(self, image_id, tag):
        assert tag == "final"
        return self.objects[image_id][1]


@pytest.fixture
def store(tmp_path):
    def image(name):
        path = tmp_path / name
        Image.fromarray(np.zeros((8, 10), np.uint8)).save(path)
        return str(path)

    objects = {f"m{i}": (image(f"m{i}.png"), image(f"m{i}_mask.png"), {}) for i in range(5)}
    objects["t"] = (image("t.png"), None, {"dsp_annotations": {"tags": [0, 1]}, "user": "x"})
    objects["p"] = (image("p.png"), None, {"dsp_annotations": {"points": [[1, 2]], "point_classes": [2]}})
    objects["b"] = (image("b.png"), image("b_mask.png"), {"dsp_annotations": {"tags": [0]}})
    objects["u"] = (image("u.png"), None, {})
    return FakeDatastore(objects)


def test_items_carry_their_annotations_and_type(store):
    items = {item["id"]: item for item in datastore_items(store)}
    assert list(items) == sorted(store.objects)
    assert items["t"] == {"image": store.objects["t"][0], "id": "t", "tags": [0, 1], "annotation_type": "tags"}
    assert items["p"]["points"] == [[1, 2]] and items["p"]["annotation_type"] == "points"
    assert items["b"]["label"] == store.objects["b"][1] and items["b"]["tags"] == [0]
    assert items["b"]["annotation_type"] == "mask"
    assert items["u"] == {"image": store.objects["u"][0], "id": "u", "annotation_type": "none"}


def test_share_of_masked_images_validates(store):
    items = datastore_items(store)
    parts = split_items(items, val_split=0.34, seed=0)  # round(0.34 * 6 masked) = 2
    assert len(parts["validation"]) == 2 and all(item.get("label") for item in parts["validation"])
    assert all("id" not in item for item in parts["validation"] + parts["test"])
    assert parts["test"] == parts["validation"]
    validated = {item["image"] for item in parts["validation"]}
    assert len(parts["training"]) == len(items) - 2
    assert validated.isdisjoint(item["image"] for item in parts["training"])
    assert {item["id"] for item in parts["training"]} >= {"t", "p", "u"}
    again = split_items(items, val_split=0.34, seed=0)
    assert again == parts
    others = [split_items(items, val_split=0.34, seed=seed)["validation"] for seed in range(1, 8)]
    assert any(other != parts["validation"] for other in others)


def test_too_few_masked_images_validate_on_the_training_masks(store):
    items = [item for item in datastore_items(store) if item["id"] in ("m0", "t", "p")]
    parts = split_items(items, val_split=0.2, seed=0)
    assert [item["id"] for item in parts["training"]] == ["m0", "p", "t"]
    assert parts["validation"] == [{k: v for k, v in items[0].items() if k != "id"}]


def test_no_mask_is_an_error(store):
    items = [item for item in datastore_items(store) if item["id"] in ("t", "p", "u")]
    with pytest.raises(ValueError, match=r"needs at least one image with a final mask.*3 images and none has one"):
        split_items(items, val_split=0.2, seed=0)


def test_written_datalist_loads_with_the_datalist_reader(store, tmp_path):
    path = tmp_path / "run" / "datalist.json"
    parts = write_datalist(str(path), store, CLASSES, val_split=0.2, seed=0)
    training, class_names = load_datalist(path, "training")
    assert class_names == CLASSES
    assert [item["id"] for item in training] == [item["id"] for item in parts["training"]]
    expected = {"b": "mask", "m0": "mask", "m1": "mask", "m2": "mask", "m3": "mask", "m4": "mask", "p": "points",
                "t": "tags", "u": "none"}
    types = {item["id"]: item["annotation_type"] for item in training}
    held_out = set(expected) - set(types)
    assert len(held_out) == 1 and expected[held_out.pop()] == "mask"
    assert all(expected[key] == value for key, value in types.items())
    assert len(load_datalist(path, "validation")[0]) == 1
