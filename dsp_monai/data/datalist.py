"""The datalist: one JSON file naming the images, their annotations and the class names.

Format (the full description, with examples, is ``docs/datalist.md``)::

    {
      "class_names": ["background", "liver", "tumour"],       # index = class id; 255 is the ignore value
      "training":   [ITEM, ...],                              # any of training / validation / test ...
      "validation": [ITEM, ...],
      "test":       [ITEM, ...],
      "data":       [ITEM, ...],                              # ... or one pool, every item with a "subvolume"
      "description": "...", "metadata": {...}                 # optional, free-form
    }

    ITEM = {
      "image": "images/case1.nii.gz",                         # required; relative to the JSON's folder
      "label": "labels/case1.nii.gz",                         # optional full or partial mask (255 = unknown)
      "tags": [0, 2],                                         # optional image-level classes
      "boxes": [[r0, c0, r1, c1], ...],                       # optional, array order, ends exclusive
      "box_classes": [2, ...],                                # one class per box
      "boxes_exhaustive": true,                               # optional: every object of every class is boxed
      "points": [[r, c], ...],                                # optional, array order
      "point_classes": [1, ...],                              # one class per point
      "subvolume": "patient7",                                # optional (required in "data"): split group
      "annotation_type": "boxes",                             # optional: mask | tags | boxes | points | none
      "id": "case1", "metadata": {...}                        # optional
    }

An image or label path may carry a selector after ``?`` (``cell.zarr?crop=crop3&axis=z&index=12``) that the zarr
reader (:mod:`dsp_monai.data.readers`) parses; relative paths are resolved against the JSON's folder before the
``?``. Loading is strict: :class:`DatalistError` lists every problem, each naming the file, the section, the item
index and the key. This module is the project's one datalist validator: :func:`read_datalist` checks the JSON and,
with ``check_contents``, opens every file once and checks what it holds (shapes, finite intensities, label values,
annotations inside their image and consistent with each other) before any training starts. Keys, annotation types,
the ignore value and the coordinate rules come from :mod:`dsp_monai.annotations.vocabulary`.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dsp_monai.annotations.vocabulary import (
    ANNOTATION_TYPE,
    ANNOTATION_TYPES,
    BOX_CLASSES,
    BOXES,
    BOXES_EXHAUSTIVE,
    ID,
    IGNORE_VALUE,
    IMAGE,
    ITEM_KEYS,
    LABEL,
    METADATA,
    PATH_KEYS,
    POINT_CLASSES,
    POINTS,
    SUBVOLUME,
    TAGS,
    WEAK_TYPE_KEYS,
    AnnotationError,
    parse_boxes,
    parse_points,
)
from dsp_monai.data.files import write_json

__all__ = [
    "DatalistError",
    "DatalistNotFoundError",
    "ImageInfo",
    "MAX_PROBLEMS",
    "SECTIONS",
    "TOP_LEVEL_KEYS",
    "ValidatedDatalist",
    "load_datalist",
    "read_datalist",
    "resolve_path",
    "save_datalist",
    "split_selector",
    "validate_datalist",
]

SECTIONS = ("training", "validation", "test", "data")
"""List-valued top-level keys: the three split sections, or ``data``, one pool to be split by ``subvolume``."""

TOP_LEVEL_KEYS = ("class_names", *SECTIONS, "description", METADATA)

MAX_PROBLEMS = 50
"""Default number of problems one :class:`DatalistError` lists (the count of the others is given)."""

PROGRESS_FROM = 200
"""Content checks of datalists with at least this many files show a progress bar."""

SAMPLE_SIZE = 4096
"""Intensities kept per image for the datalist's intensity statistics (an evenly strided subsample)."""


class DatalistError(ValueError):
    """A datalist whose content does not follow the format, or whose files do not hold what it says.

    The message holds one line per problem, each naming the file, the section, the item and the key; with several
    problems a first line counts them. ``problems`` lists the lines.
    """

    def __init__(self, message: str, problems: Sequence[str] | None = None) -> None:
        super().__init__(message)
        self.problems = list(problems) if problems is not None else [message]


class DatalistNotFoundError(DatalistError, FileNotFoundError):
    """The datalist file itself does not exist."""


def _combined_error(source: str, problems: Sequence[str], max_problems: int) -> DatalistError:
    if len(problems) == 1:
        return DatalistError(problems[0], problems)
    shown = list(problems[:max_problems])
    header = f"{source}: {len(problems)} problems"
    if len(problems) > len(shown):
        header += f" (the first {len(shown)} listed)"
    return DatalistError(header + ":\n" + "\n".join(shown), problems)


