"""Collation: the possible-class bit mask against an explicit per-pixel set construction, the positive sets, and
the accepted input forms."""

import importlib.util
import itertools
from pathlib import Path

import numpy as np
import pytest
import torch

from dsp_monai.annotations import POSITIVE_TYPES, AnnotationBatch, collate_annotations, validate_record

_SPEC = importlib.util.spec_from_file_location(
    "dsp_reference_for_annotations", Path(__file__).resolve().parents[1] / "losses" / "dsp_reference.py"
)
reference = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(reference)

CLASSES = 5


def _sets_from_allowed(batch: AnnotationBatch, image: int):
    allowed = batch.allowed[image]
    return {
        pixel: {c for c in range(batch.num_classes) if (int(allowed[pixel]) >> c) & 1}
        for pixel in itertools.product(*[range(size) for size in batch.spatial_shape])
    }


CASES = [pytest.param(seed, (6, 9), reference.KINDS_2D, id=f"2d-seed{seed}") for seed in range(4)] + [
    pytest.param(30 + seed, (3, 5, 4), reference.KINDS_3D, id=f"3d-seed{seed}") for seed in range(2)
]


@pytest.mark.parametrize("seed, spatial, kinds", CASES)
def test_allowed_equals_the_explicit_per_pixel_sets(seed, spatial, kinds):
    records = reference.random_batch(seed, spatial, CLASSES, kinds)
    batch = collate_annotations(records, CLASSES, spatial)
    assert batch.allowed.dtype == torch.int64 and batch.allowed.shape == (len(records), *spatial)
    for image, record in enumerate(records):
        assert _sets_from_allowed(batch, image) == reference.possible_sets(record, CLASSES, spatial), image
    assert torch.equal(batch.possible(), torch.stack([
        torch.stack([(batch.allowed[b] >> c) & 1 == 1 for c in range(CLASSES)]) for b in range(len(records))
    ]))


@pytest.mark.parametrize("seed, spatial, kinds", CASES)
def test_positive_sets_hold_what_the_records_say(seed, spatial, kinds):
    records = reference.random_batch(seed, spatial, CLASSES, kinds)
    batch = collate_annotations(records, CLASSES, spatial)
    pixels = int(np.prod(spatial))

    def decode(index):
        image, rest = divmod(int(index), CLASSES * pixels)
        cls, pixel = divmod(rest, pixels)
        return image, cls, np.unravel_index(pixel, spatial)

    expected_mask = set()
    for image, record in enumerate(records):
        label, valid = record.get("label"), record.get("valid")
        for pixel in itertools.product(*[range(size) for size in spatial]):
            if label is not None and int(label[pixel]) != 255 and (valid is None or bool(valid[pixel])):
                expected_mask.add((image, int(label[pixel]), pixel))
    got_mask = {(i, c, tuple(int(v) for v in p)) for i, c, p in map(decode, batch.mask_index)}
    assert got_mask == expected_mask
    assert sorted(batch.mask_classes.tolist()) == sorted(c for _, c, _ in expected_mask)

    expected_points = sorted(
        (image, int(cls), tuple(point.tolist()))
        for image, record in enumerate(records)
        if record.get("points") is not None
        for point, cls in zip(record["points"], record["point_classes"])
    )
    got_points = sorted((i, c, tuple(int(v) for v in p)) for i, c, p in map(decode, batch.point_index))
    assert got_points == expected_points

    expected_tags = sorted(
        {(image, int(t)) for image, record in enumerate(records) if "tags" in record for t in record["tags"]}
    )
    assert sorted(zip(batch.tag_images.tolist(), batch.tag_classes.tolist())) == expected_tags
    for index, name in enumerate(POSITIVE_TYPES):
        assert batch.counts[index].sum() > 0, name


def test_box_pixels_list_each_box_and_lines_skip_padding():
    valid = torch.ones(5, 6, dtype=torch.bool)
    valid[:, 4:] = False
    records = [
        None,
        {"boxes": torch.tensor([[1, 2, 4, 6], [0, 0, 1, 1]]), "box_classes": torch.tensor([1, 0]), "valid": valid},
    ]
    batch = collate_annotations(records, 2, (5, 6))
    pixels = 30
    first = [(1 * 2 + 1) * pixels + r * 6 + c for r in range(1, 4) for c in range(2, 6)]
    second = [(1 * 2 + 0) * pixels]
    assert batch.box_pixel_index.tolist() == first + second
    assert batch.box_pixel_valid.tolist() == [c < 4 for r in range(1, 4) for c in range(2, 6)] + [True]
    # lines: rows of box 0 (3), rows of box 1 (1), columns of box 0 (4), columns of box 1 (1)
    assert batch.box_line_classes.tolist() == [1, 1, 1, 0, 1, 1, 1, 1, 0]
    assert batch.box_line_valid.tolist() == [True, True, True, True, True, True, False, False, True]
    rows = [r - 1 for r in range(1, 4) for c in range(2, 6)] + [3]
    columns = [4 + c - 2 for r in range(1, 4) for c in range(2, 6)] + [8]
    assert batch.box_pixel_lines.tolist() == [rows, columns]
    assert batch.counts[1].tolist() == [2, 5]


