"""The annotation vocabulary: item keys, annotation types, the ignore value, and the one parsing policy of boxes and
points. Every other package (datalists, scenarios, samplers, collation, transforms, losses) imports these names.

Coordinates are in array order, (row, column) in 2D and (z, y, x) in 3D. A box is ``[start..., end...]`` with
exclusive ends (``[r0, c0, r1, c1]``, ``[z0, y0, x0, z1, y1, x1]``); a point is one pixel ``[r, c]`` /
``[z, y, x]``. Coordinates are whole numbers: integer values of any type, and floating-point values that hold whole
numbers (MONAI's readers and box transforms produce floats). A fractional, infinite or NaN coordinate is an error,
never rounded. The same rule applies wherever boxes and points enter: the datalist, the transforms that move them,
and the per-image record of the loss (docs/method.md §3).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from numbers import Integral, Real
from typing import Any, Optional, Tuple

import numpy as np
import torch

__all__ = [
    "ANNOTATION_TYPE",
    "ANNOTATION_TYPES",
    "ANNOTATION_LIST_KEYS",
    "BOXES",
    "BOXES_EXHAUSTIVE",
    "BOX_CLASSES",
    "AnnotationError",
    "ID",
    "IGNORE_VALUE",
    "IMAGE",
    "ITEM_KEYS",
    "LABEL",
    "METADATA",
    "PATH_KEYS",
    "POINTS",
    "POINT_CLASSES",
    "POSITIVE_TYPES",
    "RECORD_KEYS",
    "SUBVOLUME",
    "TAGS",
    "VALID",
    "WEAK_TYPES",
    "WEAK_TYPE_KEYS",
    "annotation_type_of",
    "box_problem",
    "parse_boxes",
    "parse_points",
    "point_problem",
    "whole_numbers",
]

IGNORE_VALUE = 255
"""The label value of pixels that are not annotated (unknown, never background)."""

IMAGE = "image"
LABEL = "label"
TAGS = "tags"
BOXES = "boxes"
BOX_CLASSES = "box_classes"
BOXES_EXHAUSTIVE = "boxes_exhaustive"
POINTS = "points"
POINT_CLASSES = "point_classes"
VALID = "valid"
ANNOTATION_TYPE = "annotation_type"
SUBVOLUME = "subvolume"
ID = "id"
METADATA = "metadata"

PATH_KEYS = (IMAGE, LABEL)
"""Item keys holding file paths."""

ITEM_KEYS = (
    IMAGE, LABEL, TAGS, BOXES, BOX_CLASSES, BOXES_EXHAUSTIVE, POINTS, POINT_CLASSES, SUBVOLUME, ANNOTATION_TYPE, ID,
    METADATA,
)
"""The keys a datalist item may hold (docs/datalist.md)."""

RECORD_KEYS = (LABEL, TAGS, BOXES, BOX_CLASSES, POINTS, POINT_CLASSES, VALID, BOXES_EXHAUSTIVE)
"""The keys of the per-image annotation record read by the loss; any other key of a record or batch is ignored."""

ANNOTATION_LIST_KEYS = (TAGS, BOXES, BOX_CLASSES, POINTS, POINT_CLASSES, BOXES_EXHAUSTIVE, ANNOTATION_TYPE)
"""Keys whose values differ in length between images: a batch keeps them as per-image lists."""

WEAK_TYPES = ("tags", "boxes", "points")
"""The weak annotation types, in canonical order (each can be derived from a mask)."""

ANNOTATION_TYPES = ("mask",) + WEAK_TYPES + ("none",)
"""Every value an item's ``annotation_type`` may take, in canonical order."""

WEAK_TYPE_KEYS = {"tags": TAGS, "boxes": BOXES, "points": POINTS}
"""The item key holding each weak type's coordinates or classes."""

POSITIVE_TYPES = ("mask", "box", "point", "image")
"""The sources of positives of the DSP loss (docs/method.md §5), in the row order of its counts."""


class AnnotationError(ValueError):
    """A box or point entry that breaks the parsing policy; the message says what arrived and what is expected."""


