"""Annotation scenarios: cross-sub-volume splits and annotation compression rates (docs/method.md §1, §9, §10).

A *scenario* turns a fully annotated datalist into the paper's protocol:

1. **Split** (:func:`make_splits`): the items are grouped by their ``subvolume`` id (the annotated crop a 2D slice
   was cut from) and whole groups are assigned to training / validation / test, so no sub-volume is in two parts.
   Repetition ``i`` of ``num_splits`` is drawn with its own random stream from ``(seed, i)``. Two modes:

   - ``"random"`` (default; the paper's repeated splits): the groups are shuffled and each goes to the part whose
     image count is furthest below its target ``fractions * total``, after every part with a positive fraction has
     received one group. Parts are balanced by images, not by groups.
   - ``"kfold"``: the groups are shuffled once per seed and dealt into ``num_splits`` folds of nearly equal image
     counts; repetition ``i`` tests on fold ``i``, validates on fold ``i + 1`` (mod ``num_splits``) and trains on
     the rest, so every group is tested exactly once over the repetitions.

2. **Annotation types** (:func:`assign_annotation_types`): of the ``N`` training items,
   ``n_mask = max(1, floor(N / acr))`` keep their masks (floor: the scenario never holds more masks than the ACR
   allows; at least one so the supervised term exists). The items are ranked by one random permutation drawn from
   ``(seed, split_index)`` that does not depend on the ACR, and the first ``n_mask`` keep masks; hence the masked
   items of ACR 64 are a subset of those of ACR 32, and so on, for the same seed. The remaining items take the weak
   types in play in turn along the same ranking (a balanced assignment: the counts of two types differ by at most
   one, and which item gets which type is random), or ``"none"`` when no weak type is in play (semi-supervised).

Every training item gets ``annotation_type`` in ``{"mask", "tags", "boxes", "points", "none"}``. The weak
annotations themselves are *not* stored: they are derived at load time from the item's mask by
:class:`dsp_monai.transforms.weak_labels.DeriveWeakLabelsd`, which keeps exactly the type the item names and hides
the mask of weakly and un-annotated items. Validation and test items are unchanged (full masks).

Split files (:func:`save_scenario` / :func:`load_scenario`) are the project's one split-file format, written by the
library and by the bundle's experiment preparation (:mod:`dsp_monai.data.experiment`) alike. A JSON object::

    {
      "format_version": 2,
      "class_names": ["background", ...] or null,
      "parameters": {"acr": 8 or null, "weak_types": [...], "split_index": 0, "num_splits": 5, "seed": 0,
                     "mode": "random" | "kfold" | "sections", "fractions": [0.6, 0.2, 0.2]},
      "extra": {...},                  # free-form: the experiment's request, the datalist, ...
      "subvolumes": {"training": [...], "validation": [...], "test": [...]},
      "training": [ITEM, ...], "validation": [ITEM, ...], "test": [ITEM, ...]
    }

with the items as in the datalist (paths and ids), so a results folder can commit the exact training set it used.
Items must therefore be JSON-serialisable (paths, not arrays). ``acr`` null means the training items keep the
annotations they were given (mode ``"sections"``: a datalist with its own training / validation / test sections).
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from dsp_monai.annotations.vocabulary import ANNOTATION_TYPE, ANNOTATION_TYPES, SUBVOLUME, WEAK_TYPES
from dsp_monai.data.files import write_json

__all__ = [
    "PARTS",
    "SCENARIO_FORMAT_VERSION",
    "Scenario",
    "assign_annotation_types",
    "load_scenario",
    "make_scenario",
    "make_splits",
    "save_scenario",
]

logger = logging.getLogger(__name__)

PARTS = ("training", "validation", "test")
"""The three parts of a split, in file order."""

SCENARIO_FORMAT_VERSION = 2
"""Version of the split-file format written by :func:`save_scenario` (1: the library's first format, without
``parameters`` and ``class_names``; the bundle's first split files had no version)."""

_SPLIT_MODES = ("random", "kfold")
_FILE_MODES = _SPLIT_MODES + ("sections",)


def _check_items(items: Sequence[Mapping], subvolume_key: str) -> list[dict]:
    if isinstance(items, (str, bytes, Mapping)) or not isinstance(items, Sequence):
        raise TypeError(f"items must be a list of dicts, got {type(items).__name__}.")
    if len(items) == 0:
        raise ValueError("items is empty: a scenario needs at least one annotated item per part.")
    checked = []
    for index, item in enumerate(items):
        if not isinstance(item, Mapping):
            raise TypeError(f"item {index} must be a dict, got {type(item).__name__}: {item!r}.")
        if item.get(subvolume_key) is None:
            raise KeyError(
                f"item {index} has no {subvolume_key!r} id (keys: {sorted(map(str, item))}); every item needs the "
                f"id of the sub-volume it was cut from so that splits never share a sub-volume."
            )
        checked.append(dict(item))
    return checked


def _check_acr(acr: float) -> float:
    if isinstance(acr, bool) or not isinstance(acr, (int, float, np.integer, np.floating)):
        raise TypeError(f"acr must be a number >= 1 (e.g. 1, 2, 4, ..., 64), got {acr!r}.")
    if not math.isfinite(float(acr)) or acr < 1:
        raise ValueError(f"acr must be a finite number >= 1 (1/acr of the training images keep masks), got {acr}.")
    return float(acr)


def _check_weak_types(weak_types: Sequence[str] | str | None) -> tuple[str, ...]:
    if weak_types is None:
        return ()
    weak_types = (weak_types,) if isinstance(weak_types, str) else tuple(weak_types)
    unknown = [t for t in weak_types if t not in WEAK_TYPES]
    if unknown:
        raise ValueError(
            f"weak_types must be a subset of {WEAK_TYPES} (empty = semi-supervised), got unknown type(s) {unknown}."
        )
    if len(set(weak_types)) != len(weak_types):
        raise ValueError(f"weak_types lists a type twice: {list(weak_types)}.")
    return tuple(t for t in WEAK_TYPES if t in weak_types)


def _check_fractions(fractions: Sequence[float]) -> np.ndarray:
    values = np.asarray(fractions, dtype=np.float64)
    if values.shape != (3,) or np.any(values < 0) or values[0] <= 0 or values[2] <= 0:
        raise ValueError(
            f"fractions must be (training, validation, test) with training and test > 0 and validation >= 0, "
            f"got {tuple(fractions)}."
        )
    return values / values.sum()


def _groups(items: Sequence[Mapping], subvolume_key: str) -> dict[str, int]:
    """Image count per sub-volume id (ids compared as strings, in sorted order for determinism)."""
    counts: dict[str, int] = {}
    for item in items:
        key = str(item[subvolume_key])
        counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items()))