def split_selector(path: str) -> tuple[str, str]:
    """Split ``"dir/cell.zarr?crop=crop3&index=2"`` into the file part and the selector (without ``?``).

    Args:
        path: a path, optionally followed by ``?`` and a reader selector.

    Returns:
        ``(file_part, selector)``; ``selector`` is ``""`` when there is none.
    """
    file_part, _, selector = str(path).partition("?")
    return file_part, selector


def resolve_path(path: str, base_dir: str) -> str:
    """Make ``path`` absolute against ``base_dir``, keeping a ``?selector`` suffix untouched.

    Args:
        path: absolute or relative path, optionally with a selector; ``~`` is expanded.
        base_dir: the folder relative paths start from (the datalist's folder).

    Returns:
        The absolute, normalised path with the selector re-attached.
    """
    file_part, selector = split_selector(path)
    file_part = os.path.expanduser(file_part)
    if not os.path.isabs(file_part):
        file_part = os.path.join(base_dir, file_part)
    file_part = os.path.normpath(file_part)
    return f"{file_part}?{selector}" if selector else file_part


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _short(value: Any, limit: int = 80) -> str:
    """``repr(value)``, cut to ``limit`` characters (a nested garbage value must not flood the message)."""
    try:
        text = repr(value)
    except (ValueError, RecursionError):  # integers beyond Python's digit limit, very deep nesting
        text = f"<a {type(value).__name__} too large to print>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


