"""annotated_collate: dense arrays stacked, per-image annotations kept as lists, MONAI loaders supported."""

import pytest
import torch
from monai.data import CacheDataset, DataLoader, Dataset, MetaTensor
from monai.transforms import Compose

from dsp_monai.data.collate import annotated_collate
from dsp_monai.data.samplers import StratifiedAnnotationSampler
from dsp_monai.transforms.geometry import AddValidMaskd, AnnotatedRandFlipd, AnnotatedRandSpatialCropd
from dsp_monai.transforms.views import WeakStrongViewsd
from dsp_monai.transforms.weak_labels import DeriveWeakLabelsd


def items(count=6, shape=(20, 24)):
    out = []
    kinds = ["mask", "tags", "boxes", "points", "none"]
    for index in range(count):
        label = torch.zeros(1, *shape, dtype=torch.int64)
        label[0, 2 + index : 8 + index, 3:9] = 1 + index % 2
        out.append({"image": torch.rand(1, *shape), "label": label, "id": f"img{index}",
                    "annotation_type": kinds[index % len(kinds)]})
    return out


def test_stacks_dense_and_lists_annotations():
    derive = DeriveWeakLabelsd("label")
    batch = annotated_collate([AddValidMaskd("image")(derive(item)) for item in items(5)])
    assert batch["image"].shape == (5, 1, 20, 24) and batch["label"].shape == (5, 1, 20, 24)
    assert batch["valid"].shape == (5, 1, 20, 24) and batch["valid"].dtype == torch.bool
    assert batch["annotation_type"] == ["mask", "tags", "boxes", "points", "none"]
    assert batch["id"] == [f"img{i}" for i in range(5)]
    assert batch["tags"][0] is None and batch["tags"][1].tolist() == [0, 2]
    assert batch["boxes"][2].shape == (2, 4) and batch["boxes"][1] is None
    assert batch["boxes_exhaustive"] == [None, None, True, None, None]
    assert batch["points"][3].shape == (2, 2) and batch["point_classes"][3].tolist() == [0, 2]
    assert bool((batch["label"][1:] == 255).all()) and not bool((batch["label"][0] == 255).any())


def test_missing_keys_become_none_in_lists():
    batch = annotated_collate([{"image": torch.zeros(1, 4, 4), "tags": torch.tensor([1])},
                               {"image": torch.zeros(1, 4, 4)}])
    assert batch["tags"][0].tolist() == [1] and batch["tags"][1] is None


def test_nested_lists_are_flattened_and_meta_tensors_kept():
    first = {"image": MetaTensor(torch.zeros(1, 4, 4)), "tags": torch.tensor([0])}
    second = {"image": MetaTensor(torch.ones(1, 4, 4)), "tags": torch.tensor([1])}
    batch = annotated_collate([[first, second], first])
    assert isinstance(batch["image"], MetaTensor) and batch["image"].shape == (3, 1, 4, 4)
    assert len(batch["tags"]) == 3


def test_collate_errors_are_clear():
    with pytest.raises(ValueError, match="empty batch"):
        annotated_collate([])
    shapes = r"\[\(1, 4, 4\), \(1, 5, 4\)\]"
    with pytest.raises(ValueError, match=r"cannot stack 'image': shapes differ across the batch " + shapes):
        annotated_collate([{"image": torch.zeros(1, 4, 4)}, {"image": torch.zeros(1, 5, 4)}])
    with pytest.raises(KeyError, match=r"dense key 'label' is missing or None in batch item\(s\) \[1\]"):
        annotated_collate([{"label": torch.zeros(1, 4, 4)}, {"label": None}])
    with pytest.raises(TypeError, match="expects dict items"):
        annotated_collate([torch.zeros(2)])


@pytest.mark.parametrize("cached", [False, True])
def test_works_with_monai_datasets_and_loader(cached):
    transform = Compose([
        AddValidMaskd("image"),
        AnnotatedRandFlipd(prob=0.5),
        AnnotatedRandSpatialCropd(roi_size=16),
        DeriveWeakLabelsd("label"),
        WeakStrongViewsd("image", cutout_size=4),
    ])
    data = items(10)
    dataset = CacheDataset(data, transform, progress=False) if cached else Dataset(data, transform)
    sampler = StratifiedAnnotationSampler(dataset, num_samples=12, seed=0)
    loader = DataLoader(dataset, batch_size=4, sampler=sampler, collate_fn=annotated_collate, num_workers=0)
    batches = list(loader)
    assert len(batches) == 3
    for batch in batches:
        assert batch["image"].shape == batch["image_strong"].shape == (4, 1, 16, 16)
        assert len(batch["annotation_type"]) == len(batch["boxes"]) == 4
        for kind, boxes in zip(batch["annotation_type"], batch["boxes"]):
            assert (boxes is not None) == (kind == "boxes")