def make_splits(
    items: Sequence[Mapping],
    num_splits: int,
    seed: int = 0,
    fractions: Sequence[float] = (0.6, 0.2, 0.2),
    mode: str = "random",
    subvolume_key: str = SUBVOLUME,
) -> list[dict[str, list[str]]]:
    """Cross-sub-volume splits: for each repetition, the sub-volume ids of training, validation and test.

    Args:
        items: datalist items, each with a ``subvolume_key`` id.
        num_splits: number of repetitions ``k`` (the paper: 10 for HeLa-2, 5 otherwise).
        seed: seed of all random draws; the same seed gives the same splits.
        fractions: target image fractions of (training, validation, test) for ``mode="random"``; validation may
            be 0. Ignored by ``"kfold"``.
        mode: ``"random"`` or ``"kfold"`` (see the module docstring).
        subvolume_key: item key holding the sub-volume id.

    Returns:
        ``num_splits`` dicts mapping each part name to a sorted list of sub-volume ids (as strings).

    Raises:
        ValueError: for an empty item list, ``num_splits < 1``, bad fractions, an unknown mode, or fewer
            sub-volumes than the parts (or folds) need.
        KeyError: for an item without a sub-volume id.
    """
    items = _check_items(items, subvolume_key)
    if isinstance(num_splits, bool) or int(num_splits) != num_splits or num_splits < 1:
        raise ValueError(f"num_splits must be a positive integer, got {num_splits!r}.")
    if mode not in _SPLIT_MODES:
        raise ValueError(f"mode must be one of {_SPLIT_MODES}, got {mode!r}.")
    counts = _groups(items, subvolume_key)
    names = list(counts)
    if mode == "kfold":
        return _kfold_splits(names, counts, int(num_splits), seed)
    targets = _check_fractions(fractions) * len(items)
    needed = int(np.count_nonzero(targets))
    if len(names) < needed:
        raise ValueError(
            f"cannot split {len(names)} sub-volume(s) into {needed} non-empty parts; give more sub-volumes or set "
            f"the validation fraction to 0."
        )
    splits = []
    for repetition in range(int(num_splits)):
        rng = np.random.default_rng([int(seed), repetition])
        order = [names[i] for i in rng.permutation(len(names))]
        assigned: list[list[str]] = [[], [], []]
        filled = np.zeros(3)
        for name in order:
            empty = [p for p in range(3) if targets[p] > 0 and not assigned[p]]
            part = empty[0] if empty else int(np.argmax(np.where(targets > 0, targets - filled, -np.inf)))
            assigned[part].append(name)
            filled[part] += counts[name]
        splits.append({p: sorted(a) for p, a in zip(PARTS, assigned)})
    return splits