class _Checker:
    """Validates one section's items and collects every problem with its full location."""

    def __init__(self, source: str, section: str, num_classes: int, base_dir: str, check_files: bool):
        self.source = source
        self.section = section
        self.num_classes = num_classes
        self.base_dir = base_dir
        self.check_files = check_files
        self.problems: list[str] = []

    def fail(self, index: int, key: str | None, message: str) -> DatalistError:
        where = f"{self.source}: section '{self.section}', item {index}"
        if key is not None:
            where += f", key '{key}'"
        return DatalistError(f"{where}: {message}")

    @contextlib.contextmanager
    def collect(self):
        """Records a DatalistError raised inside the block and carries on with the next check."""
        try:
            yield
        except DatalistError as error:
            self.problems.extend(error.problems)

    def class_ids(self, index: int, key: str, values: Any) -> None:
        if not isinstance(values, list):
            raise self.fail(index, key, f"expected a list of class ids, got {type(values).__name__} {_short(values)}.")
        for position, value in enumerate(values):
            if not _is_int(value):
                raise self.fail(index, key, f"entry {position} must be an integer class id, got {_short(value)}.")
            if not 0 <= value < self.num_classes:
                raise self.fail(
                    index,
                    key,
                    f"entry {position} is class id {value}, outside [0, {self.num_classes}) "
                    f"({self.num_classes} class_names).",
                )

    def coordinates(self, index: int, key: str, values: Any, boxes: bool) -> tuple[int | None, list]:
        """Checks the structure of a box or point list, then the one coordinate policy
        (:func:`~dsp_monai.annotations.vocabulary.parse_boxes` / ``parse_points``); returns the dimensionality and
        the entries as integers."""
        what = "boxes [start..., end...]" if boxes else "points [row, col(, ...)]"
        if not isinstance(values, list):
            raise self.fail(index, key, f"expected a list of {what}, got {type(values).__name__} {_short(values)}.")
        dims = None
        for position, entry in enumerate(values):
            if not isinstance(entry, list):
                raise self.fail(index, key, f"entry {position} must be a list of numbers, got {_short(entry)}.")
            length = len(entry)
            ndim = length // 2 if boxes else length
            if (boxes and length % 2) or ndim not in (2, 3):
                expected = "4 or 6 numbers (2D or 3D box)" if boxes else "2 or 3 numbers (2D or 3D point)"
                raise self.fail(index, key, f"entry {position} must hold {expected}, got {length}: {_short(entry)}.")
            if dims is not None and ndim != dims:
                raise self.fail(
                    index, key, f"entry {position} is {ndim}D but earlier entries are {dims}D: {_short(entry)}."
                )
            dims = ndim
        parse = parse_boxes if boxes else parse_points
        try:
            parsed = parse(values, ndim=dims, name=key)
        except AnnotationError as error:
            raise self.fail(index, key, f"{error}.") from None
        return dims, parsed.tolist()

    def path(self, index: int, key: str, value: Any) -> str:
        if not isinstance(value, str) or not value:
            raise self.fail(index, key, f"expected a non-empty path string, got {_short(value)}.")
        if "\x00" in value:
            raise self.fail(index, key, f"the path {_short(value)} holds a NUL character.")
        resolved = resolve_path(value, self.base_dir)
        file_part, _ = split_selector(resolved)
        if self.check_files:
            try:
                exists = os.path.exists(file_part)
            except (UnicodeError, ValueError, OSError) as error:
                raise self.fail(index, key, f"the path {_short(value)} cannot be used as a file name ({error}).")
            if not exists:
                raise self.fail(index, key, f"file not found: {file_part} (written as {_short(value)}).")
        return resolved

    def item(self, index: int, item: Any, allowed_keys: Sequence[str]) -> dict | None:
        """The checked item (paths resolved, coordinates as integers), or None when it has problems."""
        if not isinstance(item, dict):
            self.problems.append(
                str(self.fail(index, None, f"expected an object with an 'image' key, got {type(item).__name__}."))
            )
            return None
        before = len(self.problems)
        for key in item:
            if key not in allowed_keys:
                self.problems.append(str(self.fail(index, key, f"unknown key; allowed keys are {list(allowed_keys)}.")))
        if IMAGE not in item:
            self.problems.append(str(self.fail(index, IMAGE, "missing; every item needs an image path.")))
        out = copy.deepcopy(item)
        for key in PATH_KEYS:
            if key in item:
                with self.collect():
                    out[key] = self.path(index, key, item[key])
        if TAGS in item:
            with self.collect():
                self.class_ids(index, TAGS, item[TAGS])
                if len(set(item[TAGS])) != len(item[TAGS]):
                    raise self.fail(index, TAGS, f"class ids repeat: {_short(item[TAGS])}.")
        dims = {}
        for coords, classes, boxes in ((BOXES, BOX_CLASSES, True), (POINTS, POINT_CLASSES, False)):
            if (coords in item) != (classes in item):
                present, absent = (coords, classes) if coords in item else (classes, coords)
                self.problems.append(
                    str(self.fail(index, absent, f"missing; '{present}' needs '{absent}' (one class per entry)."))
                )
                continue
            if coords not in item:
                continue
            with self.collect():
                dims[coords], out[coords] = self.coordinates(index, coords, item[coords], boxes)
            with self.collect():
                self.class_ids(index, classes, item[classes])
                if isinstance(item[coords], list) and len(item[coords]) != len(item[classes]):
                    raise self.fail(
                        index,
                        classes,
                        f"has {len(item[classes])} entries but '{coords}' has {len(item[coords])}; "
                        "give one class per entry.",
                    )
        if dims.get(BOXES) and dims.get(POINTS) and dims[BOXES] != dims[POINTS]:
            self.problems.append(
                str(self.fail(index, POINTS, f"points are {dims[POINTS]}D but boxes are {dims[BOXES]}D."))
            )
        if BOXES_EXHAUSTIVE in item:
            if not isinstance(item[BOXES_EXHAUSTIVE], bool):
                self.problems.append(str(self.fail(
                    index, BOXES_EXHAUSTIVE, f"expected true or false, got {_short(item[BOXES_EXHAUSTIVE])}."
                )))
            elif BOXES not in item:
                self.problems.append(str(self.fail(index, BOXES_EXHAUSTIVE, "given without 'boxes'.")))
        if SUBVOLUME in item and not (
            (isinstance(item[SUBVOLUME], str) and item[SUBVOLUME]) or _is_int(item[SUBVOLUME])
        ):
            self.problems.append(str(self.fail(
                index, SUBVOLUME, f"expected a non-empty string or an integer, got {_short(item[SUBVOLUME])}."
            )))
        if ANNOTATION_TYPE in item and (
            not isinstance(item[ANNOTATION_TYPE], str) or item[ANNOTATION_TYPE] not in ANNOTATION_TYPES
        ):
            self.problems.append(str(self.fail(
                index, ANNOTATION_TYPE,
                f"expected one of {list(ANNOTATION_TYPES)}, got {_short(item[ANNOTATION_TYPE])}.",
            )))
        elif ANNOTATION_TYPE in item and item[ANNOTATION_TYPE] not in ("none", "mask") and LABEL not in item and \
                WEAK_TYPE_KEYS[item[ANNOTATION_TYPE]] not in item:
            self.problems.append(str(self.fail(
                index, ANNOTATION_TYPE, f"{item[ANNOTATION_TYPE]!r}, but the item has neither "
                f"'{WEAK_TYPE_KEYS[item[ANNOTATION_TYPE]]}' nor a 'label' to derive them from.",
            )))
        elif ANNOTATION_TYPE in item and item[ANNOTATION_TYPE] == "mask" and LABEL not in item:
            self.problems.append(str(self.fail(index, ANNOTATION_TYPE, "'mask', but the item has no 'label'.")))
        if ID in item and not (isinstance(item[ID], str) and item[ID]):
            self.problems.append(str(self.fail(index, ID, f"expected a non-empty string, got {_short(item[ID])}.")))
        if METADATA in item and not isinstance(item[METADATA], dict):
            self.problems.append(
                str(self.fail(index, METADATA, f"expected an object, got {type(item[METADATA]).__name__}."))
            )
        return out if len(self.problems) == before else None


