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
``?``. Loading is strict: any problem raises :class:`DatalistError` naming the file, the section, the item index
and the key.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

IGNORE_VALUE = 255
SECTIONS = ("training", "validation", "test", "data")
"""List-valued top-level keys: the three split sections, or ``data``, one pool to be split by ``subvolume``."""

TOP_LEVEL_KEYS = ("class_names", *SECTIONS, "description", "metadata")
ITEM_KEYS = (
    "image",
    "label",
    "tags",
    "boxes",
    "box_classes",
    "boxes_exhaustive",
    "points",
    "point_classes",
    "subvolume",
    "annotation_type",
    "id",
    "metadata",
)
ANNOTATION_TYPES = ("mask", "tags", "boxes", "points", "none")
"""Values of the optional ``annotation_type`` key (written by :mod:`dsp_monai.data.scenarios`)."""
PATH_KEYS = ("image", "label")


class DatalistError(ValueError):
    """A datalist file that does not follow the format; the message names the file, item and key."""


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


class _Checker:
    """Validates one item and formats errors with their full location."""

    def __init__(self, source: str, section: str, num_classes: int, base_dir: str, check_files: bool):
        self.source = source
        self.section = section
        self.num_classes = num_classes
        self.base_dir = base_dir
        self.check_files = check_files

    def fail(self, index: int, key: str | None, message: str) -> DatalistError:
        where = f"{self.source}: section '{self.section}', item {index}"
        if key is not None:
            where += f", key '{key}'"
        return DatalistError(f"{where}: {message}")

    def class_ids(self, index: int, key: str, values: Any) -> None:
        if not isinstance(values, list):
            raise self.fail(index, key, f"expected a list of class ids, got {type(values).__name__} {values!r}.")
        for position, value in enumerate(values):
            if not _is_int(value):
                raise self.fail(index, key, f"entry {position} must be an integer class id, got {value!r}.")
            if not 0 <= value < self.num_classes:
                raise self.fail(
                    index,
                    key,
                    f"entry {position} is class id {value}, outside [0, {self.num_classes}) "
                    f"({self.num_classes} class_names).",
                )

    def coordinates(self, index: int, key: str, values: Any, boxes: bool) -> int | None:
        what = "boxes [start..., end...]" if boxes else "points [row, col(, ...)]"
        if not isinstance(values, list):
            raise self.fail(index, key, f"expected a list of {what}, got {type(values).__name__} {values!r}.")
        dims = None
        for position, entry in enumerate(values):
            if not isinstance(entry, list) or not all(_is_int(v) for v in entry):
                raise self.fail(index, key, f"entry {position} must be a list of integers, got {entry!r}.")
            length = len(entry)
            ndim = length // 2 if boxes else length
            if (boxes and length % 2) or ndim not in (2, 3):
                expected = "4 or 6 integers (2D or 3D box)" if boxes else "2 or 3 integers (2D or 3D point)"
                raise self.fail(index, key, f"entry {position} must hold {expected}, got {length}: {entry!r}.")
            if dims is not None and ndim != dims:
                raise self.fail(
                    index, key, f"entry {position} is {ndim}D but earlier entries are {dims}D: {entry!r}."
                )
            dims = ndim
            if any(v < 0 for v in entry):
                raise self.fail(index, key, f"entry {position} has a negative coordinate: {entry!r}.")
            if boxes and any(entry[d] >= entry[d + ndim] for d in range(ndim)):
                raise self.fail(
                    index,
                    key,
                    f"entry {position} {entry!r} is empty: every start must be smaller than its end "
                    "(ends are exclusive).",
                )
        return dims

    def path(self, index: int, key: str, value: Any) -> str:
        if not isinstance(value, str) or not value:
            raise self.fail(index, key, f"expected a non-empty path string, got {value!r}.")
        resolved = resolve_path(value, self.base_dir)
        file_part, _ = split_selector(resolved)
        if self.check_files and not os.path.exists(file_part):
            raise self.fail(index, key, f"file not found: {file_part} (written as {value!r}).")
        return resolved

    def item(self, index: int, item: Any, allowed_keys: Sequence[str]) -> dict:
        if not isinstance(item, dict):
            raise self.fail(index, None, f"expected an object with an 'image' key, got {type(item).__name__}.")
        unknown = [k for k in item if k not in allowed_keys]
        if unknown:
            raise self.fail(index, unknown[0], f"unknown key; allowed keys are {list(allowed_keys)}.")
        if "image" not in item:
            raise self.fail(index, "image", "missing; every item needs an image path.")
        out = copy.deepcopy(item)
        for key in PATH_KEYS:
            if key in item:
                out[key] = self.path(index, key, item[key])
        if "tags" in item:
            self.class_ids(index, "tags", item["tags"])
            if len(set(item["tags"])) != len(item["tags"]):
                raise self.fail(index, "tags", f"class ids repeat: {item['tags']!r}.")
        dims = {}
        for coords, classes, boxes in (("boxes", "box_classes", True), ("points", "point_classes", False)):
            if (coords in item) != (classes in item):
                present, absent = (coords, classes) if coords in item else (classes, coords)
                raise self.fail(index, absent, f"missing; '{present}' needs '{absent}' (one class per entry).")
            if coords not in item:
                continue
            dims[coords] = self.coordinates(index, coords, item[coords], boxes)
            self.class_ids(index, classes, item[classes])
            if len(item[coords]) != len(item[classes]):
                raise self.fail(
                    index,
                    classes,
                    f"has {len(item[classes])} entries but '{coords}' has {len(item[coords])}; "
                    "give one class per entry.",
                )
        if dims.get("boxes") and dims.get("points") and dims["boxes"] != dims["points"]:
            raise self.fail(index, "points", f"points are {dims['points']}D but boxes are {dims['boxes']}D.")
        if "boxes_exhaustive" in item:
            if not isinstance(item["boxes_exhaustive"], bool):
                raise self.fail(index, "boxes_exhaustive", f"expected true or false, got {item['boxes_exhaustive']!r}.")
            if "boxes" not in item:
                raise self.fail(index, "boxes_exhaustive", "given without 'boxes'.")
        if "subvolume" in item and not (
            (isinstance(item["subvolume"], str) and item["subvolume"]) or _is_int(item["subvolume"])
        ):
            raise self.fail(
                index, "subvolume", f"expected a non-empty string or an integer, got {item['subvolume']!r}."
            )
        if "annotation_type" in item and item["annotation_type"] not in ANNOTATION_TYPES:
            raise self.fail(
                index, "annotation_type", f"expected one of {list(ANNOTATION_TYPES)}, got {item['annotation_type']!r}."
            )
        if "id" in item and not (isinstance(item["id"], str) and item["id"]):
            raise self.fail(index, "id", f"expected a non-empty string, got {item['id']!r}.")
        if "metadata" in item and not isinstance(item["metadata"], dict):
            raise self.fail(index, "metadata", f"expected an object, got {type(item['metadata']).__name__}.")
        return out