def _kfold_splits(names: list[str], counts: dict[str, int], folds: int, seed: int) -> list[dict[str, list[str]]]:
    if folds < 3:
        raise ValueError(f"mode='kfold' needs num_splits >= 3 (test, validation and training folds), got {folds}.")
    if len(names) < folds:
        raise ValueError(f"mode='kfold' with {folds} folds needs at least {folds} sub-volumes, got {len(names)}.")
    rng = np.random.default_rng([int(seed), folds])
    order = [names[i] for i in rng.permutation(len(names))]
    members: list[list[str]] = [[] for _ in range(folds)]
    sizes = np.zeros(folds)
    for rank, name in enumerate(order):
        fold = rank if rank < folds else int(np.argmin(sizes))
        members[fold].append(name)
        sizes[fold] += counts[name]
    splits = []
    for repetition in range(folds):
        test, validation = repetition, (repetition + 1) % folds
        training = [n for f in range(folds) if f not in (test, validation) for n in members[f]]
        splits.append(
            {"training": sorted(training), "validation": sorted(members[validation]), "test": sorted(members[test])}
        )
    return splits


def assign_annotation_types(
    items: Sequence[Mapping],
    acr: float,
    weak_types: Sequence[str] | str | None,
    seed: int = 0,
    split_index: int = 0,
    annotation_type_key: str = ANNOTATION_TYPE,
) -> list[dict]:
    """Copies of ``items`` with ``annotation_type`` set: ``max(1, floor(N / acr))`` masks, the rest weak or none.

    Args:
        items: the training items.
        acr: annotation compression rate ``n >= 1``.
        weak_types: the weak types in play, a subset of ``("tags", "boxes", "points")``; empty or None = none.
        seed: seed of the ranking (with ``split_index``); independent of ``acr`` so masked sets are nested.
        split_index: the repetition the items belong to.
        annotation_type_key: key written.

    Returns:
        New dicts, in the input order.

    Raises:
        ValueError: for an empty item list, a bad ACR or an unknown weak type.
    """
    acr = _check_acr(acr)
    types = _check_weak_types(weak_types)
    if isinstance(items, (str, bytes, Mapping)) or not isinstance(items, Sequence):
        raise TypeError(f"items must be a list of dicts, got {type(items).__name__}.")
    if len(items) == 0:
        raise ValueError("items is empty: there are no training items to annotate.")
    count = len(items)
    masks = max(1, math.floor(count / acr))
    ranking = np.random.default_rng([int(seed), int(split_index), 1]).permutation(count)
    kinds = ["none"] * count
    for rank, index in enumerate(ranking):
        if rank < masks:
            kinds[index] = "mask"
        elif types:
            kinds[index] = types[(rank - masks) % len(types)]
    out = []
    for item, kind in zip(items, kinds):
        copy = dict(item)
        copy[annotation_type_key] = kind
        out.append(copy)
    logger.debug("annotation types for %d items at ACR %s: %s", count, acr, {k: kinds.count(k) for k in set(kinds)})
    return out


