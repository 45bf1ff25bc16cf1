"""The transform chains of an experiment's items: training (with weak labels and views), evaluation and inference.

The items themselves come from :func:`dsp_monai.data.experiment.prepare_experiment` (datalist -> split -> items).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from monai import transforms as mt

from dsp_monai.annotations.vocabulary import IGNORE_VALUE, IMAGE, LABEL
from dsp_monai.data.readers import MultiFormatReader
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
    "training_transforms",
    "evaluation_transforms",
    "inference_transforms",
]


class FillMissingLabeld(mt.MapTransform):
    """Gives an item without a mask an all-ignore label of its image's spatial shape, so every item of a batch has
    one (images carrying only weak annotations, or none).

    Args:
        label_key: the label key.
        image_key: the image whose spatial shape the label takes (channel first).
        ignore_index: the value of unlabelled pixels.
    """

    def __init__(self, label_key: str = LABEL, image_key: str = IMAGE, ignore_index: int = IGNORE_VALUE) -> None:
        super().__init__([label_key], allow_missing_keys=True)
        self.label_key, self.image_key, self.ignore_index = label_key, image_key, ignore_index

    def __call__(self, data):
        d = dict(data)
        if d.get(self.label_key) is None:
            image = d[self.image_key]
            d[self.label_key] = image.new_full((1, *image.shape[1:]), self.ignore_index)
        return d


def _intensity_bounds(intensity_range) -> tuple:
    if isinstance(intensity_range, str):
        raise ValueError(
            f"intensity_range {intensity_range!r} must be resolved to [low, high] first: "
            "dsp_monai.data.experiment.prepare_experiment(..., intensity_range='auto') returns it"
        )
    low, high = intensity_range
    return low, high


def _loading(class_names, intensity_range) -> list:
    low, high = _intensity_bounds(intensity_range)
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
    low, high = _intensity_bounds(intensity_range)
    return mt.Compose([
        mt.LoadImaged("image", reader=MultiFormatReader(class_names=class_names), image_only=True),
        mt.EnsureChannelFirstd("image", channel_dim="no_channel"),
        mt.ScaleIntensityRanged("image", a_min=low, a_max=high, b_min=0.0, b_max=1.0, clip=True),
        mt.EnsureTyped("image", dtype="float32"),
    ])


def evaluation_transforms(class_names: Sequence[str], intensity_range: Sequence[float] = (0.0, 255.0)) -> mt.Compose:
    """Load -> intensity scaling -> int64 label (255 = not annotated)."""
    return mt.Compose([*_loading(class_names, intensity_range), mt.EnsureTyped("label", dtype="int64")])