def _check_class_names(source: str, class_names: Any) -> list[str]:
    if not isinstance(class_names, list) or not class_names:
        raise DatalistError(f"{source}: 'class_names' must be a non-empty list of strings, got {class_names!r}.")
    for index, name in enumerate(class_names):
        if not isinstance(name, str) or not name:
            raise DatalistError(f"{source}: 'class_names' entry {index} must be a non-empty string, got {name!r}.")
    if len(set(class_names)) != len(class_names):
        repeated = sorted({n for n in class_names if class_names.count(n) > 1})
        raise DatalistError(f"{source}: 'class_names' repeats {repeated}.")
    if len(class_names) >= IGNORE_VALUE:
        raise DatalistError(
            f"{source}: {len(class_names)} class_names; at most {IGNORE_VALUE - 1} fit next to the ignore value "
            f"{IGNORE_VALUE}."
        )
    return list(class_names)


def validate_datalist(
    content: Mapping[str, Any],
    base_dir: str,
    source: str = "<datalist>",
    check_files: bool = True,
    extra_keys: Iterable[str] = (),
) -> tuple[dict[str, list[dict]], list[str]]:
    """Validate a parsed datalist and resolve its paths.

    Args:
        content: the parsed JSON object.
        base_dir: the folder relative paths are resolved against.
        source: the file name used in error messages.
        check_files: whether image and label files must exist.
        extra_keys: further item keys to accept (for tools that add their own fields).

    Returns:
        ``(sections, class_names)``: every present list section, its items validated, deep-copied and with
        absolute paths, and the class names.

    Raises:
        DatalistError: anything malformed, with the file, section, item index and key in the message.
    """
    if not isinstance(content, Mapping):
        raise DatalistError(f"{source}: the top level must be a JSON object, got {type(content).__name__}.")
    unknown = [k for k in content if k not in TOP_LEVEL_KEYS]
    if unknown:
        raise DatalistError(f"{source}: unknown top-level key {unknown[0]!r}; allowed keys are {list(TOP_LEVEL_KEYS)}.")
    if "class_names" not in content:
        raise DatalistError(f"{source}: missing 'class_names' (a list of names; index = class id).")
    class_names = _check_class_names(source, content["class_names"])
    present = [s for s in SECTIONS if s in content]
    if not present:
        raise DatalistError(f"{source}: no item list; give one of {list(SECTIONS)}.")
    allowed_keys = (*ITEM_KEYS, *extra_keys)
    sections: dict[str, list[dict]] = {}
    seen_ids: dict[str, tuple[str, int]] = {}
    for section in present:
        items = content[section]
        if not isinstance(items, list):
            raise DatalistError(f"{source}: section '{section}' must be a list of items, got {type(items).__name__}.")
        checker = _Checker(source, section, len(class_names), base_dir, check_files)
        checked = []
        for index, item in enumerate(items):
            out = checker.item(index, item, allowed_keys)
            if section == "data" and "subvolume" not in out:
                raise checker.fail(index, "subvolume", "missing; items of the 'data' pool need a subvolume id.")
            if "id" in out:
                if out["id"] in seen_ids:
                    first_section, first_index = seen_ids[out["id"]]
                    raise checker.fail(
                        index, "id", f"{out['id']!r} repeats item {first_index} of section '{first_section}'."
                    )
                seen_ids[out["id"]] = (section, index)
            checked.append(out)
        sections[section] = checked
    return sections, class_names


