"""From a datalist to the training, validation and test items of one experiment.

Two kinds of datalist are accepted (format: docs/datalist.md):

- a *pool* of fully annotated items carrying a ``subvolume`` id (the synthetic default, OpenOrganelle slices): the
  paper's protocol applies; a cross-sub-volume split and an annotation compression rate (ACR) turn it into a
  scenario (:func:`dsp_monai.data.scenarios.make_scenario`) whose weakly annotated items get their tags, boxes or
  points derived from their masks at load time;
- explicit ``training`` / ``validation`` / ``test`` sections (a user's own data): the items are used as given; each
  training item's annotation type is read off its keys
  (:func:`dsp_monai.annotations.vocabulary.annotation_type_of`), unless an ACR is requested, which then applies to
  the training section as to a pool.

The datalist is read and validated once (:func:`dsp_monai.data.datalist.read_datalist`, with its content checks:
every file opens, shapes agree, annotations lie inside their image and agree with each other), then checked against
the configuration (class count, dimensionality, intensity range). Every problem is reported together, before the
first iteration. The experiment's items are written to a split file in the output folder in the project's one
split-file format (:func:`dsp_monai.data.scenarios.save_scenario`); a later run with the same parameters reads it
back, so a resumed run trains on exactly the same items. The unversioned split files of earlier bundles are still
read (and left as they are), so their runs resume too.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
from collections.abc import Iterator, Mapping, Sequence

import numpy as np

from dsp_monai.annotations.vocabulary import ANNOTATION_TYPE, IMAGE, LABEL, WEAK_TYPES, annotation_type_of
from dsp_monai.data.datalist import DatalistError, ValidatedDatalist, read_datalist
from dsp_monai.data.scenarios import (
    PARTS,
    Scenario,
    assign_annotation_types,
    load_scenario,
    make_scenario,
    save_scenario,
)

__all__ = [
    "ExperimentError",
    "bundle_errors",
    "prepare_bundle_experiment",
    "prepare_experiment",
    "resolve_intensity_range",
    "relative_spacing",
    "resolve_spacing",
]

logger = logging.getLogger(__name__)


class ExperimentError(DatalistError):
    """A datalist that does not fit the configuration (class count, dimensionality, intensities, split file)."""


@contextlib.contextmanager
def bundle_errors() -> Iterator[None]:
    """At the bundle's entry points: a datalist or experiment error ends the process with its message alone.

    MONAI's config parser wraps every exception of an instantiation in its own ``RuntimeError``, which then ends the
    traceback. ``SystemExit`` passes through, and the interpreter prints its message as the last line of stderr
    (exit status 1), so the user reads what is wrong and where.
    """
    try:
        yield
    except DatalistError as error:
        raise SystemExit(str(error)) from None


def _request(**parameters) -> dict:
    return {k: (list(v) if isinstance(v, (tuple, list)) else v) for k, v in parameters.items()}


def _locations(datalist: ValidatedDatalist, sections: Sequence[str]) -> Iterator[tuple[str, int, dict]]:
    for section in sections:
        for index, item in enumerate(datalist.sections.get(section, [])):
            yield section, index, item


def _where(datalist: ValidatedDatalist, section: str, index: int, key: str) -> str:
    return f"{datalist.path}: section '{section}', item {index}, key '{key}'"


def _check_configuration(datalist: ValidatedDatalist, num_classes: int | None, spatial_dims: int | None) -> None:
    problems = []
    names = datalist.class_names
    if num_classes is not None and int(num_classes) != len(names):
        problems.append(
            f"{datalist.path} defines {len(names)} classes {names} but the configuration's num_classes is "
            f"{num_classes}; set num_classes to {len(names)} (e.g. --num_classes {len(names)}) or fix the datalist's "
            "class_names."
        )
    if spatial_dims is not None and datalist.images:
        for section, index, item in _locations(datalist, datalist.sections):
            info = datalist.images.get(item[IMAGE])
            if info is not None and len(info.spatial_shape) != int(spatial_dims):
                remedy = (
                    "cut 2D slices (zarr: ?axis=z&index=..) or train in 3D with the override "
                    "bundle/configs/train_3d.yaml after train.yaml (docs/volumes.md)"
                    if len(info.spatial_shape) == 3 else
                    "give 3D volumes, or train in 2D with bundle/configs/train.yaml alone (without train_3d.yaml)"
                )
                problems.append(
                    f"{_where(datalist, section, index, IMAGE)}: {item[IMAGE]} is a {len(info.spatial_shape)}D image "
                    f"of spatial shape {list(info.spatial_shape)}, but the network expects {spatial_dims}D images "
                    f"(spatial_dims: {spatial_dims}); {remedy}."
                )
    if problems:
        header = f"{datalist.path}: {len(problems)} problems:\n" if len(problems) > 1 else ""
        raise ExperimentError(header + "\n".join(problems), problems)


def resolve_spacing(
    datalist: ValidatedDatalist, items: Sequence[Mapping], tolerance: float = 0.01
) -> list[float] | None:
    """The voxel size of an experiment: the per-axis median of its training images' spacings (from their affines:
    NIfTI ``pixdim``, OME-NGFF ``scale``), for the operations that measure distances (medoid points, geodesic
    targets) and for the choice of the rotation planes of 3D augmentation.

    The images of one experiment are meant to share a voxel size (resample them beforehand otherwise, e.g. with
    ``monai.transforms.Spacingd``); images whose spacing differs from the median by more than ``tolerance``
    (relative, on any axis) are counted in a warning.

    Returns:
        ``[s_0, ..., s_{n-1}]`` in array-axis order, or None when no training image has an affine (or the datalist
        was read without its content checks).
    """
    spacings = [datalist.images[item[IMAGE]].spacing for item in items
                if item[IMAGE] in datalist.images and datalist.images[item[IMAGE]].spacing is not None]
    if not spacings or len({len(s) for s in spacings}) != 1:
        return None
    values = np.asarray(spacings, dtype=np.float64)
    median = np.median(values, axis=0)
    off = int(np.count_nonzero((np.abs(values - median) > tolerance * median).any(axis=1)))
    if off:
        logger.warning(
            "%d of %d training images of %s have a voxel size other than the median %s; distances (medoid points, "
            "geodesic targets) use the median: resample the images to one spacing for exact distances",
            off, len(spacings), datalist.path, [round(float(v), 6) for v in median],
        )
    return [round(float(v), 6) for v in median]


def relative_spacing(spacing: Sequence[float] | None) -> list[float] | None:
    """A voxel size in units of its finest axis (``[10.48, 8, 8]`` -> ``[1.31, 1.0, 1.0]``), so that distances are
    counted in voxels of the finest axis whatever the physical unit; None stays None.

    Raises:
        ValueError: for a non-positive entry.
    """
    if spacing is None:
        return None
    values = [float(v) for v in spacing]
    if not values or min(values) <= 0:
        raise ValueError(f"spacing must hold positive values, got {list(spacing)}.")
    return [round(v / min(values), 6) for v in values]


def resolve_intensity_range(
    datalist: ValidatedDatalist,
    items: Sequence[Mapping],
    intensity_range: Sequence[float] | str,
    percentiles: Sequence[float] = (0.5, 99.5),
    clip_tolerance: float = 0.01,
    min_coverage: float = 0.1,
) -> list[float]:
    """The intensity range mapped onto the network's input range [0, 1], checked against the images.

    Args:
        datalist: a datalist read with its content checks (the images' intensity samples).
        items: the items whose images set the range (the training items).
        intensity_range: ``[low, high]``, or ``"auto"``: the ``percentiles`` of the images' pooled intensities.
        percentiles: the percentiles of ``"auto"`` (and of the coverage warning).
        clip_tolerance: warn when more than this share of the intensities lies outside a given range (clipped).
        min_coverage: warn when the images' percentile span covers less than this share of a given range (their
            contrast squeezed into a small part of the network's input range).

    Returns:
        ``[low, high]`` as floats.

    Raises:
        ExperimentError: for a range that is not two increasing finite numbers or ``"auto"``, or ``"auto"`` with
            images of a single intensity.
    """
    samples = [datalist.images[item[IMAGE]].sample for item in items if item[IMAGE] in datalist.images]
    pooled = np.concatenate(samples) if samples else np.zeros(0, dtype=np.float32)
    setting = "the configuration's intensity_range (--intensity_range)"
    if isinstance(intensity_range, str):
        if intensity_range != "auto":
            raise ExperimentError(f"intensity_range must be [low, high] or 'auto'; got {intensity_range!r}.")
        if pooled.size == 0:
            raise ExperimentError("intensity_range 'auto' needs the training images' intensities; none were read.")
        low, high = (float(v) for v in np.percentile(pooled.astype(np.float64), list(percentiles)))
        if not high > low:
            raise ExperimentError(
                f"intensity_range 'auto': the percentiles {list(percentiles)} of the training intensities are both "
                f"{low:g}; the images hold (almost) a single value. Set {setting} to [low, high]."
            )
        logger.info(
            "intensity_range auto: [%g, %g] (percentiles %s of %d training images' intensities)",
            low, high, list(percentiles), len(samples),
        )
        return [low, high]
    try:
        low, high = (float(v) for v in intensity_range)
    except (TypeError, ValueError):
        raise ExperimentError(f"intensity_range must be [low, high] or 'auto'; got {intensity_range!r}.") from None
    if not (math.isfinite(low) and math.isfinite(high) and high > low):
        raise ExperimentError(f"intensity_range must be two finite numbers, low < high; got {[low, high]}.")
    if pooled.size:
        observed = [float(pooled.min()), float(pooled.max())]
        span = [float(v) for v in np.percentile(pooled.astype(np.float64), list(percentiles))]
        outside = float(np.mean((pooled < low) | (pooled > high)))
        if outside > clip_tolerance:
            logger.warning(
                "%.1f%% of the training intensities (observed [%g, %g]) fall outside intensity_range [%g, %g] and are "
                "clipped; set %s to [%g, %g] or to auto", 100 * outside, *observed, low, high, setting, *span,
            )
        coverage = (min(span[1], high) - max(span[0], low)) / (high - low)
        if coverage < min_coverage:
            logger.warning(
                "the training intensities span [%g, %g] (percentiles %s), only %.1f%% of intensity_range [%g, %g]: "
                "the network sees them squeezed into a small part of its input range; set %s to [%g, %g] or to auto",
                *span, list(percentiles), 100 * max(coverage, 0.0), low, high, setting, *span,
            )
    return [low, high]


def _from_sections(datalist: ValidatedDatalist, acr, weak_types, seed, split_index) -> tuple[dict, float | None]:
    parts = {part: datalist.items(part) if part in datalist.sections else [] for part in PARTS}
    unmasked = sum(item.get(LABEL) is None for item in parts["training"])
    if acr and not unmasked:
        parts["training"] = assign_annotation_types(parts["training"], acr, weak_types, seed, split_index)
        return parts, float(acr)
    if acr:
        logger.warning(
            "acr=%s does not apply to %s: %d of its %d training items carry no mask, so every item keeps the "
            "annotations it has (set acr to 0 or null to say so and silence this message)",
            acr, datalist.path, unmasked, len(parts["training"]),
        )
    for item in parts["training"]:
        item.setdefault(ANNOTATION_TYPE, annotation_type_of(item))
    return parts, None


def prepare_experiment(
    datalist: str,
    output_dir: str,
    acr: float | None = 8,
    weak_types: Sequence[str] = WEAK_TYPES,
    split_index: int = 0,
    num_splits: int = 5,
    seed: int = 0,
    fractions: Sequence[float] = (0.6, 0.2, 0.2),
    training_types: Sequence[str] | None = None,
    split_file: str = "split.json",
    num_classes: int | None = None,
    spatial_dims: int | None = None,
    intensity_range: Sequence[float] | str | None = None,
    intensity_percentiles: Sequence[float] = (0.5, 99.5),
    check_contents: bool = True,
) -> dict:
    """The items of one experiment: ``{"training", "validation", "test": [items], "class_names": [...],
    "intensity_range": [low, high] or None, "spacing": [...] or None}`` (``spacing``: :func:`resolve_spacing` of
    the training images).

    Args:
        datalist: path of the datalist JSON.
        output_dir: the run's folder; the experiment's items are written to ``output_dir/split_file``.
        acr: annotation compression rate (1/acr of the training images keep masks). It applies to a pool and to a
            sectioned datalist whose training items all have masks; 0 or None keeps a sectioned datalist's
            annotations as given, which is also what happens (with a warning) when some training items have no mask.
        weak_types: weak annotation types in play for the images without masks (empty: semi-supervised).
        split_index: which cross-sub-volume repetition (pool datalists).
        num_splits: number of repetitions the split index counts in.
        seed: seed of the split and of the choice of masked images.
        fractions: training / validation / test shares of the sub-volumes (pool datalists).
        training_types: keep only training items of these annotation types (e.g. ``["mask"]`` for the masks-only
            U-Net baseline); None keeps all.
        split_file: file name of the split written in ``output_dir``.
        num_classes: the class count the configuration expects; checked against the datalist's ``class_names``.
        spatial_dims: the network's spatial dimensionality; every image is checked against it.
        intensity_range: ``[low, high]`` (checked against the training images, with a warning when they fall
            outside it or use a small part of it), ``"auto"`` (derived from the training images' percentiles and
            logged), or None (no check).
        intensity_percentiles: the percentiles of ``"auto"``.
        check_contents: open every file of the datalist before training (see
            :func:`~dsp_monai.data.datalist.read_datalist`); False checks the JSON and that the files exist.

    Returns:
        dict with the three item lists, the class names and the intensity range to use.

    Raises:
        DatalistError: every problem of the datalist, together.
        ExperimentError: a datalist that does not fit the configuration, a pool without an ACR, an empty part, or a
            split file written by other parameters or in an older format.
    """
    validated = read_datalist(datalist, check_contents=check_contents)
    _check_configuration(validated, num_classes, spatial_dims)
    request = _request(
        datalist=validated.path, acr=acr, weak_types=weak_types, split_index=split_index, num_splits=num_splits,
        seed=seed, fractions=fractions, training_types=training_types,
    )
    path = os.path.join(output_dir, split_file)
    if os.path.exists(path):
        scenario = _read_split(path)
        if scenario.extra.get("request") != request:
            raise ExperimentError(
                f"{path} was written for other experiment parameters: {scenario.extra.get('request')} (now "
                f"{request}); use another output_dir or delete the split file to start a new experiment."
            )
        logger.info("using the experiment items of %s", path)
    else:
        scenario = _new_scenario(validated, request, acr, weak_types, split_index, num_splits, seed, fractions,
                                 training_types)
    resolved = None
    if intensity_range is not None:
        if not validated.images:
            raise ExperimentError("checking intensity_range needs the datalist's content checks (check_contents).")
        resolved = resolve_intensity_range(validated, scenario.training, intensity_range, intensity_percentiles)
    if not os.path.exists(path):
        extra = {**scenario.extra, "intensity_range": resolved}
        save_scenario(dataclasses.replace(scenario, extra=extra), path)
        logger.info(
            "experiment: %d training (%s), %d validation, %d test items; written to %s",
            len(scenario.training), ", ".join(f"{k} {v}" for k, v in sorted(scenario.counts().items())),
            len(scenario.validation), len(scenario.test), path,
        )
    return {
        "training": scenario.training,
        "validation": scenario.validation,
        "test": scenario.test,
        "class_names": list(validated.class_names),
        "intensity_range": resolved,
        "spacing": resolve_spacing(validated, scenario.training) if validated.images else None,
    }


def _read_split(path: str) -> Scenario:
    """The split file of a run: the current format, or the unversioned one of earlier bundles (its ``parameters``
    are the experiment's request; it is read as it is and left unchanged)."""
    try:
        return load_scenario(path)
    except ValueError as error:
        with open(path, encoding="utf-8") as handle:
            try:
                content = json.load(handle)
            except ValueError:
                content = None
        earlier = (
            isinstance(content, dict) and "format_version" not in content
            and isinstance(content.get("parameters"), dict) and isinstance(content.get("class_names"), list)
            and all(isinstance(content.get(part), list) for part in PARTS)
        )
        if not earlier:
            raise ExperimentError(str(error)) from None
    parameters = content["parameters"]
    logger.info("%s is a split file of an earlier bundle (no format_version); its items are used as they are", path)
    return Scenario(
        training=content["training"], validation=content["validation"], test=content["test"], subvolumes={},
        acr=parameters.get("acr") or None, weak_types=tuple(parameters.get("weak_types") or ()),
        split_index=int(parameters.get("split_index", 0)), num_splits=int(parameters.get("num_splits", 1)),
        seed=int(parameters.get("seed", 0)), mode="sections",
        fractions=tuple(parameters.get("fractions") or (0.6, 0.2, 0.2)),
        extra={"request": parameters}, class_names=list(content["class_names"]),
    )


def _new_scenario(validated, request, acr, weak_types, split_index, num_splits, seed, fractions,
                  training_types) -> Scenario:
    if any(part in validated.sections for part in PARTS):
        parts, applied = _from_sections(validated, acr, weak_types, seed, split_index)
        scenario = Scenario(
            training=parts["training"], validation=parts["validation"], test=parts["test"], subvolumes={},
            acr=applied, weak_types=tuple(t for t in WEAK_TYPES if t in (weak_types or ())),
            split_index=int(split_index), num_splits=int(num_splits), seed=int(seed), mode="sections",
            fractions=tuple(float(f) for f in fractions),
        )
    else:
        if not acr:
            raise ExperimentError(
                f"{validated.path} is a pool of items without sections: give an ACR (acr=1 keeps every mask)."
            )
        scenario = make_scenario(
            validated.items("data"), acr, weak_types, split_index=split_index, num_splits=num_splits, seed=seed,
            fractions=fractions,
        )
    if training_types is not None:
        kept = set(training_types)
        unused = sorted({str(item.get(ANNOTATION_TYPE)) for item in scenario.training} - kept)
        if unused:
            logger.info("training_types %s: this method does not use the training items of types %s; they are left "
                        "out", list(training_types), unused)
        training = [item for item in scenario.training if item.get(ANNOTATION_TYPE) in kept]
        scenario = dataclasses.replace(scenario, training=training)
    for part in PARTS:
        if not getattr(scenario, part):
            raise ExperimentError(
                f"the {part} part of the experiment on {validated.path} is empty (parameters {request})."
            )
    return dataclasses.replace(scenario, class_names=list(validated.class_names), extra={"request": request})


def prepare_bundle_experiment(**kwargs) -> dict:
    """:func:`prepare_experiment` for the bundle's configuration: a datalist or experiment error ends the process
    with its message as the last line (:func:`bundle_errors`) instead of MONAI's wrapping ``RuntimeError``."""
    with bundle_errors():
        return prepare_experiment(**kwargs)