def _check_class_names(source: str, class_names: Any) -> list[str]:
    if not isinstance(class_names, list) or not class_names:
        raise DatalistError(f"{source}: 'class_names' must be a non-empty list of strings, got {_short(class_names)}.")
    for index, name in enumerate(class_names):
        if not isinstance(name, str) or not name:
            raise DatalistError(
                f"{source}: 'class_names' entry {index} must be a non-empty string, got {_short(name)}."
            )
    if len(set(class_names)) != len(class_names):
        repeated = sorted({n for n in class_names if class_names.count(n) > 1})
        raise DatalistError(f"{source}: 'class_names' repeats {repeated}.")
    if len(class_names) >= IGNORE_VALUE:
        raise DatalistError(
            f"{source}: {len(class_names)} class_names; at most {IGNORE_VALUE - 1} fit next to the ignore value "
            f"{IGNORE_VALUE}."
        )
    return list(class_names)


def _validate(
    content: Any, base_dir: str, source: str, check_files: bool, extra_keys: Iterable[str]
) -> tuple[dict[str, list[dict | None]], list[str], list[str]]:
    """Structural checks; returns the sections (None for items with problems), the class names and the problems."""
    if not isinstance(content, Mapping):
        raise DatalistError(f"{source}: the top level must be a JSON object, got {type(content).__name__}.")
    problems = [
        f"{source}: unknown top-level key {_short(key)}; allowed keys are {list(TOP_LEVEL_KEYS)}."
        for key in content
        if key not in TOP_LEVEL_KEYS
    ]
    if "class_names" not in content:
        raise DatalistError(f"{source}: missing 'class_names' (a list of names; index = class id).")
    class_names = _check_class_names(source, content["class_names"])
    present = [s for s in SECTIONS if s in content]
    if not present:
        raise DatalistError(f"{source}: no item list; give one of {list(SECTIONS)}.")
    allowed_keys = (*ITEM_KEYS, *extra_keys)
    sections: dict[str, list[dict | None]] = {}
    seen_ids: dict[str, tuple[str, int]] = {}
    for section in present:
        items = content[section]
        if not isinstance(items, list):
            problems.append(f"{source}: section '{section}' must be a list of items, got {type(items).__name__}.")
            continue
        checker = _Checker(source, section, len(class_names), base_dir, check_files)
        checked: list[dict | None] = []
        for index, item in enumerate(items):
            out = checker.item(index, item, allowed_keys)
            if out is not None and section == "data" and SUBVOLUME not in out:
                checker.problems.append(
                    str(checker.fail(index, SUBVOLUME, "missing; items of the 'data' pool need a subvolume id."))
                )
                out = None
            if out is not None and ID in out:
                if out[ID] in seen_ids:
                    first_section, first_index = seen_ids[out[ID]]
                    checker.problems.append(str(checker.fail(
                        index, ID, f"{out[ID]!r} repeats item {first_index} of section '{first_section}'."
                    )))
                    out = None
                else:
                    seen_ids[out[ID]] = (section, index)
            checked.append(out)
        problems.extend(checker.problems)
        sections[section] = checked
    return sections, class_names, problems