def test_batch_dict_and_list_of_records_collate_identically():
    records = reference.random_batch(9, (6, 9), CLASSES, reference.KINDS_2D)
    keys = ("tags", "boxes", "box_classes", "points", "point_classes", "boxes_exhaustive")
    batch_dict = {key: [record.get(key) for record in records] for key in keys}
    batch_dict["label"] = torch.stack(
        [record.get("label", torch.full((6, 9), 255)).float().unsqueeze(0) for record in records]
    )
    batch_dict["valid"] = torch.stack(
        [record.get("valid", torch.ones(6, 9, dtype=torch.bool)).unsqueeze(0) for record in records]
    )
    batch_dict["image"] = torch.zeros(len(records), 1, 6, 9)
    batch_dict["image_meta_dict"] = {"filename": ["x"] * len(records)}
    a = collate_annotations(records, CLASSES, (6, 9))
    b = collate_annotations(batch_dict, CLASSES, (6, 9))
    for field in AnnotationBatch.__dataclass_fields__:
        left, right = getattr(a, field), getattr(b, field)
        if isinstance(left, torch.Tensor):
            assert torch.equal(left, right), field
        else:
            assert left == right, field


def test_annotated_collate_batches_are_accepted():
    collate = pytest.importorskip("dsp_monai.data.collate")
    label = torch.full((1, 4, 4), 255.0)
    label[0, 0, 0] = 1
    items = [
        {"image": torch.zeros(1, 4, 4), "label": label, "tags": torch.tensor([1, 2])},
        {"image": torch.zeros(1, 4, 4), "label": torch.full((1, 4, 4), 255.0), "points": torch.tensor([[3, 3]]),
         "point_classes": torch.tensor([2])},
    ]
    batch = collate_annotations(collate.annotated_collate(items), 3, (4, 4))
    assert batch.counts.tolist() == [[0, 1, 0], [0, 0, 0], [0, 0, 1], [0, 1, 1]]
    assert int(batch.allowed[0, 0, 0]) == 0b010 and int(batch.allowed[0, 1, 1]) == 0b110
    assert int(batch.allowed[1, 3, 3]) == 0b100 and int(batch.allowed[1, 0, 0]) == 0b111


class _Wrapped(torch.Tensor):
    """Stands in for MONAI's MetaTensor (a torch.Tensor subclass)."""


def test_floats_arrays_lists_and_tensor_subclasses_are_read():
    label = torch.full((1, 4, 5), 255.0).as_subclass(_Wrapped)
    label[0, 1, 1] = 2.0
    record = {
        "label": label,
        "valid": np.ones((4, 5), dtype=np.uint8),
        "tags": [0, 2],
        "boxes": np.array([[0.0, 0.0, 3.0, 3.0]]),
        "box_classes": [2.0],
        "points": [[2, 2]],
        "point_classes": np.array([2]),
        "boxes_exhaustive": np.bool_(False),
    }
    batch = collate_annotations([record], 3, (4, 5))
    assert type(batch.allowed) is torch.Tensor and type(batch.label) is torch.Tensor
    assert batch.counts.tolist() == [[0, 0, 1], [0, 0, 6], [0, 0, 1], [1, 0, 1]]
    assert int(batch.allowed[0, 3, 4]) == 0b001 and int(batch.allowed[0, 0, 0]) == 0b101


def test_duplicates_padding_and_exhaustive_empty_boxes():
    valid = torch.ones(3, 3, dtype=torch.bool)
    valid[2] = False
    label = torch.full((3, 3), 255)
    label[2, 0] = 1  # in padding: ignored
    records = [
        {"tags": torch.tensor([1, 1, 0]), "valid": valid, "label": label},
        {"boxes": torch.zeros(0, 4), "box_classes": torch.zeros(0)},
        {"boxes": torch.zeros(0, 4), "box_classes": torch.zeros(0), "boxes_exhaustive": False},
    ]
    batch = collate_annotations(records, 2, (3, 3))
    assert batch.counts[3].tolist() == [1, 1] and batch.counts[0].tolist() == [0, 0]
    assert batch.allowed[0, 2].tolist() == [0, 0, 0] and batch.label[0, 2, 0] == 255
    assert not batch.all_valid and batch.valid_counts.tolist() == [6, 9, 9]
    assert int(batch.allowed[1].max()) == 0  # exhaustive and no box: nothing is possible
    assert int(batch.allowed[2].min()) == 0b11  # not exhaustive: no constraint


def test_validate_record_names_the_given_index():
    with pytest.raises(ValueError, match=r"^image 7: tags\[0\] = 4 is not a class id"):
        validate_record({"tags": torch.tensor([4])}, 3, (2, 2), index=7)
    validate_record({"tags": torch.tensor([2])}, 3, (2, 2), index=7)


def test_to_moves_every_tensor_and_keeps_the_rest():
    records = reference.random_batch(2, (6, 9), CLASSES, reference.KINDS_2D)
    batch = collate_annotations(records, CLASSES, (6, 9))
    moved = batch.to("meta")
    assert moved.allowed.device.type == "meta" and moved.box_pixel_lines.device.type == "meta"
    assert moved.num_classes == CLASSES and moved.spatial_shape == (6, 9) and moved.all_valid == batch.all_valid
    assert batch.allowed.device.type == "cpu"