@dataclass
class Scenario:
    """One split repetition of one annotation scenario.

    Attributes:
        training: training items, each with ``annotation_type``.
        validation: validation items (full annotations).
        test: test items (full annotations).
        subvolumes: sub-volume ids of each part (empty for a datalist with its own sections).
        acr: the annotation compression rate; None when the training items keep the annotations they were given.
        weak_types: the weak types in play (empty = semi-supervised).
        split_index: which repetition this is.
        num_splits: the number of repetitions.
        seed: the seed of the splits and of the annotation types.
        mode: the split mode (``"random"``, ``"kfold"``, or ``"sections"`` for a datalist's own sections).
        fractions: the target fractions of the ``"random"`` mode.
        extra: free-form metadata kept in the split file (e.g. the datalist's name).
        class_names: the datalist's class names, when known.
    """

    training: list[dict]
    validation: list[dict]
    test: list[dict]
    subvolumes: dict[str, list[str]]
    acr: float | None
    weak_types: tuple[str, ...]
    split_index: int
    num_splits: int
    seed: int
    mode: str = "random"
    fractions: tuple[float, ...] = (0.6, 0.2, 0.2)
    extra: dict = field(default_factory=dict)
    class_names: list[str] | None = None

    def counts(self, annotation_type_key: str = ANNOTATION_TYPE) -> dict[str, int]:
        """Number of training items per annotation type."""
        out: dict[str, int] = {}
        for item in self.training:
            out[item[annotation_type_key]] = out.get(item[annotation_type_key], 0) + 1
        return out

    def parameters(self) -> dict:
        """The parameters that produced the scenario, as the split file stores them."""
        return {
            "acr": self.acr,
            "weak_types": list(self.weak_types),
            "split_index": self.split_index,
            "num_splits": self.num_splits,
            "seed": self.seed,
            "mode": self.mode,
            "fractions": list(self.fractions),
        }

    def to_dict(self) -> dict:
        """The JSON-ready content of the split file (format in the module docstring)."""
        return {
            "format_version": SCENARIO_FORMAT_VERSION,
            "class_names": None if self.class_names is None else list(self.class_names),
            "parameters": self.parameters(),
            "extra": self.extra,
            "subvolumes": self.subvolumes,
            "training": self.training,
            "validation": self.validation,
            "test": self.test,
        }


def make_scenario(
    items: Sequence[Mapping],
    acr: float,
    weak_types: Sequence[str] | str | None,
    split_index: int = 0,
    num_splits: int = 5,
    seed: int = 0,
    fractions: Sequence[float] = (0.6, 0.2, 0.2),
    mode: str = "random",
    subvolume_key: str = SUBVOLUME,
    annotation_type_key: str = ANNOTATION_TYPE,
    extra: Mapping | None = None,
) -> Scenario:
    """The scenario of one split repetition: its three parts and the training items' annotation types.

    Args:
        items: fully annotated datalist items (``image``, ``label``, ``subvolume``, ...).
        acr: annotation compression rate ``n >= 1``: ``max(1, floor(N_train / n))`` training items keep masks.
        weak_types: weak types in play (subset of ``("tags", "boxes", "points")``; empty or None =
            semi-supervised, the other items get ``"none"``).
        split_index: which repetition, ``0 <= split_index < num_splits`` (``num_splits`` in ``"kfold"`` mode).
        num_splits: number of repetitions.
        seed: seed of the splits and the annotation types.
        fractions: target (training, validation, test) image fractions (``"random"`` mode).
        mode: ``"random"`` or ``"kfold"``.
        subvolume_key: item key of the sub-volume id.
        annotation_type_key: key written into training items.
        extra: metadata stored in the split file.

    Returns:
        The :class:`Scenario`.

    Raises:
        ValueError: for a bad ACR, an unknown weak type, an out-of-range ``split_index``, empty items, or too few
            sub-volumes.

    Example:
        >>> scenario = make_scenario(items, acr=8, weak_types=("tags", "boxes", "points"), split_index=0, seed=0)
        >>> save_scenario(scenario, "results/hela2_acr8/split0.json")
    """
    acr = _check_acr(acr)
    types = _check_weak_types(weak_types)
    if isinstance(split_index, bool) or int(split_index) != split_index or not 0 <= split_index < num_splits:
        raise ValueError(f"split_index must be an integer in [0, {num_splits}), got {split_index!r}.")
    items = _check_items(items, subvolume_key)
    split = make_splits(items, num_splits, seed, fractions, mode, subvolume_key)[int(split_index)]
    parts = {p: [] for p in PARTS}
    membership = {name: part for part, names in split.items() for name in names}
    for item in items:
        parts[membership[str(item[subvolume_key])]].append(item)
    training = assign_annotation_types(parts["training"], acr, types, seed, int(split_index), annotation_type_key)
    return Scenario(
        training=training,
        validation=parts["validation"],
        test=parts["test"],
        subvolumes=split,
        acr=acr,
        weak_types=types,
        split_index=int(split_index),
        num_splits=int(num_splits),
        seed=int(seed),
        mode=mode,
        fractions=tuple(float(f) for f in fractions),
        extra=dict(extra or {}),
    )