def annotation_type_of(item: Mapping) -> str:
    """The annotation type an item carries: ``mask`` with a label, else the first of tags, boxes, points it holds,
    else ``none``. An item with several weak types keeps all of them for the loss; the type only steers sampling."""
    if item.get(LABEL) is not None:
        return "mask"
    for kind in WEAK_TYPES:
        if item.get(WEAK_TYPE_KEYS[kind]) is not None:
            return kind
    return "none"


def _check_plain_numbers(value: Any, name: str) -> None:
    """Nested Python sequences must hold only real numbers (bools and strings are not coordinates)."""
    if isinstance(value, (bool, np.bool_)):
        raise AnnotationError(f"{name} must hold numbers; got the bool {value!r}")
    if isinstance(value, (str, bytes)):
        raise AnnotationError(f"{name} must hold numbers; got the string {value!r}")
    if isinstance(value, (list, tuple)):
        for entry in value:
            _check_plain_numbers(entry, name)
    elif not isinstance(value, (Real, np.ndarray, torch.Tensor)) and value is not None:
        raise AnnotationError(f"{name} must hold numbers; got {type(value).__name__} {value!r}")


def whole_numbers(value: Any, name: str) -> torch.Tensor:
    """``value`` as an int64 tensor, under the one coordinate policy.

    Accepted: integer tensors and arrays, floating-point ones holding whole numbers, nested lists of such numbers.
    Tensor subclasses (MONAI's MetaTensor) are read as plain tensors.

    Raises:
        AnnotationError: for bools, strings, ragged or non-numeric nesting, fractional, infinite or NaN values, and
            values beyond int64; the message names ``name`` and the first offending value.
    """
    if isinstance(value, torch.Tensor):
        tensor = value.as_subclass(torch.Tensor) if type(value) is not torch.Tensor else value
    else:
        if isinstance(value, (list, tuple)):
            _check_plain_numbers(value, name)
        try:
            array = np.asarray(value)
        except (TypeError, ValueError, OverflowError) as error:
            raise AnnotationError(f"{name} must be a regular nested list of numbers; got {value!r}") from error
        if array.dtype == object:
            flat = [v for v in array.reshape(-1).tolist()]
            large = next((v for v in flat if isinstance(v, Integral) and not -2**63 <= v < 2**63), None)
            if large is not None:
                raise AnnotationError(f"{name} holds {large}, beyond the 64-bit integer range")
            raise AnnotationError(f"{name} must be a regular nested list of numbers; got {value!r}")
        if array.dtype.kind not in "iufb":
            raise AnnotationError(f"{name} must hold numbers; got dtype {array.dtype}")
        if array.dtype.kind == "u" and array.size and int(array.max()) >= 2**63:
            raise AnnotationError(f"{name} holds {int(array.max())}, beyond the 64-bit integer range")
        if array.dtype.kind in "iu":
            array = array.astype(np.int64)
        tensor = torch.from_numpy(np.ascontiguousarray(array))
    if tensor.dtype == torch.bool or tensor.is_complex():
        raise AnnotationError(f"{name} must hold integers; got dtype {tensor.dtype}")
    if tensor.is_floating_point():
        finite = torch.isfinite(tensor)
        whole = finite & (tensor == torch.round(tensor)) & (tensor.abs() < 2.0**63)
        if not bool(whole.all()):
            position = tuple(int(i) for i in (~whole).nonzero()[0])
            raise AnnotationError(
                f"{name} must hold whole numbers; got {float(tensor[position])} at index {position}"
            )
    return tensor.to(torch.int64)


def _rows(value: Any, name: str, width: Optional[int], widths: Sequence[int]) -> torch.Tensor:
    tensor = whole_numbers(value, name)
    if tensor.numel() == 0:
        return tensor.reshape(0, width if width is not None else widths[0])
    if tensor.dim() != 2 or (width is not None and tensor.shape[1] != width) or tensor.shape[1] not in widths:
        expected = f"(N, {width})" if width is not None else " or ".join(f"(N, {w})" for w in widths)
        raise AnnotationError(f"{name} must have shape {expected}; got shape {list(tensor.shape)}")
    return tensor


