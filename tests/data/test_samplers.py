"""Stratified sampling: every annotation type equally frequent per batch, deterministic, replica-disjoint."""

from collections import Counter

import numpy as np
import pytest

from dsp_monai.data.samplers import StratifiedAnnotationSampler


def acr64_types(count=640):
    """ACR 64 with three weak types: 10 masks among 640 items."""
    types = ["mask"] * (count // 64)
    weak = ("tags", "boxes", "points")
    types += [weak[i % 3] for i in range(count - len(types))]
    return types


def test_types_are_equally_frequent_per_batch():
    types = acr64_types()
    sampler = StratifiedAnnotationSampler(types, num_samples=8000, seed=0)
    draws = list(sampler)
    assert len(draws) == len(sampler) == 8000
    per_type = Counter(types[i] for i in draws)
    assert set(per_type) == {"mask", "tags", "boxes", "points"}
    assert all(count == 2000 for count in per_type.values()), per_type  # blocks of 4: exact over 8000 draws
    batches = np.array([[types[i] == "mask" for i in draws[b : b + 8]] for b in range(0, 8000, 8)])
    assert abs(batches.sum(1).mean() - 2.0) < 1e-9  # 8 / 4 types, in expectation and here exactly on average
    assert batches.sum(1).min() >= 1, "blocks of one draw per type put a mask in every aligned batch of 8"


def test_rare_items_are_cycled_evenly():
    types = acr64_types()
    draws = list(StratifiedAnnotationSampler(types, num_samples=8000, seed=1))
    masks = Counter(i for i in draws if types[i] == "mask")
    assert len(masks) == 10 and set(masks.values()) == {200}


def test_type_weights_draw_independently():
    types = ["mask"] * 10 + ["none"] * 90
    sampler = StratifiedAnnotationSampler(types, num_samples=20000, seed=2, type_weights={"mask": 1, "none": 3})
    share = np.mean([types[i] == "mask" for i in sampler])
    assert abs(share - 0.25) < 0.015
    only_masks = StratifiedAnnotationSampler(types, num_samples=50, seed=2, type_weights={"mask": 1})
    assert all(types[i] == "mask" for i in only_masks)


def test_deterministic_per_seed_and_epoch():
    types = acr64_types(128)
    a = StratifiedAnnotationSampler(types, seed=5)
    b = StratifiedAnnotationSampler(types, seed=5)
    assert list(a) == list(b)
    first = list(a)
    a.set_epoch(1)
    assert list(a) != first
    b.set_epoch(1)
    assert list(a) == list(b)
    assert list(StratifiedAnnotationSampler(types, seed=6)) != first


def test_replicas_are_each_balanced_and_see_different_items():
    types = ["mask"] * 8 + ["tags"] * 300 + ["boxes"] * 300 + ["points"] * 300
    parts = [list(StratifiedAnnotationSampler(types, num_samples=101, seed=3, num_replicas=3, rank=r))
             for r in range(3)]
    assert [len(p) for p in parts] == [34, 34, 34]
    for part in parts:
        counts = Counter(types[i] for i in part)
        assert sorted(counts.values()) == [8, 8, 9, 9], counts  # blocks of one draw per type, per replica
    weak = [i for part in parts for i in part if types[i] != "mask"]
    assert len(weak) == len(set(weak)), "replicas must not repeat an item of a type before it is used up"
    masks = Counter(i for part in parts for i in part if types[i] == "mask")
    assert max(masks.values()) - min(masks.values()) <= 1, "rare items are cycled evenly across replicas"


def test_accepts_item_dicts_and_datasets():
    items = [{"image": str(i), "annotation_type": t} for i, t in enumerate(acr64_types(64))]

    class Data:
        data = items

    assert list(StratifiedAnnotationSampler(items, seed=0)) == list(StratifiedAnnotationSampler(Data(), seed=0))


def test_sampler_errors_are_clear():
    with pytest.raises(ValueError, match="the dataset is empty"):
        StratifiedAnnotationSampler([])
    with pytest.raises(KeyError, match="item 0 has no 'annotation_type'"):
        StratifiedAnnotationSampler([{"image": "a"}])
    with pytest.raises(ValueError, match="0 <= rank < num_replicas"):
        StratifiedAnnotationSampler(["mask"], num_replicas=2, rank=2)
    with pytest.raises(ValueError, match=r"names type\(s\) \['boxes'\] absent"):
        StratifiedAnnotationSampler(["mask", "tags"], type_weights={"boxes": 1.0})
    with pytest.raises(ValueError, match="not all zero"):
        StratifiedAnnotationSampler(["mask", "tags"], type_weights={"mask": 0.0})
    with pytest.raises(TypeError, match="annotation type must be a string"):
        StratifiedAnnotationSampler([3])
