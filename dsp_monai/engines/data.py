"""From a datalist to the training, validation and test items of one experiment, and their transform chains.

Two kinds of datalist are accepted (format: docs/datalist.md):

- a *pool* of fully annotated items carrying a ``subvolume`` id (the synthetic default, OpenOrganelle slices): the
  paper's protocol applies; a cross-sub-volume split and an annotation compression rate (ACR) turn it into a
  scenario (:func:`dsp_monai.data.scenarios.make_scenario`) whose weakly annotated items get their tags, boxes or
  points derived from their masks at load time;
- explicit ``training`` / ``validation`` / ``test`` sections (a user's own data): the items are used as given; each
  training item's annotation type is read off its keys (a ``label`` -> mask, else its tags, boxes or points, else
  none), unless an ACR is requested, which then applies to the training section as to a pool.

The experiment's items are written to a split file in the output folder, and a later run with the same
parameters reads it back, so a resumed run trains on exactly the same items.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence

import numpy as np
from monai import transforms as mt

from dsp_monai.data.datalist import load_datalist
from dsp_monai.data.readers import MultiFormatReader
from dsp_monai.data.scenarios import assign_annotation_types, make_scenario
from dsp_monai.transforms.geometry import (
    AddValidMaskd,
    AnnotatedRandFlipd,
    AnnotatedRandRotate90d,
    AnnotatedRandSpatialCropd,
    AnnotatedSpatialPadd,
)
from dsp_monai.transforms.views import WeakStrongViewsd
from dsp_monai.transforms.weak_labels import DeriveWeakLabelsd

__all__ = [
    "FillMissingLabeld",
    "check_images",
    "infer_annotation_type",
    "prepare_experiment",
    "training_transforms",
    "evaluation_transforms",
    "inference_transforms",
]

logger = logging.getLogger(__name__)

WEAK_KEYS = (("tags", "tags"), ("boxes", "boxes"), ("points", "points"))


def infer_annotation_type(item: Mapping) -> str:
    """The annotation type a user's item carries: ``mask`` with a label, else tags / boxes / points, else none.

    An item with several weak types is typed by the first of tags, boxes, points; every annotation it holds is still
    used by the loss.
    """
    if item.get("label") is not None:
        return "mask"
    for key, kind in WEAK_KEYS:
        if item.get(key) is not None:
            return kind
    return "none"


def _experiment_key(**parameters) -> dict:
    return {k: (list(v) if isinstance(v, (tuple, list)) else v) for k, v in parameters.items()}


def _check_num_classes(datalist, class_names, num_classes) -> None:
    if num_classes is not None and int(num_classes) != len(class_names):
        raise ValueError(
            f"{datalist} defines {len(class_names)} classes {list(class_names)} but the configuration's num_classes is "
            f"{num_classes}; set num_classes to {len(class_names)} (e.g. --num_classes {len(class_names)}) or fix the "
            "datalist's class_names"
        )


def prepare_experiment(
    datalist: str,
    output_dir: str,
    acr: float | None = 8,
    weak_types: Sequence[str] = ("tags", "boxes", "points"),
    split_index: int = 0,
    num_splits: int = 5,
    seed: int = 0,
    fractions: Sequence[float] = (0.6, 0.2, 0.2),
    training_types: Sequence[str] | None = None,
    split_file: str = "split.json",
    num_classes: int | None = None,
    spatial_dims: int | None = None,
) -> dict:
    """The items of one experiment: ``{"training", "validation", "test": [items], "class_names": [...]}``.

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
        spatial_dims: the network's spatial dimensionality; the first image (and label) of every part is read and
            checked against it before training starts.

    Returns:
        dict with the three item lists and the class names.

    Raises:
        ValueError: for a pool without an ACR, an empty part, a split file written by different parameters, or a
            class count that differs from the datalist's, or images of another dimensionality than
            ``spatial_dims`` or whose label has another shape.
    """
    parameters = _experiment_key(
        datalist=os.path.abspath(datalist), acr=acr, weak_types=weak_types, split_index=split_index,
        num_splits=num_splits, seed=seed, fractions=fractions, training_types=training_types,
    )
    path = os.path.join(output_dir, split_file)
    if os.path.exists(path):
        with open(path) as handle:
            saved = json.load(handle)
        if saved.get("parameters") != parameters:
            raise ValueError(
                f"{path} was written for other experiment parameters: {saved.get('parameters')} (now {parameters}); "
                "use another output_dir or delete the split file to start a new experiment"
            )
        logger.info("using the experiment items of %s", path)
        _check_num_classes(datalist, saved["class_names"], num_classes)
        result = {key: saved[key] for key in ("training", "validation", "test", "class_names")}
        check_images(result, spatial_dims, datalist)
        return result

    with open(datalist) as handle:
        content = json.load(handle)
    present = [part for part in ("training", "validation", "test") if isinstance(content, dict) and part in content]
    if present:
        parts = {"training": [], "validation": [], "test": []}
        for part in present:
            parts[part], class_names = load_datalist(datalist, part)
        unmasked = sum(item.get("label") is None for item in parts["training"])
        if acr and not unmasked:
            parts["training"] = assign_annotation_types(parts["training"], acr, weak_types, seed, split_index)
        else:
            if acr:
                logger.warning(
                    "acr=%s does not apply to %s: %d of its %d training items carry no mask, so every item keeps the "
                    "annotations it has (set acr to 0 or null to say so and silence this message)",
                    acr, datalist, unmasked, len(parts["training"]),
                )
            for item in parts["training"]:
                item.setdefault("annotation_type", infer_annotation_type(item))
    else:
        if not acr:
            raise ValueError(f"{datalist} is a pool of items without sections: give an ACR (acr=1 keeps every mask)")
        items, class_names = load_datalist(datalist, "data")
        scenario = make_scenario(
            items, acr, weak_types, split_index=split_index, num_splits=num_splits, seed=seed,
            fractions=fractions,
        )
        parts = {"training": scenario.training, "validation": scenario.validation, "test": scenario.test}
    if training_types is not None:
        unused = sorted({str(i.get("annotation_type")) for i in parts["training"]} - set(training_types))
        if unused:
            logger.info("training_types %s: this method does not use the training items of types %s; they are left "
                        "out", list(training_types), unused)
        parts["training"] = [i for i in parts["training"] if i.get("annotation_type") in set(training_types)]
    _check_num_classes(datalist, class_names, num_classes)
    for part, part_items in parts.items():
        if not part_items:
            raise ValueError(f"the {part} part of the experiment on {datalist} is empty (parameters {parameters})")
    result = {**parts, "class_names": list(class_names)}
    check_images(result, spatial_dims, datalist)
    os.makedirs(output_dir, exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as handle:
        json.dump({"parameters": parameters, **result}, handle, indent=1)
    os.replace(tmp, path)
    counts = {}
    for item in parts["training"]:
        counts[item.get("annotation_type")] = counts.get(item.get("annotation_type"), 0) + 1
    logger.info(
        "experiment: %d training (%s), %d validation, %d test items; written to %s",
        len(parts["training"]), ", ".join(f"{k} {v}" for k, v in sorted(counts.items())), len(parts["validation"]),
        len(parts["test"]), path,
    )
    return result


def _spatial_shape(path: str, reader: MultiFormatReader) -> tuple:
    array, meta = reader.get_data(reader.read(path))
    shape = tuple(int(s) for s in np.shape(array))
    channel = meta.get("original_channel_dim", float("nan"))
    if isinstance(channel, (int, np.integer)) and not isinstance(channel, bool):
        shape = shape[:channel] + shape[channel + 1 :]
    return shape


def check_images(experiment: Mapping, spatial_dims: int | None, datalist: str) -> None:
    """Reads the first item of every part and checks that its image has ``spatial_dims`` spatial axes and that its
    label, if any, has the image's spatial shape; raises a ValueError naming the datalist, part, item and path."""
    if spatial_dims is None:
        return
    reader = MultiFormatReader(class_names=experiment["class_names"])
    for part in ("training", "validation", "test"):
        if not experiment.get(part):
            continue
        item = experiment[part][0]
        shape = _spatial_shape(item["image"], reader)
        if len(shape) != int(spatial_dims):
            raise ValueError(
                f"{datalist}: {part} item 0 ({item['image']}) is a {len(shape)}D image of spatial shape {list(shape)}, "
                f"but the network expects {spatial_dims}D images (spatial_dims: {spatial_dims}); cut 2D slices "
                "(zarr: ?axis=z&index=..) or use a 3D configuration"
            )
        if item.get("label") is not None:
            label_shape = _spatial_shape(item["label"], reader)
            if label_shape != shape:
                raise ValueError(
                    f"{datalist}: {part} item 0: the label {item['label']} has spatial shape {list(label_shape)} but "
                    f"the image {item['image']} has {list(shape)}; they must match"
                )


