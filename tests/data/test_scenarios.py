"""ACR scenarios: exact mask counts, balanced weak types, nested masks, sub-volume-disjoint splits, split files."""

import dataclasses
import json
import math
from collections import Counter

import pytest

from dsp_monai.data.scenarios import (
    assign_annotation_types,
    load_scenario,
    make_scenario,
    make_splits,
    save_scenario,
)


def datalist(subvolumes=12, sizes=(5, 9, 14)):
    items = []
    for sv in range(subvolumes):
        for index in range(sizes[sv % len(sizes)]):
            items.append({"image": f"crop{sv}.zarr/em/{index}", "label": f"crop{sv}.zarr/lab/{index}",
                          "subvolume": f"crop{sv}"})
    return items


@pytest.mark.parametrize("count,acr", [(100, 1), (100, 2), (100, 8), (100, 64), (10, 64), (7, 2), (64, 64)])
def test_mask_count_is_floor_with_minimum_one(count, acr):
    items = [{"image": str(i), "subvolume": "a"} for i in range(count)]
    kinds = Counter(item["annotation_type"] for item in assign_annotation_types(items, acr, ("tags",)))
    assert kinds["mask"] == max(1, math.floor(count / acr))
    assert kinds["mask"] + kinds["tags"] == count


@pytest.mark.parametrize("weak", [("tags", "boxes", "points"), ("boxes", "points"), ("points",)])
def test_weak_types_are_balanced(weak):
    items = [{"image": str(i), "subvolume": "a"} for i in range(101)]
    kinds = Counter(item["annotation_type"] for item in assign_annotation_types(items, 4, weak, seed=3))
    weak_counts = [kinds[t] for t in weak]
    assert kinds["mask"] == 25 and sum(weak_counts) == 76
    assert max(weak_counts) - min(weak_counts) <= 1
    assert set(kinds) == {"mask", *weak}


def test_semi_supervised_gives_none():
    items = [{"image": str(i), "subvolume": "a"} for i in range(16)]
    for weak in ((), None, []):
        kinds = Counter(item["annotation_type"] for item in assign_annotation_types(items, 8, weak))
        assert kinds == {"mask": 2, "none": 14}


def test_masks_are_nested_across_acr_and_random_per_seed():
    items = [{"image": str(i), "subvolume": "a"} for i in range(128)]

    def masked(acr, seed=0):
        return {item["image"] for item in assign_annotation_types(items, acr, ("tags",), seed) if
                item["annotation_type"] == "mask"}

    for low, high in ((1, 2), (2, 8), (8, 64)):
        assert masked(high) <= masked(low)
    assert masked(8, seed=0) != masked(8, seed=1)
    assert masked(8, seed=4) == masked(8, seed=4)
    assert masked(64) != {"0", "1"}, "masks must be drawn at random, not the first items"


def test_input_items_are_not_modified():
    items = [{"image": "a", "subvolume": "s"}]
    assign_annotation_types(items, 1, ("tags",))
    assert items == [{"image": "a", "subvolume": "s"}]


@pytest.mark.parametrize("mode", ["random", "kfold"])
def test_splits_are_disjoint_by_subvolume_and_cover_everything(mode):
    items = datalist()
    splits = make_splits(items, num_splits=5, seed=0, mode=mode)
    assert len(splits) == 5
    all_ids = {item["subvolume"] for item in items}
    for split in splits:
        parts = [set(split[p]) for p in ("training", "validation", "test")]
        assert all(parts), split
        assert parts[0].isdisjoint(parts[1]) and parts[0].isdisjoint(parts[2]) and parts[1].isdisjoint(parts[2])
        assert parts[0] | parts[1] | parts[2] == all_ids
    assert len({tuple(s["test"]) for s in splits}) > 1, "repetitions must differ"
    if mode == "kfold":
        tested = [sv for split in splits for sv in split["test"]]
        assert sorted(tested) == sorted(all_ids), "k-fold tests every sub-volume exactly once"


def test_random_split_sizes_follow_fractions():
    items = datalist(subvolumes=30, sizes=(10,))
    split = make_splits(items, 1, seed=2, fractions=(0.6, 0.2, 0.2))[0]
    assert [len(split[p]) for p in ("training", "validation", "test")] == [18, 6, 6]
    no_val = make_splits(items, 1, seed=2, fractions=(0.8, 0.0, 0.2))[0]
    assert no_val["validation"] == [] and len(no_val["test"]) == 6


