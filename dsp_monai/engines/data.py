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
    AnnotatedRandClassCropd,
    AnnotatedRandFlipd,
    AnnotatedRandRotate90d,
    AnnotatedRandSpatialCropd,
    AnnotatedSpatialPadd,
    isotropic_planes,
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
    spacing: Sequence[float] | None = None,
    class_crop_prob: float | None = None,
) -> mt.Compose:
    """Load -> intensity scaling -> valid mask -> random flips / quarter turns -> pad and random crop to
    ``roi_size`` -> weak labels of each item's annotation type -> weak / strong views.

    2D and 3D alike: the dimensionality is the images'. Quarter turns happen only in the planes of axes with equal
    voxel size (:func:`~dsp_monai.transforms.geometry.isotropic_planes` of ``spacing``; one plane drawn uniformly
    per item when there are several, none when there is none), so an anisotropic volume is never stretched.

    Args:
        class_names: the datalist's classes (zarr label crops are mapped onto them).
        roi_size: training crop size per spatial axis (smaller images are padded; padding is marked invalid).
        intensity_range: raw intensities mapped linearly onto [0, 1] (clipped).
        flip_prob: probability of flipping each axis.
        rotate90_prob: probability of a random quarter turn.
        strong_view: add ``image_strong`` (FixMatch-style strong augmentation); off for the masks-only baseline.
        views: keyword arguments of :class:`~dsp_monai.transforms.views.WeakStrongViewsd`.
        spacing: voxel size per spatial axis (the experiment's, :func:`~dsp_monai.data.experiment.resolve_spacing`):
            the rotation planes, and the distances of the derived medoid points; None means isotropic.
        class_crop_prob: None for uniformly random crops; else the probability that a crop is centred on a voxel of
            a class drawn uniformly among those the item locates
            (:class:`~dsp_monai.transforms.geometry.AnnotatedRandClassCropd`).

    Returns:
        One flat chain; a :class:`monai.data.CacheDataset` caches its deterministic prefix (up to the first random
        transform), so images are read and scaled once.
    """
    chain = [*_loading(class_names, intensity_range), AddValidMaskd("image"), AnnotatedRandFlipd(prob=flip_prob)]
    ndim = len(roi_size) if isinstance(roi_size, Sequence) else len(spacing) if spacing is not None else 2
    rotations = [AnnotatedRandRotate90d(prob=rotate90_prob, spatial_axes=plane)
                 for plane in isotropic_planes(ndim, spacing)]
    if len(rotations) > 1:
        chain.append(mt.OneOf(rotations))
    else:
        chain += rotations
    chain += [
        AnnotatedSpatialPadd(roi_size),
        AnnotatedRandSpatialCropd(roi_size) if class_crop_prob is None
        else AnnotatedRandClassCropd(roi_size, prob=class_crop_prob),
        DeriveWeakLabelsd("label", spacing=spacing),
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