def validate_datalist(
    content: Mapping[str, Any],
    base_dir: str,
    source: str = "<datalist>",
    check_files: bool = True,
    extra_keys: Iterable[str] = (),
    max_problems: int = MAX_PROBLEMS,
) -> tuple[dict[str, list[dict]], list[str]]:
    """Validate a parsed datalist's structure and resolve its paths (files are not opened; see
    :func:`read_datalist` for the content checks).

    Args:
        content: the parsed JSON object.
        base_dir: the folder relative paths are resolved against.
        source: the file name used in error messages.
        check_files: whether image and label files must exist.
        extra_keys: further item keys to accept (for tools that add their own fields).
        max_problems: how many problems the error lists at most.

    Returns:
        ``(sections, class_names)``: every present list section, its items validated, deep-copied, with absolute
        paths and integer coordinates, and the class names.

    Raises:
        DatalistError: every problem found, one line each, naming the file, section, item index and key.
    """
    sections, class_names, problems = _validate(content, base_dir, source, check_files, extra_keys)
    if problems:
        raise _combined_error(source, problems, max_problems)
    return {name: list(items) for name, items in sections.items()}, class_names


@dataclass(frozen=True)
class ImageInfo:
    """What reading one image (or label) file taught: its spatial shape and its values.

    Attributes:
        spatial_shape: the array's spatial shape (channel axis removed).
        channels: the number of channels (1 without a channel axis).
        nonfinite: the number of NaN or infinite values.
        low, high: the smallest and largest finite value (NaN when there is none).
        values: the distinct values when there are at most 256 of them and all are whole numbers (labels), else
            None.
        sample: an evenly strided subsample of the finite values (at most :data:`SAMPLE_SIZE`), float32.
        spacing: the voxel size along each spatial axis (the lengths of the affine's columns: NIfTI ``pixdim``,
            OME-NGFF ``scale``), or None when the reader gives no affine.
    """

    spatial_shape: tuple[int, ...]
    channels: int
    nonfinite: int
    low: float
    high: float
    values: tuple[int, ...] | None
    sample: np.ndarray = field(repr=False, compare=False)
    spacing: tuple[float, ...] | None = None


def _spacing_of(meta: Mapping, ndim: int) -> tuple[float, ...] | None:
    """Voxel size per spatial axis from a reader's affine (the norm of each of its first ``ndim`` columns)."""
    affine = meta.get("affine")
    if affine is None:
        return None
    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape != (ndim + 1, ndim + 1):
        return None
    return tuple(round(float(v), 6) for v in np.linalg.norm(affine[:ndim, :ndim], axis=0))


_FILE_CACHE: dict[tuple, ImageInfo] = {}


def _file_key(path: str, class_names: Sequence[str]) -> tuple:
    file_part, _ = split_selector(path)
    stat = os.stat(file_part)
    return path, stat.st_mtime_ns, stat.st_size, tuple(class_names)