def box_problem(boxes: torch.Tensor, spatial_shape: Optional[Sequence[int]] = None) -> Optional[Tuple[int, str]]:
    """The first box (row index, description) that breaks ``0 <= start < end (<= size)`` on some axis, or None.

    ``boxes`` is (N, 2 * ndim) int64; ``spatial_shape`` None skips the upper bound (the image is not known yet).
    """
    ndim = boxes.shape[1] // 2
    start, end = boxes[:, :ndim], boxes[:, ndim:]
    inverted, empty, negative = start > end, start == end, start < 0
    outside = negative.clone()
    if spatial_shape is not None:
        sizes = torch.tensor([int(s) for s in spatial_shape], dtype=torch.int64, device=boxes.device)
        outside |= end > sizes
    bad = inverted | empty | outside
    rows = bad.any(dim=1).nonzero()
    if rows.numel() == 0:
        return None
    row = int(rows[0])
    axis = int(bad[row].to(torch.uint8).argmax())
    first, last = int(start[row, axis]), int(end[row, axis])
    if bool(inverted[row, axis]):
        problem = f"is inverted on axis {axis} (start {first} > end {last})"
    elif bool(empty[row, axis]):
        problem = f"is empty on axis {axis} (start = end = {first})"
    elif spatial_shape is None:
        problem = f"starts at the negative coordinate {first} on axis {axis}"
    else:
        problem = f"lies outside the image of shape {[int(s) for s in spatial_shape]} on axis {axis}"
    return row, problem


def point_problem(points: torch.Tensor, spatial_shape: Optional[Sequence[int]] = None) -> Optional[Tuple[int, str]]:
    """The first point (row index, description) outside ``0 <= coordinate (< size)``, or None."""
    outside = points < 0
    if spatial_shape is not None:
        sizes = torch.tensor([int(s) for s in spatial_shape], dtype=torch.int64, device=points.device)
        outside |= points >= sizes
    rows = outside.any(dim=1).nonzero()
    if rows.numel() == 0:
        return None
    row = int(rows[0])
    if spatial_shape is None:
        return row, "has a negative coordinate"
    return row, f"lies outside the image of shape {[int(s) for s in spatial_shape]}"


_BOX_RULE = "expected [start..., end...] in array order with 0 <= start < end <= size on every axis (end exclusive)"
_POINT_RULE = "expected 0 <= coordinate < size in array order"


def parse_boxes(
    value: Any,
    ndim: Optional[int] = None,
    spatial_shape: Optional[Sequence[int]] = None,
    name: str = BOXES,
) -> torch.Tensor:
    """Boxes under the one policy: (N, 2 * ndim) int64, whole numbers, ``0 <= start < end <= size``.

    Args:
        value: a tensor, an array or a nested list of ``[start..., end...]`` rows (2D or 3D).
        ndim: the spatial dimensionality; None accepts 2D or 3D boxes (all rows alike).
        spatial_shape: the image's spatial shape; None skips the upper bound.
        name: the entry's name in error messages.

    Raises:
        AnnotationError: naming the first offending box and what is expected.
    """
    if spatial_shape is not None:
        ndim = len(spatial_shape)
    boxes = _rows(value, name, None if ndim is None else 2 * ndim, (4, 6))
    found = box_problem(boxes, spatial_shape)
    if found is not None:
        row, problem = found
        raise AnnotationError(f"{name}[{row}] = {boxes[row].tolist()} {problem}; {_BOX_RULE}")
    return boxes


def parse_points(
    value: Any,
    ndim: Optional[int] = None,
    spatial_shape: Optional[Sequence[int]] = None,
    name: str = POINTS,
) -> torch.Tensor:
    """Points under the one policy: (M, ndim) int64, whole numbers, ``0 <= coordinate < size``.

    Args and Raises as :func:`parse_boxes`.
    """
    if spatial_shape is not None:
        ndim = len(spatial_shape)
    points = _rows(value, name, ndim, (2, 3))
    found = point_problem(points, spatial_shape)
    if found is not None:
        row, problem = found
        raise AnnotationError(f"{name}[{row}] = {tuple(points[row].tolist())} {problem}; {_POINT_RULE}")
    return points
