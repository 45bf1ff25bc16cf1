"""Weak annotations kept in a MONAI Label datastore, and the clicks of client requests.

An image's tags, boxes and points live in its datastore info under one key, :data:`INFO_KEY`::

    PUT /datastore/image/info?image=cells_01   form field info = {"dsp_annotations": {
        "tags": [0, 2],
        "boxes": [[10, 20, 40, 60]], "box_classes": [2], "boxes_exhaustive": false,
        "points": [[12, 30]], "point_classes": [1]}}

The object holds the weak keys of a datalist item (docs/datalist.md) and is checked with the datalist's own rules
(:func:`dsp_monai.data.datalist.validate_datalist`) and, since the image is known here, against its size with the
annotation record's rules (:func:`dsp_monai.annotations.validate_record`). Coordinates are in array order (row,
column); clients' clicks come as ``[x, y]`` and are converted by :func:`clicks_to_points`.

This module does not import MONAI Label.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from typing import Any

from dsp_monai.annotations import validate_record
from dsp_monai.data.datalist import DatalistError, validate_datalist

__all__ = [
    "INFO_KEY",
    "WEAK_KEYS",
    "AnnotationInfoError",
    "add_points",
    "class_index",
    "clicks_to_points",
    "validate_weak_annotations",
]

INFO_KEY = "dsp_annotations"
"""The key of an image's datastore info under which its weak annotations are stored."""

WEAK_KEYS = ("tags", "boxes", "box_classes", "boxes_exhaustive", "points", "point_classes")
"""The datalist item keys that may be stored under :data:`INFO_KEY` (masks are saved as labels instead)."""


class AnnotationInfoError(ValueError):
    """Weak annotations or clicks that do not follow the format; the message names the image and the field."""


def validate_weak_annotations(
    annotations: Any,
    class_names: Sequence[str],
    spatial_shape: Sequence[int],
    image_path: str,
    source: str,
) -> dict:
    """Checks the weak annotations of one image as a datalist item, and against the image's size.

    Args:
        annotations: the object stored under :data:`INFO_KEY`.
        class_names: the app's classes (index = class id).
        spatial_shape: the image's (rows, columns).
        image_path: the image file (named in the item that is validated).
        source: where the annotations come from, for the messages (e.g. ``"image 'cells_01', info key
            'dsp_annotations'"``).

    Returns:
        A deep copy of ``annotations``.

    Raises:
        AnnotationInfoError: not an object, an unknown key, or any datalist or record rule broken; the message
            names ``source`` and the field.
    """
    if not isinstance(annotations, Mapping):
        raise AnnotationInfoError(
            f"{source}: expected an object with keys among {list(WEAK_KEYS)}, got {type(annotations).__name__} "
            f"{annotations!r}."
        )
    unknown = [key for key in annotations if key not in WEAK_KEYS]
    if unknown:
        raise AnnotationInfoError(
            f"{source}, key '{unknown[0]}': unknown key; allowed keys are {list(WEAK_KEYS)} (masks are saved with "
            "PUT /datastore/label)."
        )
    item = {"image": image_path, **copy.deepcopy(dict(annotations))}
    try:
        validate_datalist({"class_names": list(class_names), "training": [item]}, "/", source=source,
                          check_files=False)
    except DatalistError as error:
        raise AnnotationInfoError(str(error)) from error
    try:
        validate_record({k: v for k, v in item.items() if k != "image"}, len(class_names), tuple(spatial_shape))
    except (TypeError, ValueError) as error:
        raise AnnotationInfoError(f"{source}: {error}") from error
    return copy.deepcopy(dict(annotations))


def class_index(label: Any, class_names: Sequence[str], field: str) -> int:
    """A class given by name or index, as its index.

    Raises:
        AnnotationInfoError: an unknown name or an index outside ``[0, len(class_names))``.
    """
    if isinstance(label, str) and label in class_names:
        return list(class_names).index(label)
    if isinstance(label, str) and label.isdigit():
        label = int(label)
    if isinstance(label, int) and not isinstance(label, bool) and 0 <= label < len(class_names):
        return label
    raise AnnotationInfoError(
        f"request field '{field}': {label!r} is not one of the class names {list(class_names)} nor an index in "
        f"[0, {len(class_names)})."
    )


def _whole(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value) and value == round(value):
        return int(value)
    return None


def clicks_to_points(clicks: Any, field: str, spatial_shape: Sequence[int]) -> list[list[int]]:
    """Clients' clicks ``[[x, y], ...]`` (or ``[[x, y, z], ...]`` with ``z == 0`` on a 2D image) as our
    ``[[row, col], ...]``.

    Args:
        clicks: the request field (``foreground`` or ``background``); None or ``[]`` for none.
        field: the field's name, for the messages.
        spatial_shape: the image's (rows, columns); clicks must lie inside it.

    Raises:
        AnnotationInfoError: not a list of 2 or 3 whole numbers, a 3rd coordinate other than 0, or outside the
            image.
    """
    if clicks is None:
        return []
    if not isinstance(clicks, list):
        raise AnnotationInfoError(f"request field '{field}': expected a list of [x, y] clicks, got {clicks!r}.")
    rows, cols = (int(s) for s in spatial_shape)
    points = []
    for position, click in enumerate(clicks):
        coords = [_whole(v) for v in click] if isinstance(click, list) else None
        if coords is None or len(coords) not in (2, 3) or any(v is None for v in coords):
            raise AnnotationInfoError(
                f"request field '{field}': entry {position} must be [x, y] (or [x, y, 0]) in whole pixels, got "
                f"{click!r}."
            )
        if len(coords) == 3 and coords[2] != 0:
            raise AnnotationInfoError(
                f"request field '{field}': entry {position} {click!r} has slice {coords[2]}, but the image is 2D "
                "(slice 0 only)."
            )
        x, y = coords[0], coords[1]
        if not (0 <= x < cols and 0 <= y < rows):
            raise AnnotationInfoError(
                f"request field '{field}': entry {position} [x={x}, y={y}] lies outside the image of {cols} columns "
                f"x {rows} rows."
            )
        points.append([y, x])
    return points


def add_points(annotations: Mapping | None, points: Sequence[Sequence[int]], classes: Sequence[int]) -> dict:
    """``annotations`` (a stored object, or None) with ``points`` of ``classes`` appended (already present
    (point, class) pairs are not repeated)."""
    out = copy.deepcopy(dict(annotations or {}))
    stored = list(zip(out.get("points", []), out.get("point_classes", [])))
    for point, cls in zip(points, classes):
        pair = (list(point), int(cls))
        if pair not in stored:
            stored.append(pair)
    if stored:
        out["points"] = [list(p) for p, _ in stored]
        out["point_classes"] = [c for _, c in stored]
    return out