def inspect_file(path: str, reader: Any, class_names: Sequence[str]) -> ImageInfo:
    """Reads ``path`` once (later calls with an unchanged file use the cache) and returns its :class:`ImageInfo`."""
    key = _file_key(path, class_names)
    if key in _FILE_CACHE:
        return _FILE_CACHE[key]
    loaded = reader.read(path)  # kept alive while the array is used: some readers return views of its buffer
    array, meta = reader.get_data(loaded)
    array = np.array(array, copy=True)
    del loaded
    shape = tuple(int(s) for s in array.shape)
    channel = meta.get("original_channel_dim", float("nan"))
    channels = 1
    if isinstance(channel, (int, np.integer)) and not isinstance(channel, bool):
        channels = shape[channel]
        shape = shape[:channel] + shape[channel + 1:]
    if array.dtype.kind not in "iufb":
        raise TypeError(f"holds values of dtype {array.dtype}, not numbers")
    flat = array.reshape(-1)
    finite = np.isfinite(flat) if flat.dtype.kind == "f" else np.ones(flat.shape, dtype=bool)
    nonfinite = int(flat.size - np.count_nonzero(finite))
    kept = flat[finite] if nonfinite else flat
    low = float(kept.min()) if kept.size else math.nan
    high = float(kept.max()) if kept.size else math.nan
    values = None
    if kept.size and (flat.dtype.kind in "iub" or bool(np.all(kept == np.round(kept)))) and high - low < 2**20:
        distinct = np.unique(kept)
        if distinct.size <= 256:
            values = tuple(int(v) for v in distinct)
    step = max(1, kept.size // SAMPLE_SIZE)
    info = ImageInfo(shape, channels, nonfinite, low, high, values,
                     np.asarray(kept[::step][:SAMPLE_SIZE], dtype=np.float32), _spacing_of(meta, len(shape)))
    _FILE_CACHE[key] = info
    return info


_RECORD_KEY = re.compile(r"^image \d+: (\w+)")


class _ContentChecker:
    """Opens every file of the structurally valid items once and checks what the datalist says about them."""

    def __init__(self, source: str, class_names: Sequence[str], progress: bool | None):
        from dsp_monai.data.readers import MultiFormatReader

        self.source = source
        self.class_names = list(class_names)
        self.reader = MultiFormatReader(class_names=self.class_names)
        self.progress = progress
        self.images: dict[str, ImageInfo] = {}
        self.problems: list[str] = []

    def read(self, checker: _Checker, index: int, key: str, path: str) -> ImageInfo | None:
        try:
            info = inspect_file(path, self.reader, self.class_names)
        except Exception as error:  # any reader failure is the file's problem, reported with the others
            self.problems.append(str(checker.fail(
                index, key, f"cannot read {path}: {type(error).__name__}: {_short(str(error), 200)}."
            )))
            return None
        if info.nonfinite:
            what = "intensities" if key == IMAGE else "values"
            self.problems.append(str(checker.fail(
                index, key, f"{path} holds {info.nonfinite} NaN or infinite {what}; replace them (or mask the "
                "region with the ignore value in the label) before training."
            )))
            return None
        self.images[path] = info
        return info

    def item(self, checker: _Checker, index: int, item: dict) -> None:
        image = self.read(checker, index, IMAGE, item[IMAGE])
        label = self.read(checker, index, LABEL, item[LABEL]) if LABEL in item else None
        if image is None:
            return
        shape, ndim = image.spatial_shape, len(image.spatial_shape)
        fail = checker.fail
        if label is not None:
            if label.spatial_shape != shape:
                self.problems.append(str(fail(
                    index, LABEL, f"{item[LABEL]} has spatial shape {list(label.spatial_shape)} but the image "
                    f"{item[IMAGE]} has {list(shape)}; they must match."
                )))
                label = None
            elif label.channels != 1:
                self.problems.append(str(fail(
                    index, LABEL, f"{item[LABEL]} has {label.channels} channels; a label is one channel of class ids."
                )))
                label = None
            elif label.values is None:
                self.problems.append(str(fail(
                    index, LABEL, f"{item[LABEL]} holds values that are not class ids (non-whole numbers or more "
                    f"than 256 distinct values, in [{label.low:g}, {label.high:g}]); a label holds class ids in "
                    f"[0, {len(self.class_names)}) and the ignore value {IGNORE_VALUE}."
                )))
                label = None
            else:
                bad = [v for v in label.values if not (0 <= v < len(self.class_names) or v == IGNORE_VALUE)]
                if bad:
                    self.problems.append(str(fail(
                        index, LABEL, f"{item[LABEL]} holds the value(s) {bad[:10]} outside the class ids "
                        f"[0, {len(self.class_names)}) and the ignore value {IGNORE_VALUE}."
                    )))
                    label = None
        coordinates_ok = True
        for key, parse in ((BOXES, parse_boxes), (POINTS, parse_points)):
            if key not in item:
                continue
            entries = item[key]
            width = len(entries[0]) if entries else None
            if width is not None and width != (2 * ndim if key == BOXES else ndim):
                self.problems.append(str(fail(
                    index, key, f"the {key} are {width // 2 if key == BOXES else width}D but the image "
                    f"{item[IMAGE]} is {ndim}D with spatial shape {list(shape)}."
                )))
                coordinates_ok = False
                continue
            try:
                parse(entries, spatial_shape=shape, name=key)
            except AnnotationError as error:
                self.problems.append(str(fail(index, key, f"{error} (the image {item[IMAGE]})." )))
                coordinates_ok = False
        if coordinates_ok and (label is not None or LABEL not in item):
            self.contradictions(checker, index, item, shape, label is not None)

    def contradictions(self, checker: _Checker, index: int, item: dict, shape: tuple, has_label: bool) -> None:
        """Weak annotations that exclude each other (or the mask): the checks of the loss's own record."""
        import torch

        from dsp_monai.annotations import validate_record
        from dsp_monai.ops import MAX_CLASSES

        weak = [k for k in (TAGS, BOXES, POINTS) if k in item]
        if not weak or len(self.class_names) > MAX_CLASSES:
            return
        record = {k: torch.as_tensor(item[k], dtype=torch.int64) for k in (TAGS, BOXES, BOX_CLASSES, POINTS,
                                                                            POINT_CLASSES) if k in item}
        if BOXES_EXHAUSTIVE in item:
            record[BOXES_EXHAUSTIVE] = item[BOXES_EXHAUSTIVE]
        if has_label:
            loaded = self.reader.read(item[LABEL])
            array, _ = self.reader.get_data(loaded)
            record[LABEL] = torch.as_tensor(np.asarray(array).reshape(shape).astype(np.int64))
            del loaded
        try:
            validate_record(record, len(self.class_names), shape, IGNORE_VALUE, index)
        except (TypeError, ValueError) as error:
            text = str(error)
            match = _RECORD_KEY.match(text)
            key = match.group(1) if match and match.group(1) in (TAGS, BOXES, POINTS, LABEL) else weak[0]
            self.problems.append(str(checker.fail(index, key, text.split(": ", 1)[-1] + ".")))

    def run(self, sections: Mapping[str, list[dict | None]]) -> None:
        work = [(section, index, item) for section, items in sections.items() for index, item in enumerate(items)
                if item is not None]
        show = self.progress if self.progress is not None else len(work) >= PROGRESS_FROM
        if show:
            from tqdm.auto import tqdm

            work = tqdm(work, desc=f"checking {os.path.basename(self.source)}", unit="item")
        checkers = {}
        for section, index, item in work:
            checker = checkers.setdefault(
                section, _Checker(self.source, section, len(self.class_names), "", check_files=False)
            )
            self.item(checker, index, item)


@dataclass
class ValidatedDatalist:
    """A datalist read and validated once.

    Attributes:
        path: the JSON file.
        class_names: index = class id.
        sections: every present section's items (absolute paths, integer coordinates).
        images: with content checks, what each image and label file holds (path -> :class:`ImageInfo`).
        description, metadata: the optional top-level entries.
    """

    path: str
    class_names: list[str]
    sections: dict[str, list[dict]]
    images: dict[str, ImageInfo]
    description: str | None = None
    metadata: dict | None = None

    def items(self, section: str | None = None) -> list[dict]:
        """Deep copies of one section's items, or of every section's in :data:`SECTIONS` order."""
        if section is None:
            return [copy.deepcopy(item) for name in SECTIONS for item in self.sections.get(name, [])]
        if section not in SECTIONS:
            raise DatalistError(f"{self.path}: unknown section {section!r}; sections are {list(SECTIONS)}.")
        if section not in self.sections:
            raise DatalistError(f"{self.path}: no section {section!r}; the file has {list(self.sections)}.")
        return copy.deepcopy(self.sections[section])


_DATALIST_CACHE: dict[tuple, ValidatedDatalist] = {}


def read_datalist(
    path: str | os.PathLike,
    check_files: bool = True,
    check_contents: bool = False,
    extra_keys: Iterable[str] = (),
    max_problems: int = MAX_PROBLEMS,
    progress: bool | None = None,
) -> ValidatedDatalist:
    """Read a datalist JSON file and validate it once; every problem is reported together.

    Structure (always): keys, types, class ids in range, boxes and points under the one coordinate policy
    (:mod:`dsp_monai.annotations.vocabulary`), paths resolved (and present, with ``check_files``).
    Contents (``check_contents``): every image and label file opens; intensities are finite; the label has the
    image's spatial shape and holds class ids or the ignore value; boxes and points lie inside their image as
    written; weak annotations and the mask do not contradict each other (the loss's own checks,
    :func:`dsp_monai.annotations.validate_record`). Each file is read once per process (cached by path, size and
    modification time); a progress bar shows on datalists of :data:`PROGRESS_FROM` items or more.

    Args:
        path: the JSON file.
        check_files: whether image and label files must exist.
        check_contents: whether to open every file and check what it holds (implies ``check_files``).
        extra_keys: further item keys to accept.
        max_problems: how many problems the error lists at most.
        progress: show a progress bar (None: on large datalists).

    Returns:
        The :class:`ValidatedDatalist`; with ``check_contents``, the same object for an unchanged file, so a
        process reads and checks a datalist once however many parts of a configuration ask for it.

    Raises:
        DatalistNotFoundError: the file does not exist (a FileNotFoundError and a DatalistError).
        DatalistError: invalid JSON, or every problem found (one line each, naming the file, section, item and
            key).
    """
    path = os.path.abspath(os.fspath(path))
    if not os.path.isfile(path):
        raise DatalistNotFoundError(
            f"datalist not found: {path} (set the configuration's datalist to your JSON file, e.g. --datalist PATH)"
        )
    check_files = check_files or check_contents
    stat = os.stat(path)
    key = (path, stat.st_mtime_ns, stat.st_size, tuple(extra_keys))
    if check_contents and key in _DATALIST_CACHE:
        return _DATALIST_CACHE[key]
    with open(path, "rb") as handle:
        raw = handle.read()
    try:
        content = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as error:  # ValueError: JSONDecodeError, huge ints
        raise DatalistError(f"{path}: not valid JSON ({_short(str(error), 200)}).") from None
    sections, class_names, problems = _validate(content, os.path.dirname(path), path, check_files, extra_keys)
    images: dict[str, ImageInfo] = {}
    if check_contents:
        contents = _ContentChecker(path, class_names, progress)
        contents.run(sections)
        problems += contents.problems
        images = contents.images
    if problems:
        raise _combined_error(path, problems, max_problems)
    result = ValidatedDatalist(
        path=path,
        class_names=class_names,
        sections={name: list(items) for name, items in sections.items()},
        images=images,
        description=content.get("description") if isinstance(content.get("description"), str) else None,
        metadata=content.get(METADATA) if isinstance(content.get(METADATA), dict) else None,
    )
    if check_contents:
        _DATALIST_CACHE[key] = result
    return result


def load_datalist(
    path: str | os.PathLike,
    section: str | None = None,
    check_files: bool = True,
    extra_keys: Iterable[str] = (),
    check_contents: bool = False,
) -> tuple[list[dict], list[str]]:
    """Read and validate a datalist JSON file (see :func:`read_datalist` for what is checked).

    Args:
        path: the JSON file.
        section: ``"training"``, ``"validation"``, ``"test"`` or ``"data"``; ``None`` returns the items of every
            present section, in that order.
        check_files: whether image and label files must exist (the part of the path before any ``?``).
        extra_keys: further item keys to accept.
        check_contents: whether to open every file and check what it holds.

    Returns:
        ``(items, class_names)``. Items are new dicts with absolute ``image`` / ``label`` paths; the file is the
        only source of truth, nothing is added.

    Raises:
        FileNotFoundError: the file does not exist.
        DatalistError: invalid JSON, an unknown or absent section, or any malformed entry; the message names the
            file, the section, the item index and the key.

    Example:
        >>> items, class_names = load_datalist("data/datalist.json", "training")  # doctest: +SKIP
    """
    if section is not None and section not in SECTIONS:
        raise DatalistError(
            f"{os.path.abspath(os.fspath(path))}: unknown section {section!r}; sections are {list(SECTIONS)}."
        )
    datalist = read_datalist(path, check_files=check_files, check_contents=check_contents, extra_keys=extra_keys)
    return datalist.items(section), list(datalist.class_names)


def save_datalist(
    path: str | os.PathLike,
    class_names: Sequence[str],
    sections: Mapping[str, Sequence[Mapping[str, Any]]],
    description: str | None = None,
    metadata: Mapping[str, Any] | None = None,
    check_files: bool = True,
    extra_keys: Iterable[str] = (),
) -> str:
    """Validate and write a datalist; paths inside the JSON's folder are written relative to it.

    Args:
        path: the JSON file to write (its folder is created).
        class_names: index = class id.
        sections: section name (see :data:`SECTIONS`) -> items.
        description: optional free text.
        metadata: optional free-form object (e.g. the scenario that produced a split file).
        check_files: whether image and label files must exist.
        extra_keys: further item keys to accept.

    Returns:
        The absolute path written.

    Raises:
        DatalistError: the content is not a valid datalist (nothing is written then).
    """
    path = os.path.abspath(os.fspath(path))
    base_dir = os.path.dirname(path)
    content: dict[str, Any] = {"class_names": list(class_names)}
    if description is not None:
        content["description"] = description
    if metadata is not None:
        content["metadata"] = dict(metadata)
    for name, items in sections.items():
        written = []
        for item in items:
            item = dict(item)
            for key in PATH_KEYS:
                if key in item and isinstance(item[key], str):
                    file_part, selector = split_selector(resolve_path(item[key], base_dir))
                    relative = os.path.relpath(file_part, base_dir)
                    if not relative.startswith(os.pardir):
                        file_part = relative
                    item[key] = f"{file_part}?{selector}" if selector else file_part
            written.append(item)
        content[name] = written
    validate_datalist(content, base_dir, source=path, check_files=check_files, extra_keys=extra_keys)
    return write_json(path, content)