class FillMissingLabeld(mt.MapTransform):
    """Gives an item without a mask an all-ignore label of its image's spatial shape, so every item of a batch has
    one (images carrying only weak annotations, or none).

    Args:
        label_key: the label key.
        image_key: the image whose spatial shape the label takes (channel first).
        ignore_index: the value of unlabelled pixels.
    """

    def __init__(self, label_key: str = "label", image_key: str = "image", ignore_index: int = 255) -> None:
        super().__init__([label_key], allow_missing_keys=True)
        self.label_key, self.image_key, self.ignore_index = label_key, image_key, ignore_index

    def __call__(self, data):
        d = dict(data)
        if d.get(self.label_key) is None:
            image = d[self.image_key]
            d[self.label_key] = image.new_full((1, *image.shape[1:]), self.ignore_index)
        return d


def _loading(class_names, intensity_range) -> list:
    low, high = intensity_range
    return [
        mt.LoadImaged(["image", "label"], reader=MultiFormatReader(class_names=class_names), allow_missing_keys=True,
                      image_only=True),
        mt.EnsureChannelFirstd(["image", "label"], channel_dim="no_channel", allow_missing_keys=True),
        mt.ScaleIntensityRanged("image", a_min=low, a_max=high, b_min=0.0, b_max=1.0, clip=True),
        mt.EnsureTyped("image", dtype="float32"),
        FillMissingLabeld("label", "image"),
    ]


