"""Geometric dictionary transforms that move every annotation of an item together with its image.

Each transform changes the dense arrays of an item (images, the mask ``label`` and the ``valid`` mask) with MONAI's
array transforms (``Flip``, ``Rotate90``, ``SpatialCrop``, ``Pad``, ``Zoom``) and moves ``boxes`` and ``points``
with MONAI's box geometry (``monai.apps.detection.transforms.box_ops`` and ``monai.data.box_utils``), so that
deriving weak labels and transforming commute: for flips, 90-degree rotations and padding, transforming the derived
boxes, points and tags gives exactly what deriving from the transformed mask gives. Points are moved as the
one-pixel boxes ``[p, p + 1)``.

Annotation conventions (the record shared by the data pipeline, transforms and loss, defined in
:mod:`dsp_monai.annotations.vocabulary`): array order (row, column) / (z, y, x); boxes ``(N, 2 * ndim)`` int64 in
MONAI's ``StandardMode`` with exclusive ends and ``box_classes`` ``(N,)``; points ``(M, ndim)`` int64 with
``point_classes`` ``(M,)``; ``valid`` ``(1, *spatial)`` bool, False on padding. A missing key or None means that
annotation is absent; it stays absent. Coordinates follow the project's one policy: whole numbers (floats holding
whole numbers are accepted; a fractional coordinate is an error, never rounded).

What each operation does to annotations:

- flip, rot90: boxes and points move exactly; tags are unchanged.
- crop: boxes are clipped to the crop and dropped when nothing of them is left; points outside the crop are
  dropped. A clipped box still contains every pixel of its object inside the crop, so "a class is impossible
  outside its boxes" stays true, but a box cut by the crop need not be tight any more (a row of the clipped box may
  hold no pixel of the object when the object continues outside the crop). Tags: if the item has a mask with no
  unknown pixel in the valid part of the crop, the tags are recomputed from it. Otherwise (weakly labelled items)
  a tag only says the class is somewhere in the *uncropped* image: ``tags_on_crop="drop"`` (default) removes the
  tags of a cropped item (always truthful; the item then counts as unlabelled for that sample), ``"keep"`` keeps
  them (still a truthful bound on the classes the crop can contain, but a tagged class may be absent from the
  crop). A crop that keeps the whole image changes nothing. Deriving weak labels *after* the geometry
  (:class:`dsp_monai.transforms.weak_labels.DeriveWeakLabelsd` placed after the crop) avoids both caveats.
- pad: boxes and points shift; padded pixels get ``valid = False``, ``label = ignore_index`` and a configurable
  image value; tags are unchanged.
- zoom: images are interpolated (bilinear by default), ``label`` and ``valid`` with PyTorch's ``nearest-exact``.
  Boxes and points are mapped through the very index map that nearest-exact sampling uses: a box becomes the
  output pixels that sample it, which for zoom factors >= 1 is exactly the box derived from the zoomed mask. When
  zooming out, thin parts of an object can fall between samples: the box still covers every zoomed pixel of its
  object but need not be tight (derive after zooming when the mask is available); a box that no output pixel
  samples is dropped. A point moves to the middle of the output pixels that sample it, so it stays on its class,
  and is dropped when no output pixel samples it. ``keep_size`` restores the input size by a centred crop or pad,
  with the rules above.

Order in a training chain: load, :class:`AddValidMaskd`, the geometric transforms, then
:class:`~dsp_monai.transforms.weak_labels.DeriveWeakLabelsd` (weak labels of exactly the crop the network sees)
and last :class:`~dsp_monai.transforms.views.WeakStrongViewsd`. Deriving before the geometry also works (and is
cached by ``CacheDataset``), with the crop caveats above.

Example:
    >>> chain = Compose([
    ...     AddValidMaskd("image"),
    ...     AnnotatedRandFlipd(prob=0.5), AnnotatedRandRotate90d(prob=0.5),
    ...     AnnotatedSpatialPadd(128), AnnotatedRandSpatialCropd(128),
    ...     DeriveWeakLabelsd("label"), WeakStrongViewsd("image"),
    ... ])
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.apps.detection.transforms.box_ops import flip_boxes, rot90_boxes
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.data.box_utils import spatial_crop_boxes
from monai.transforms import Flip, MapTransform, Pad, Randomizable, Rotate90, SpatialCrop, Zoom

from dsp_monai.annotations.vocabulary import (
    ANNOTATION_TYPE,
    BOX_CLASSES,
    BOXES,
    IGNORE_VALUE,
    LABEL,
    POINT_CLASSES,
    POINTS,
    TAGS,
    VALID,
    whole_numbers,
)

__all__ = [
    "AddValidMaskd",
    "AnnotatedRandClassCropd",
    "AnnotatedFlipd",
    "AnnotatedRandFlipd",
    "AnnotatedRandRotate90d",
    "AnnotatedRandSpatialCropd",
    "AnnotatedRandZoomd",
    "AnnotatedRotate90d",
    "AnnotatedSpatialCropd",
    "AnnotatedSpatialPadd",
    "AnnotatedZoomd",
    "isotropic_planes",
]


_TAG_POLICIES = ("drop", "keep")
_PAD_METHODS = ("symmetric", "end")


def _spatial_shape(value) -> tuple[int, ...]:
    return tuple(int(s) for s in value.shape[1:])


def _plain(value) -> torch.Tensor:
    """``value`` as a plain tensor (MetaTensor metadata dropped; numpy and lists converted)."""
    if isinstance(value, MetaTensor):
        return value.as_tensor()
    return torch.as_tensor(value if isinstance(value, torch.Tensor) else np.asarray(value))


class AddValidMaskd(MapTransform):
    """Add the ``valid`` mask: a ``(1, *spatial)`` bool tensor of ones shaped like the reference key.

    Place it before any padding; the padding transforms of this module then set ``valid = False`` where they pad.

    Args:
        keys: the reference key (a single image key, channel-first).
        valid_key: the key written.
        overwrite: replace an existing ``valid`` (default False: an existing mask is kept).
        allow_missing_keys: do nothing when the reference key is missing.

    Example:
        >>> AddValidMaskd("image")({"image": torch.zeros(1, 4, 5)})["valid"].shape
        torch.Size([1, 4, 5])
    """

    def __init__(
        self,
        keys: KeysCollection = "image",
        valid_key: str = "valid",
        overwrite: bool = False,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if len(self.keys) != 1:
            raise ValueError(f"AddValidMaskd takes one reference key, got {self.keys}.")
        self.valid_key = valid_key
        self.overwrite = overwrite

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            if d.get(self.valid_key) is None or self.overwrite:
                d[self.valid_key] = torch.ones((1, *_spatial_shape(d[key])), dtype=torch.bool)
        return d


class _AnnotatedGeometry(MapTransform):
    """Shared key handling of the annotated geometric transforms (not public: use the subclasses)."""

    def __init__(
        self,
        image_keys: KeysCollection = ("image",),
        label_key: str | None = LABEL,
        valid_key: str | None = VALID,
        boxes_key: str = BOXES,
        box_classes_key: str = BOX_CLASSES,
        points_key: str = POINTS,
        point_classes_key: str = POINT_CLASSES,
        tags_key: str = TAGS,
        ignore_index: int = IGNORE_VALUE,
        image_pad_value: float = 0.0,
        tags_on_crop: str = "drop",
    ) -> None:
        image_keys = (image_keys,) if isinstance(image_keys, str) else tuple(image_keys)
        dense = image_keys + tuple(k for k in (label_key, valid_key) if k is not None)
        super().__init__(dense, allow_missing_keys=True)
        if tags_on_crop not in _TAG_POLICIES:
            raise ValueError(f"tags_on_crop must be one of {_TAG_POLICIES}, got {tags_on_crop!r}.")
        self.image_keys = image_keys
        self.label_key = label_key
        self.valid_key = valid_key
        self.box_keys = (boxes_key, box_classes_key)
        self.point_keys = (points_key, point_classes_key)
        self.tags_key = tags_key
        self.ignore_index = int(ignore_index)
        self.image_pad_value = float(image_pad_value)
        self.tags_on_crop = tags_on_crop

    def _dense(self, d: Mapping) -> list[tuple[str, str]]:
        """``(key, kind)`` of every dense array present; kind is ``image``, ``label`` or ``valid``."""
        found = []
        for key in self.keys:
            if d.get(key) is None:
                continue
            kind = "label" if key == self.label_key else "valid" if key == self.valid_key else "image"
            found.append((key, kind))
        return found

    def _shape(self, d: Mapping) -> tuple[int, ...]:
        """The spatial shape shared by all dense arrays of the item."""
        dense = self._dense(d)
        if not dense:
            raise KeyError(
                f"{type(self).__name__} found none of its dense keys {list(self.keys)} in the item "
                f"(keys: {sorted(map(str, d))})."
            )
        shapes = {key: _spatial_shape(d[key]) for key, _ in dense}
        if len(set(shapes.values())) != 1:
            raise ValueError(f"{type(self).__name__}: the dense arrays differ in spatial shape: {shapes}.")
        shape = next(iter(shapes.values()))
        if len(shape) not in (2, 3):
            raise ValueError(f"{type(self).__name__} supports 2D and 3D items, got spatial shape {shape}.")
        return shape

    def _annotations(self, d: Mapping, keys: tuple[str, str], ndim: int, kind: str) -> torch.Tensor | None:
        """Boxes ``(N, 2 * ndim)`` or points ``(M, ndim)`` as int64, or None; checks the class list's length."""
        coords_key, classes_key = keys
        value = d.get(coords_key)
        if value is None:
            return None
        width = 2 * ndim if kind == "boxes" else ndim
        coords = whole_numbers(_plain(value), coords_key)
        if coords.numel() == 0:
            coords = coords.reshape(0, width)
        if coords.ndim != 2 or coords.shape[1] != width:
            raise ValueError(
                f"{coords_key} must have shape (N, {width}) for a {ndim}D item, got {tuple(coords.shape)}."
            )
        classes = d.get(classes_key)
        if classes is not None and len(classes) != coords.shape[0]:
            raise ValueError(
                f"{coords_key} holds {coords.shape[0]} entries but {classes_key} holds {len(classes)}."
            )
        return coords.to(torch.int64)

    def _tensors(self, d: dict) -> None:
        """Convert dense numpy arrays of ``d`` to tensors (MONAI's padding and zoom need tensors)."""
        for key, _ in self._dense(d):
            if not isinstance(d[key], torch.Tensor):
                d[key] = torch.as_tensor(np.asarray(d[key]))

    def _move(self, d: dict, box_fn, shape: tuple[int, ...], kinds: Sequence[str] = ("boxes", "points")) -> None:
        """Apply ``box_fn(boxes) -> (boxes, keep)`` to boxes and to points (as one-pixel boxes)."""
        ndim = len(shape)
        for kind, keys in (("boxes", self.box_keys), ("points", self.point_keys)):
            if kind not in kinds:
                continue
            coords = self._annotations(d, keys, ndim, kind)
            if coords is None:
                continue
            boxes = coords if kind == "boxes" else torch.cat([coords, coords + 1], 1)
            moved, keep = box_fn(boxes)
            moved = torch.as_tensor(moved).to(torch.int64).reshape(-1, 2 * ndim)
            d[keys[0]] = moved if kind == "boxes" else moved[:, :ndim].contiguous()
            classes = d.get(keys[1])
            if classes is not None:
                d[keys[1]] = _plain(classes).to(torch.int64).reshape(-1)[_plain(keep).to(torch.bool)]

    @staticmethod
    def _all_kept(boxes: torch.Tensor):
        return boxes, torch.ones(boxes.shape[0], dtype=torch.bool)

    def flip(self, d: Mapping, axes: Sequence[int]) -> dict:
        """Flip ``d`` along the given spatial axes (deterministic core of the flip transforms)."""
        d = dict(d)
        shape = self._shape(d)
        self._tensors(d)
        axes = tuple(int(a) % len(shape) for a in axes)
        if not axes:
            return d
        flipper = Flip(spatial_axis=axes)
        for key, _ in self._dense(d):
            d[key] = flipper(d[key])
        self._move(d, lambda b: self._all_kept(flip_boxes(b, shape, axes)), shape)
        return d

    def rotate90(self, d: Mapping, k: int, spatial_axes: tuple[int, int]) -> dict:
        """Rotate ``d`` by ``k`` quarter turns from the first spatial axis towards the second."""
        d = dict(d)
        shape = self._shape(d)
        self._tensors(d)
        k = int(k) % 4
        if k == 0:
            return d
        rotator = Rotate90(k=k, spatial_axes=spatial_axes)
        for key, _ in self._dense(d):
            d[key] = rotator(d[key])
        self._move(d, lambda b: self._all_kept(rot90_boxes(b, shape, k, tuple(spatial_axes))), shape)
        return d

    def crop(self, d: Mapping, roi_start: Sequence[int], roi_end: Sequence[int]) -> dict:
        """Crop ``d`` to ``[roi_start, roi_end)`` (clipped to the image); see the module docstring for annotations."""
        d = dict(d)
        shape = self._shape(d)
        self._tensors(d)
        if len(roi_start) != len(shape) or len(roi_end) != len(shape):
            raise ValueError(
                f"roi_start and roi_end need {len(shape)} values for a {len(shape)}D item, "
                f"got {list(roi_start)} and {list(roi_end)}."
            )
        start = [min(max(int(s), 0), size) for s, size in zip(roi_start, shape)]
        end = [min(max(int(e), s), size) for e, s, size in zip(roi_end, start, shape)]
        if start == [0] * len(shape) and end == list(shape):
            return d
        cropper = SpatialCrop(roi_start=start, roi_end=end)
        for key, _ in self._dense(d):
            d[key] = cropper(d[key])
        self._move(d, lambda b: spatial_crop_boxes(b, start, end, remove_empty=True), shape)
        self._crop_tags(d)
        return d

    def _crop_tags(self, d: dict) -> None:
        """Keep ``tags`` truthful after a crop (recompute from a complete mask, else apply ``tags_on_crop``)."""
        if d.get(self.tags_key) is None:
            return
        label = d.get(self.label_key) if self.label_key is not None else None
        if label is not None:
            values = _plain(label)[0]
            valid = d.get(self.valid_key) if self.valid_key is not None else None
            inside = torch.ones_like(values, dtype=torch.bool) if valid is None else _plain(valid)[0].bool()
            known = values != self.ignore_index
            if bool((known | ~inside).all()):
                d[self.tags_key] = torch.unique(values[inside & known].to(torch.int64))
                return
        if self.tags_on_crop == "drop":
            d[self.tags_key] = None

    def pad(self, d: Mapping, before: Sequence[int], after: Sequence[int]) -> dict:
        """Pad ``d`` by ``before`` / ``after`` pixels per spatial axis; padding is invalid and unlabelled."""
        d = dict(d)
        shape = self._shape(d)
        self._tensors(d)
        before = [int(b) for b in before]
        after = [int(a) for a in after]
        if len(before) != len(shape) or len(after) != len(shape) or min(before + after) < 0:
            raise ValueError(
                f"pad widths must be {len(shape)} non-negative values per side, got before={before}, after={after}."
            )
        if not any(before + after):
            return d
        widths = [(0, 0)] + list(zip(before, after))
        for key, kind in self._dense(d):
            value = d[key]
            if kind == "valid":
                d[key] = Pad(widths, mode="constant")(value.to(torch.uint8), value=0).bool()
            elif kind == "label":
                d[key] = Pad(widths, mode="constant")(value, value=self.ignore_index)
            else:
                d[key] = Pad(widths, mode="constant")(value, value=self.image_pad_value)
        new_shape = [s + b + a for s, b, a in zip(shape, before, after)]
        start = [-b for b in before]
        end = [n - b for n, b in zip(new_shape, before)]
        self._move(d, lambda b: spatial_crop_boxes(b, start, end, remove_empty=True), shape)
        return d

    def zoom(self, d: Mapping, factors: Sequence[float], image_mode: str = "bilinear") -> dict:
        """Zoom ``d`` by ``factors`` (output size ``floor(size * factor)``); see the module docstring."""
        d = dict(d)
        shape = self._shape(d)
        self._tensors(d)
        factors = [float(f) for f in factors]
        if len(factors) != len(shape) or min(factors) <= 0:
            raise ValueError(f"zoom needs {len(shape)} positive factors for a {len(shape)}D item, got {factors}.")
        if all(f == 1.0 for f in factors):
            return d
        new_shape = [int(np.floor(s * f)) for s, f in zip(shape, factors)]
        if min(new_shape) < 1:
            raise ValueError(f"zoom {factors} turns spatial shape {shape} into an empty shape {new_shape}.")
        for key, kind in self._dense(d):
            value = d[key]
            if kind == "image":
                d[key] = Zoom(factors, mode=image_mode, keep_size=False)(value)
            else:
                dtype = value.dtype
                zoomed = Zoom(factors, mode="nearest-exact", keep_size=False)(value)
                d[key] = zoomed.bool() if kind == "valid" else zoomed.round().to(dtype)
        sources = [_nearest_exact_sources(shape, factors, axis) for axis in range(len(shape))]
        ndim = len(shape)

        def zoom_boxes(boxes: torch.Tensor):
            mapped = torch.empty_like(boxes)
            for axis, source in enumerate(sources):
                mapped[:, axis] = torch.searchsorted(source, boxes[:, axis].contiguous(), right=False)
                mapped[:, axis + ndim] = torch.searchsorted(source, boxes[:, axis + ndim].contiguous(), right=False)
            keep = (mapped[:, ndim:] > mapped[:, :ndim]).all(1)
            return mapped[keep], keep

        self._move_zoom(d, zoom_boxes, shape)
        return d

    def _move_zoom(self, d: dict, zoom_boxes, shape: tuple[int, ...]) -> None:
        """Zoom boxes through the index map; points go to the middle of the pixels that sample them."""
        ndim = len(shape)
        self._move(d, zoom_boxes, shape, kinds=("boxes",))
        points = self._annotations(d, self.point_keys, ndim, "points")
        if points is None:
            return
        spans, keep = zoom_boxes(torch.cat([points, points + 1], 1))
        moved = (spans[:, :ndim] + spans[:, ndim:] - 1) // 2
        d[self.point_keys[0]] = moved.to(torch.int64)
        classes = d.get(self.point_keys[1])
        if classes is not None:
            d[self.point_keys[1]] = _plain(classes).to(torch.int64).reshape(-1)[keep]

    def centre_to(self, d: Mapping, size: Sequence[int]) -> dict:
        """Centre-crop or centre-pad ``d`` to ``size`` (odd remainders go to the end)."""
        shape = self._shape(d)
        start = [max(s - t, 0) // 2 for s, t in zip(shape, size)]
        end = [st + min(s, t) for st, s, t in zip(start, shape, size)]
        d = self.crop(d, start, end)
        shape = self._shape(d)
        before = [max(t - s, 0) // 2 for s, t in zip(shape, size)]
        after = [max(t - s, 0) - b for s, t, b in zip(shape, size, before)]
        return self.pad(d, before, after)


def _nearest_exact_sources(shape: Sequence[int], factors: Sequence[float], axis: int) -> torch.Tensor:
    """Input index along ``axis`` sampled by each output index when zooming with ``nearest-exact``.

    Computed by zooming an index ramp with the call MONAI's ``Zoom`` makes (same dimensionality, float32 as
    ``Zoom`` computes in), so it matches the zoomed label exactly, boundary roundings included. The other axes of
    the ramp are only as long as needed to keep an output of at least one pixel.
    """
    sizes = [int(shape[a]) if a == axis else max(1, int(np.ceil(1.0 / f))) for a, f in enumerate(factors)]
    view = [1] * len(shape)
    view[axis] = int(shape[axis])
    ramp = torch.arange(int(shape[axis]), dtype=torch.float32).reshape(view).expand(sizes)[None, None]
    sampled = torch.nn.functional.interpolate(
        ramp.contiguous(), scale_factor=list(factors), mode="nearest-exact", recompute_scale_factor=True
    )
    index = [0] * len(shape)
    index[axis] = slice(None)
    return sampled[(0, 0, *index)].round().to(torch.int64).contiguous()


_SHARED_ARGS_DOC = """
        image_keys: keys of images (interpolated bilinearly on zoom; padded with ``image_pad_value``).
        label_key: key of the mask (nearest-exact on zoom; padded with ``ignore_index``); None if there is none.
        valid_key: key of the valid mask (padded with False); None if there is none.
        boxes_key, box_classes_key, points_key, point_classes_key, tags_key: annotation keys.
        ignore_index: label value of unknown pixels.
        image_pad_value: value written into padded image pixels.
        tags_on_crop: ``"drop"`` or ``"keep"``: what a crop does to the tags of an item without a complete mask
            (see the module docstring).
"""


class AnnotatedFlipd(_AnnotatedGeometry):
    """Flip images, mask, valid mask, boxes and points along the given spatial axes.

    Args:
        spatial_axes: spatial axes to flip (0 = rows / z).
    """

    __doc__ += _SHARED_ARGS_DOC

    def __init__(self, spatial_axes: Sequence[int] | int = 0, **kwargs) -> None:
        super().__init__(**kwargs)
        self.spatial_axes = (spatial_axes,) if isinstance(spatial_axes, int) else tuple(spatial_axes)

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        return self.flip(data, self.spatial_axes)


class AnnotatedRandFlipd(Randomizable, _AnnotatedGeometry):
    """Flip each spatial axis independently with probability ``prob``, moving every annotation with it.

    Args:
        prob: probability of flipping each axis.
        spatial_axes: the axes that may be flipped; None means all.
    """

    __doc__ += _SHARED_ARGS_DOC

    def __init__(self, prob: float = 0.5, spatial_axes: Sequence[int] | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f"prob must be in [0, 1], got {prob}.")
        self.prob = float(prob)
        self.spatial_axes = None if spatial_axes is None else tuple(spatial_axes)
        self._axes: tuple[int, ...] = ()

    def randomize(self, ndim: int) -> None:
        candidates = range(ndim) if self.spatial_axes is None else self.spatial_axes
        self._axes = tuple(a for a in candidates if self.R.random_sample() < self.prob)

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        self.randomize(len(self._shape(data)))
        return self.flip(data, self._axes)


class AnnotatedRotate90d(_AnnotatedGeometry):
    """Rotate by ``k`` quarter turns in the plane of ``spatial_axes`` (from the first axis towards the second).

    Args:
        k: number of quarter turns.
        spatial_axes: the two spatial axes spanning the rotation plane.
    """

    __doc__ += _SHARED_ARGS_DOC

    def __init__(self, k: int = 1, spatial_axes: tuple[int, int] = (0, 1), **kwargs) -> None:
        super().__init__(**kwargs)
        self.k = int(k)
        self.spatial_axes = tuple(spatial_axes)

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        return self.rotate90(data, self.k, self.spatial_axes)


class AnnotatedRandRotate90d(Randomizable, _AnnotatedGeometry):
    """With probability ``prob``, rotate by ``k`` quarter turns, ``k`` uniform in ``1..max_k``.

    Args:
        prob: probability of rotating.
        max_k: largest number of quarter turns.
        spatial_axes: the two spatial axes spanning the rotation plane. Non-square planes change shape.
    """

    __doc__ += _SHARED_ARGS_DOC

    def __init__(self, prob: float = 0.5, max_k: int = 3, spatial_axes: tuple[int, int] = (0, 1), **kwargs) -> None:
        super().__init__(**kwargs)
        if not 0.0 <= prob <= 1.0 or int(max_k) < 1:
            raise ValueError(f"prob must be in [0, 1] and max_k >= 1, got prob={prob}, max_k={max_k}.")
        self.prob = float(prob)
        self.max_k = int(max_k)
        self.spatial_axes = tuple(spatial_axes)
        self._k = 0

    def randomize(self, data: object = None) -> None:
        rotate = self.R.random_sample() < self.prob
        self._k = int(self.R.randint(self.max_k)) + 1 if rotate else 0

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        self.randomize()
        return self.rotate90(data, self._k, self.spatial_axes)


class AnnotatedSpatialCropd(_AnnotatedGeometry):
    """Crop to ``[roi_start, roi_end)`` (spatial indices, clipped to the image), moving every annotation.

    Args:
        roi_start: first index of the crop per spatial axis.
        roi_end: end (exclusive) of the crop per spatial axis.
    """

    __doc__ += _SHARED_ARGS_DOC

    def __init__(self, roi_start: Sequence[int], roi_end: Sequence[int], **kwargs) -> None:
        super().__init__(**kwargs)
        self.roi_start = tuple(int(s) for s in roi_start)
        self.roi_end = tuple(int(e) for e in roi_end)

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        return self.crop(data, self.roi_start, self.roi_end)


class AnnotatedRandSpatialCropd(Randomizable, _AnnotatedGeometry):
    """Crop a window of ``roi_size`` at a uniformly random position, moving every annotation.

    Axes shorter than ``roi_size`` are kept whole (pad first with :class:`AnnotatedSpatialPadd` for a fixed size).

    Args:
        roi_size: crop size per spatial axis (an int applies to every axis).
    """

    __doc__ += _SHARED_ARGS_DOC

    def __init__(self, roi_size: Sequence[int] | int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.roi_size = roi_size
        self._start: list[int] = []

    def _size(self, shape: tuple[int, ...]) -> list[int]:
        size = [self.roi_size] * len(shape) if isinstance(self.roi_size, int) else list(self.roi_size)
        if len(size) != len(shape) or min(size) < 1:
            raise ValueError(f"roi_size must be {len(shape)} positive values for a {len(shape)}D item, got {size}.")
        return [min(int(r), s) for r, s in zip(size, shape)]

    def randomize(self, shape: tuple[int, ...]) -> None:
        self._start = [int(self.R.randint(s - r + 1)) for s, r in zip(shape, self._size(shape))]

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        shape = self._shape(data)
        self.randomize(shape)
        end = [s + r for s, r in zip(self._start, self._size(shape))]
        return self.crop(data, self._start, end)


class AnnotatedSpatialPadd(_AnnotatedGeometry):
    """Pad to at least ``spatial_size``; padding gets ``valid = False`` and ``label = ignore_index``.

    Args:
        spatial_size: minimal size per spatial axis (an int applies to every axis; axes already larger stay).
        method: ``"symmetric"`` (odd remainders go to the end) or ``"end"`` (all padding after the image).
    """

    __doc__ += _SHARED_ARGS_DOC

    def __init__(self, spatial_size: Sequence[int] | int, method: str = "symmetric", **kwargs) -> None:
        super().__init__(**kwargs)
        if method not in _PAD_METHODS:
            raise ValueError(f"method must be one of {_PAD_METHODS}, got {method!r}.")
        self.spatial_size = spatial_size
        self.method = method

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        shape = self._shape(data)
        size = [self.spatial_size] * len(shape) if isinstance(self.spatial_size, int) else list(self.spatial_size)
        if len(size) != len(shape):
            raise ValueError(f"spatial_size must have {len(shape)} values for a {len(shape)}D item, got {size}.")
        total = [max(int(t) - s, 0) for s, t in zip(shape, size)]
        before = [t // 2 if self.method == "symmetric" else 0 for t in total]
        after = [t - b for t, b in zip(total, before)]
        return self.pad(data, before, after)


class AnnotatedZoomd(_AnnotatedGeometry):
    """Zoom by fixed ``zoom`` factors, moving every annotation (see the module docstring).

    Args:
        zoom: factor per spatial axis (a float applies to every axis); output size is ``floor(size * zoom)``.
        image_mode: interpolation of images (``"bilinear"``, ``"area"``, ... as in ``torch.nn.functional.interpolate``).
        keep_size: centre-crop or centre-pad back to the input size.
    """

    __doc__ += _SHARED_ARGS_DOC

    def __init__(
        self, zoom: Sequence[float] | float, image_mode: str = "bilinear", keep_size: bool = False, **kwargs
    ) -> None:
        super().__init__(**kwargs)
        self.zoom_factors = zoom
        self.image_mode = image_mode
        self.keep_size = keep_size

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        shape = self._shape(data)
        factors = [self.zoom_factors] * len(shape) if np.isscalar(self.zoom_factors) else list(self.zoom_factors)
        out = self.zoom(data, factors, self.image_mode)
        return self.centre_to(out, shape) if self.keep_size else out


class AnnotatedRandZoomd(Randomizable, _AnnotatedGeometry):
    """With probability ``prob``, zoom by factors drawn uniformly from ``[min_zoom, max_zoom]``.

    Scalar bounds draw one factor for all axes (isotropic); sequences draw one factor per axis.

    Args:
        prob: probability of zooming.
        min_zoom: smallest factor (scalar or per axis).
        max_zoom: largest factor (scalar or per axis).
        image_mode: interpolation of images.
        keep_size: centre-crop or centre-pad back to the input size (default True, so batches keep their shape).
    """

    __doc__ += _SHARED_ARGS_DOC

    def __init__(
        self,
        prob: float = 0.5,
        min_zoom: Sequence[float] | float = 0.9,
        max_zoom: Sequence[float] | float = 1.1,
        image_mode: str = "bilinear",
        keep_size: bool = True,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        low, high = np.atleast_1d(np.asarray(min_zoom, float)), np.atleast_1d(np.asarray(max_zoom, float))
        if not 0.0 <= prob <= 1.0 or low.shape != high.shape or np.any(low <= 0) or np.any(high < low):
            raise ValueError(
                f"need prob in [0, 1] and 0 < min_zoom <= max_zoom of equal length, got prob={prob}, "
                f"min_zoom={min_zoom}, max_zoom={max_zoom}."
            )
        self.prob = float(prob)
        self.min_zoom, self.max_zoom = low, high
        self.image_mode = image_mode
        self.keep_size = keep_size
        self._factors: list[float] | None = None

    def randomize(self, ndim: int) -> None:
        if self.R.random_sample() >= self.prob:
            self._factors = None
            return
        drawn = self.R.uniform(self.min_zoom, self.max_zoom)
        if drawn.size == 1:
            drawn = np.repeat(drawn, ndim)
        elif drawn.size != ndim:
            raise ValueError(f"min_zoom / max_zoom have {drawn.size} values but the item is {ndim}D.")
        self._factors = [float(f) for f in drawn]

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        shape = self._shape(data)
        self.randomize(len(shape))
        if self._factors is None:
            return dict(data)
        out = self.zoom(data, self._factors, self.image_mode)
        return self.centre_to(out, shape) if self.keep_size else out


def isotropic_planes(ndim: int, spacing: Sequence[float] | None = None, tolerance: float = 0.01) -> list[tuple]:
    """The planes ``(a, b)`` (``a < b``) of spatial axes with equal voxel size, where a quarter turn maps the voxel
    grid onto itself without stretching anything: every plane when ``spacing`` is None (isotropic), none for an
    FIB-SEM stack of 10.48 x 8 x 8 nm but ``(1, 2)``.

    Args:
        ndim: 2 or 3.
        spacing: voxel size per spatial axis, or None.
        tolerance: relative difference below which two sizes count as equal.

    Raises:
        ValueError: when ``spacing`` does not have ``ndim`` positive values.

    Example:
        >>> isotropic_planes(3, (10.48, 8.0, 8.0))
        [(1, 2)]
    """
    pairs = [(a, b) for a in range(ndim) for b in range(a + 1, ndim)]
    if spacing is None:
        return pairs
    size = [float(v) for v in spacing]
    if len(size) != ndim or min(size) <= 0:
        raise ValueError(f"spacing must have {ndim} positive values, got {list(spacing)}.")
    return [(a, b) for a, b in pairs if abs(size[a] - size[b]) <= tolerance * max(size[a], size[b])]


class AnnotatedRandClassCropd(Randomizable, _AnnotatedGeometry):
    """Crop a window of ``roi_size`` that contains a voxel of a class drawn uniformly among the classes the item
    locates, so that rare and small classes appear in training patches as often as large ones (the MONAI idea of
    ``RandCropByLabelClassesd`` with equal ratios, moving every annotation of the item with the crop).

    The classes an item locates, and the voxels a class is drawn from:

    - an item with a mask (``annotation_type`` ``"mask"`` or no such key): every voxel of the class in the mask
      (the ignore value is no class);
    - boxes present in the item: every voxel of a box of the class (a box drawn uniformly, then a voxel in it);
    - points present in the item: the class's points.

    A weakly annotated item whose boxes or points are derived from its mask *after* the crop (the paper's simulated
    scenarios, :class:`~dsp_monai.transforms.weak_labels.DeriveWeakLabelsd`) locates nothing yet and, like a tagged
    or unannotated item, gets a uniformly random window, so its crop never uses the mask it stands in for. With
    probability ``1 - prob`` every item gets a uniform window. The window then lies uniformly among the positions
    that contain the drawn voxel. Axes shorter than ``roi_size`` are kept whole (pad first for a fixed size).

    Args:
        roi_size: crop size per spatial axis (an int applies to every axis).
        prob: probability of a class-centred window (else uniform).
        annotation_type_key: the item key naming its annotation type.
    """

    __doc__ += _SHARED_ARGS_DOC

    def __init__(self, roi_size: Sequence[int] | int, prob: float = 1.0, annotation_type_key: str = ANNOTATION_TYPE,
                 **kwargs) -> None:
        super().__init__(**kwargs)
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f"prob must be in [0, 1], got {prob}.")
        self.uniform = AnnotatedRandSpatialCropd(roi_size, **kwargs)
        self.prob = float(prob)
        self.annotation_type_key = annotation_type_key

    def set_random_state(self, seed=None, state=None) -> AnnotatedRandClassCropd:
        super().set_random_state(seed, state)
        self.uniform.set_random_state(state=self.R)
        return self

    def _sources(self, d: Mapping, ndim: int) -> dict[int, list]:
        """class -> list of ``("mask", flat indices)``, ``("boxes", (N, 2 * ndim))``, ``("points", (M, ndim))``."""
        sources: dict[int, list] = {}
        label = d.get(self.label_key) if self.label_key is not None else None
        if label is not None and d.get(self.annotation_type_key, "mask") == "mask":
            flat = _plain(label).reshape(-1).to(torch.int64).numpy()
            for value in np.unique(flat):
                if int(value) != self.ignore_index:
                    sources.setdefault(int(value), []).append(("mask", np.flatnonzero(flat == value)))
        for kind, keys in (("boxes", self.box_keys), ("points", self.point_keys)):
            coords = self._annotations(d, keys, ndim, kind)
            classes = d.get(keys[1])
            if coords is None or classes is None or coords.shape[0] == 0:
                continue
            classes = _plain(classes).to(torch.int64).reshape(-1).numpy()
            for value in np.unique(classes):
                sources.setdefault(int(value), []).append((kind, coords.numpy()[classes == value]))
        return sources

    def _voxel(self, source, shape: tuple[int, ...]) -> list[int]:
        kind, values = source
        if kind == "mask":
            return [int(v) for v in np.unravel_index(int(values[self.R.randint(len(values))]), shape)]
        row = values[self.R.randint(len(values))]
        if kind == "points":
            return [int(v) for v in row]
        ndim = len(shape)
        return [int(self.R.randint(row[a], row[a + ndim])) for a in range(ndim)]

    def randomize(self, d: Mapping, shape: tuple[int, ...]) -> list[int] | None:
        """The start of a window containing a drawn class voxel, or None for a uniform window."""
        centred = self.R.random_sample() < self.prob
        sources = self._sources(d, len(shape)) if centred else {}
        if not sources:
            return None
        classes = sorted(sources)
        options = sources[classes[self.R.randint(len(classes))]]
        voxel = self._voxel(options[self.R.randint(len(options))], shape)
        size = self.uniform._size(shape)
        return [int(self.R.randint(max(0, v - r + 1), min(v, s - r) + 1)) for v, r, s in zip(voxel, size, shape)]

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        shape = self._shape(data)
        start = self.randomize(data, shape)
        if start is None:
            return self.uniform(data)
        end = [b + r for b, r in zip(start, self.uniform._size(shape))]
        return self.crop(data, start, end)