def save_scenario(scenario: Scenario, path: str | os.PathLike) -> str:
    """Write ``scenario`` as a JSON split file (parent folders created; written to a temporary file, then renamed,
    so a reader never sees half a file); returns the path.

    Raises:
        TypeError: when an item holds a value JSON cannot store (an array, say), naming the part, item and key.
    """
    content = scenario.to_dict()
    for part in PARTS:
        for index, item in enumerate(content[part]):
            for key, value in item.items():
                try:
                    json.dumps(value)
                except TypeError as error:
                    raise TypeError(
                        f"{part} item {index} key {key!r} holds a {type(value).__name__}, which a JSON split file "
                        f"cannot store; keep file paths or ids in the datalist items, not arrays."
                    ) from error
    return write_json(path, content)


def _old_format_error(path: str, content: object) -> ValueError:
    if isinstance(content, dict) and "format_version" not in content and "parameters" in content:
        found = "an unversioned split file of an earlier bundle"
    elif isinstance(content, dict):
        found = f"format version {content.get('format_version')!r}"
    else:
        found = f"a JSON {type(content).__name__}"
    return ValueError(
        f"{path!r} is {found}, not a split file of format version {SCENARIO_FORMAT_VERSION}. Delete it (the bundle "
        f"writes a new one for the same parameters; a run's checkpoints stay usable) or write it again with "
        f"dsp_monai.data.scenarios.save_scenario."
    )


def load_scenario(path: str | os.PathLike, annotation_type_key: str = ANNOTATION_TYPE) -> Scenario:
    """Read a split file written by :func:`save_scenario` (format in the module docstring).

    Raises:
        FileNotFoundError: when the file does not exist.
        ValueError: when the file is not a split file of the current version (an older format is named, with what
            to do), or a part or item is malformed (the message names the file, part and item).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"split file {path!r} does not exist.")
    with open(path, encoding="utf-8") as handle:
        try:
            content = json.load(handle)
        except json.JSONDecodeError as error:
            raise ValueError(f"split file {path!r} is not valid JSON: {error}.") from error
    if not isinstance(content, dict) or content.get("format_version") != SCENARIO_FORMAT_VERSION:
        raise _old_format_error(path, content)
    missing = [k for k in PARTS + ("parameters", "subvolumes", "class_names") if k not in content]
    if missing:
        raise ValueError(f"split file {path!r} lacks the key(s) {missing}.")
    parameters = content["parameters"]
    needed = ("acr", "weak_types", "split_index", "num_splits", "seed", "mode", "fractions")
    if not isinstance(parameters, dict) or any(k not in parameters for k in needed):
        raise ValueError(f"split file {path!r}: 'parameters' must hold {list(needed)}; got {parameters!r}.")
    if parameters["mode"] not in _FILE_MODES:
        raise ValueError(f"split file {path!r}: mode must be one of {_FILE_MODES}, got {parameters['mode']!r}.")
    for part in PARTS:
        if not isinstance(content[part], list) or not all(isinstance(i, dict) for i in content[part]):
            raise ValueError(f"split file {path!r}: {part!r} must be a list of item dicts.")
    for index, item in enumerate(content["training"]):
        if item.get(annotation_type_key) not in ANNOTATION_TYPES:
            raise ValueError(
                f"split file {path!r}: training item {index} has {annotation_type_key}="
                f"{item.get(annotation_type_key)!r}, expected one of {ANNOTATION_TYPES}."
            )
    class_names = content["class_names"]
    return Scenario(
        training=content["training"],
        validation=content["validation"],
        test=content["test"],
        subvolumes={p: list(v) for p, v in content["subvolumes"].items()},
        acr=None if parameters["acr"] is None else _check_acr(parameters["acr"]),
        weak_types=_check_weak_types(parameters["weak_types"]),
        split_index=int(parameters["split_index"]),
        num_splits=int(parameters["num_splits"]),
        seed=int(parameters["seed"]),
        mode=parameters["mode"],
        fractions=tuple(float(f) for f in parameters["fractions"]),
        extra=dict(content.get("extra") or {}),
        class_names=None if class_names is None else list(class_names),
    )