def training_transforms(
    class_names: Sequence[str],
    roi_size: Sequence[int] | int,
    intensity_range: Sequence[float] = (0.0, 255.0),
    flip_prob: float = 0.5,
    rotate90_prob: float = 0.5,
    strong_view: bool = True,
    views: Mapping | None = None,
) -> mt.Compose:
    """Load -> intensity scaling -> valid mask -> random flips / quarter turns -> pad and random crop to
    ``roi_size`` -> weak labels of each item's annotation type -> weak / strong views.

    Args:
        class_names: the datalist's classes (zarr label crops are mapped onto them).
        roi_size: training crop size per spatial axis (smaller images are padded; padding is marked invalid).
        intensity_range: raw intensities mapped linearly onto [0, 1] (clipped).
        flip_prob: probability of flipping each axis.
        rotate90_prob: probability of a random quarter turn.
        strong_view: add ``image_strong`` (FixMatch-style strong augmentation); off for the masks-only baseline.
        views: keyword arguments of :class:`~dsp_monai.transforms.views.WeakStrongViewsd`.

    Returns:
        One flat chain; a :class:`monai.data.CacheDataset` caches its deterministic prefix (up to the first random
        transform), so images are read and scaled once.
    """
    chain = [*_loading(class_names, intensity_range), AddValidMaskd("image")]
    chain += [
        AnnotatedRandFlipd(prob=flip_prob),
        AnnotatedRandRotate90d(prob=rotate90_prob),
        AnnotatedSpatialPadd(roi_size),
        AnnotatedRandSpatialCropd(roi_size),
        DeriveWeakLabelsd("label"),
    ]
    if strong_view:
        chain.append(WeakStrongViewsd("image", **dict(views or {})))
    chain.append(mt.EnsureTyped("label", dtype="int64"))
    return mt.Compose(chain)


def inference_transforms(class_names: Sequence[str], intensity_range: Sequence[float] = (0.0, 255.0)) -> mt.Compose:
    """Load (image only) -> channel first -> intensity scaling, for segmenting new images."""
    low, high = intensity_range
    return mt.Compose([
        mt.LoadImaged("image", reader=MultiFormatReader(class_names=class_names), image_only=True),
        mt.EnsureChannelFirstd("image", channel_dim="no_channel"),
        mt.ScaleIntensityRanged("image", a_min=low, a_max=high, b_min=0.0, b_max=1.0, clip=True),
        mt.EnsureTyped("image", dtype="float32"),
    ])


def evaluation_transforms(class_names: Sequence[str], intensity_range: Sequence[float] = (0.0, 255.0)) -> mt.Compose:
    """Load -> intensity scaling -> int64 label (255 = not annotated)."""
    return mt.Compose([*_loading(class_names, intensity_range), mt.EnsureTyped("label", dtype="int64")])