def test_scenario_parts_follow_the_split_and_are_deterministic():
    items = datalist()
    first = make_scenario(items, acr=4, weak_types=("tags", "boxes", "points"), split_index=2, num_splits=5, seed=7)
    second = make_scenario(items, acr=4, weak_types=("tags", "boxes", "points"), split_index=2, num_splits=5, seed=7)
    assert first.to_dict() == second.to_dict()
    for part in ("training", "validation", "test"):
        ids = {item["subvolume"] for item in getattr(first, part)}
        assert ids == set(first.subvolumes[part])
    assert len(first.training) + len(first.validation) + len(first.test) == len(items)
    assert all("annotation_type" not in item for item in first.validation + first.test)
    assert first.counts()["mask"] == len(first.training) // 4


def test_split_file_round_trip(tmp_path):
    scenario = make_scenario(datalist(), acr=8, weak_types=("boxes",), split_index=1, num_splits=3, seed=0,
                             extra={"datalist": "synthetic.json"})
    path = save_scenario(scenario, tmp_path / "results" / "split1.json")
    loaded = load_scenario(path)
    assert loaded.to_dict() == scenario.to_dict()
    with open(path) as handle:
        content = json.load(handle)
    assert content["format_version"] == 2 and content["class_names"] is None
    assert content["parameters"] == {"acr": 8.0, "weak_types": ["boxes"], "split_index": 1, "num_splits": 3,
                                     "seed": 0, "mode": "random", "fractions": [0.6, 0.2, 0.2]}
    named = dataclasses.replace(scenario, class_names=["background", "cell"], acr=None, mode="sections")
    assert load_scenario(save_scenario(named, tmp_path / "named.json")) == named


def test_older_split_files_are_named_with_what_to_do(tmp_path):
    (tmp_path / "v1.json").write_text(json.dumps({"format_version": 1, "acr": 8, "training": []}))
    with pytest.raises(ValueError, match=r"v1.json' is format version 1, not a split file of format version 2\. "
                                         r"Delete it \(the bundle writes a new one"):
        load_scenario(tmp_path / "v1.json")
    (tmp_path / "bundle.json").write_text(json.dumps({"parameters": {"acr": 8}, "training": [], "class_names": []}))
    with pytest.raises(ValueError, match=r"is an unversioned split file of an earlier bundle, not a split file of "
                                         r"format version 2"):
        load_scenario(tmp_path / "bundle.json")


def test_scenario_errors_are_clear(tmp_path):
    items = datalist()
    with pytest.raises(ValueError, match="acr must be a finite number >= 1"):
        make_scenario(items, acr=0.5, weak_types=("tags",))
    with pytest.raises(TypeError, match="acr must be a number"):
        make_scenario(items, acr="8", weak_types=("tags",))
    with pytest.raises(ValueError, match=r"unknown type\(s\) \['scribbles'\]"):
        make_scenario(items, acr=8, weak_types=("tags", "scribbles"))
    with pytest.raises(ValueError, match="items is empty"):
        make_scenario([], acr=8, weak_types=("tags",))
    with pytest.raises(ValueError, match=r"split_index must be an integer in \[0, 5\)"):
        make_scenario(items, acr=8, weak_types=("tags",), split_index=5, num_splits=5)
    with pytest.raises(KeyError, match="item 1 has no 'subvolume' id"):
        make_splits([{"image": "a", "subvolume": "x"}, {"image": "b"}], 1)
    with pytest.raises(ValueError, match=r"cannot split 2 sub-volume\(s\) into 3 non-empty parts"):
        make_splits(datalist(subvolumes=2), 1)
    with pytest.raises(ValueError, match="mode must be one of"):
        make_splits(items, 1, mode="leave-one-out")
    with pytest.raises(ValueError, match="fractions must be"):
        make_splits(items, 1, fractions=(0.5, 0.5, 0.0))
    array_items = [{**item, "image": object()} for item in items]
    with pytest.raises(TypeError, match=r"training item 0 key 'image' holds a object"):
        save_scenario(make_scenario(array_items, acr=2, weak_types=()), tmp_path / "bad.json")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_scenario(tmp_path / "missing.json")
    (tmp_path / "other.json").write_text(json.dumps({"training": []}))
    with pytest.raises(ValueError, match="format version None, not a split file of format version 2"):
        load_scenario(tmp_path / "other.json")