def load_datalist(
    path: str | os.PathLike,
    section: str | None = None,
    check_files: bool = True,
    extra_keys: Iterable[str] = (),
) -> tuple[list[dict], list[str]]:
    """Read and validate a datalist JSON file.

    Args:
        path: the JSON file.
        section: ``"training"``, ``"validation"``, ``"test"`` or ``"data"``; ``None`` returns the items of every
            present section, in that order.
        check_files: whether image and label files must exist (the part of the path before any ``?``).
        extra_keys: further item keys to accept.

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
    path = os.path.abspath(os.fspath(path))
    if not os.path.isfile(path):
        raise FileNotFoundError(f"datalist not found: {path}")
    with open(path, encoding="utf-8") as handle:
        try:
            content = json.load(handle)
        except json.JSONDecodeError as error:
            raise DatalistError(f"{path}: not valid JSON ({error}).") from error
    if section is not None and section not in SECTIONS:
        raise DatalistError(f"{path}: unknown section {section!r}; sections are {list(SECTIONS)}.")
    if section is not None and isinstance(content, dict) and section not in content:
        present = [s for s in SECTIONS if s in content]
        raise DatalistError(f"{path}: no section {section!r}; the file has {present}.")
    sections, class_names = validate_datalist(
        content, os.path.dirname(path), source=path, check_files=check_files, extra_keys=extra_keys
    )
    if section is not None:
        return sections[section], class_names
    return [item for name in SECTIONS for item in sections.get(name, [])], class_names


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
    os.makedirs(base_dir, exist_ok=True)
    temporary = f"{path}.tmp-{os.getpid()}"
    with open(temporary, "w", encoding="utf-8") as handle:
        json.dump(content, handle, indent=1)
        handle.write("\n")
    os.replace(temporary, path)
    return path
