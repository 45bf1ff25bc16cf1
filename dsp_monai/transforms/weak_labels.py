"""Weak annotations derived from full masks: image-level tags, boxes and points (docs/method.md §9).

The derivation follows the paper's protocol for experiments in which weak annotations are simulated from masks:

- tags: the unique classes of the mask, the ignore value excluded;
- boxes: one per connected component of each class, its bounding box in array order with exclusive ends
  (MONAI's ``StandardMode``: 2D ``[r0, c0, r1, c1]``, 3D ``[z0, y0, x0, z1, y1, x1]``);
- points: one per connected component, at the component's medoid, the pixel of the component with the smallest
  summed Euclidean distance to the component's other pixels, by the project's one rule
  (:func:`dsp_monai.annotations.from_masks.component_medoids`). Unlike the centroid it always lies inside the
  component.

Pixels holding the ignore value are *unknown*: they belong to no component and their class is not listed. A tag
list or a box set derived from a mask with unknown pixels is therefore only known to be complete on the known
pixels; :class:`DeriveWeakLabelsd` can mark the unknown pixels invalid so that no annotation claims more than the
mask showed (``unknown_policy``).

Outputs are torch tensors: ``tags`` int64 ``(T,)`` sorted ascending; ``boxes`` int64 ``(N, 2 * ndim)`` with
``box_classes`` int64 ``(N,)``; ``points`` int64 ``(M, ndim)`` with ``point_classes`` int64 ``(M,)``. Boxes and
points are ordered by class, then by the raster order of each component's first pixel (``scipy.ndimage.label``).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, Transform
from scipy import ndimage

from dsp_monai.annotations.from_masks import component_medoids, connectivity_structure
from dsp_monai.annotations.vocabulary import (
    ANNOTATION_TYPE,
    ANNOTATION_TYPES,
    BOX_CLASSES,
    BOXES,
    BOXES_EXHAUSTIVE,
    IGNORE_VALUE,
    LABEL,
    POINT_CLASSES,
    POINTS,
    TAGS,
    VALID,
    WEAK_TYPES,
)

__all__ = ["DeriveWeakLabels", "DeriveWeakLabelsd"]

_UNKNOWN_POLICIES = ("invalidate", "keep")


def _as_label_array(label: np.ndarray | torch.Tensor, name: str = "label") -> np.ndarray:
    """The channel-first ``(1, *spatial)`` label as a ``(*spatial)`` integer numpy array."""
    array = label.detach().cpu().numpy() if isinstance(label, torch.Tensor) else np.asarray(label)
    if array.ndim not in (3, 4) or array.shape[0] != 1:
        raise ValueError(
            f"{name} must be channel-first with one channel, (1, H, W) or (1, D, H, W), got shape {array.shape}."
        )
    if array.dtype.kind == "f":
        rounded = np.rint(array)
        if not np.array_equal(rounded, array):
            raise ValueError(f"{name} must hold integer class ids, got non-integer values of dtype {array.dtype}.")
        array = rounded
    elif array.dtype.kind not in "iub":
        raise ValueError(f"{name} must hold integer class ids, got dtype {array.dtype}.")
    return array[0].astype(np.int64, copy=False)


class DeriveWeakLabels(Transform):
    """Derive image-level tags, per-component boxes and per-component medoid points from a full mask.

    Args:
        types: which weak types to produce, any subset of ``("tags", "boxes", "points")``.
        connectivity: neighbourhood defining connected components, as in ``scipy.ndimage.generate_binary_structure``:
            1 = faces only (4-connectivity in 2D, 6 in 3D) up to ``ndim`` = faces, edges and corners (8 / 26).
            ``None`` means ``ndim`` (full connectivity, the default of ``skimage.measure.label``).
        ignore_index: label value of unknown pixels; they belong to no class and no component.
        exclude_classes: classes that receive no boxes and no points (e.g. a background class). Tags always list
            every class present: leaving a present class out of the tags would make them claim that its pixels
            cannot exist. When an excluded class is present, the boxes do not cover every present class and
            ``boxes_exhaustive`` is False.
        spacing: per-axis voxel size used when measuring distances for the medoid (``None``: isotropic).

    Calling it on a channel-first label ``(1, *spatial)`` returns a dict holding, for each requested type,
    ``tags``; ``boxes``, ``box_classes`` and ``boxes_exhaustive``; ``points`` and ``point_classes`` (see the module
    docstring for dtypes and order). ``boxes_exhaustive`` is True when every present class has its boxes and the
    mask has no unknown pixels (inside ``valid``, when given).

    Raises:
        ValueError: for an unknown type, a connectivity outside ``1..ndim`` or a label of the wrong shape or dtype.

    Example:
        >>> label = torch.zeros(1, 6, 6, dtype=torch.int64)
        >>> label[0, 1:3, 2:5] = 1
        >>> DeriveWeakLabels()(label)["boxes"]
        tensor([[0, 0, 6, 6],
                [1, 2, 3, 5]])
    """

    def __init__(
        self,
        types: Sequence[str] = WEAK_TYPES,
        connectivity: int | None = None,
        ignore_index: int = IGNORE_VALUE,
        exclude_classes: Sequence[int] = (),
        spacing: Sequence[float] | None = None,
    ) -> None:
        types = (types,) if isinstance(types, str) else tuple(types)
        unknown = [t for t in types if t not in WEAK_TYPES]
        if unknown:
            raise ValueError(f"types must be a subset of {WEAK_TYPES}, got unknown type(s) {unknown}.")
        if connectivity is not None and (isinstance(connectivity, bool) or int(connectivity) != connectivity):
            raise ValueError(f"connectivity must be an integer in 1..ndim or None, got {connectivity!r}.")
        self.types = types
        self.connectivity = connectivity
        self.ignore_index = int(ignore_index)
        self.exclude_classes = frozenset(int(c) for c in exclude_classes)
        self.spacing = None if spacing is None else tuple(float(s) for s in spacing)

    def _structure(self, ndim: int) -> np.ndarray:
        return connectivity_structure(ndim, self.connectivity)

    def __call__(
        self,
        label: np.ndarray | torch.Tensor,
        types: Sequence[str] | None = None,
        valid: np.ndarray | torch.Tensor | None = None,
    ) -> dict:
        """Derive the weak annotations of one mask.

        Args:
            label: channel-first integer mask ``(1, *spatial)`` (2D or 3D).
            types: overrides ``self.types`` for this call.
            valid: optional ``(1, *spatial)`` bool mask; unknown pixels outside it (padding) do not make the
                boxes non-exhaustive.

        Returns:
            A dict with the keys of the requested types (see the class docstring).
        """
        types = self.types if types is None else ((types,) if isinstance(types, str) else tuple(types))
        unknown = [t for t in types if t not in WEAK_TYPES]
        if unknown:
            raise ValueError(f"types must be a subset of {WEAK_TYPES}, got unknown type(s) {unknown}.")
        mask = _as_label_array(label)
        ndim = mask.ndim
        if self.spacing is not None and len(self.spacing) != ndim:
            raise ValueError(f"spacing must have {ndim} values for a {ndim}D label, got {self.spacing}.")
        known = mask != self.ignore_index
        if valid is None:
            complete = bool(known.all())
        else:
            inside = _as_label_array(valid, "valid").astype(bool)
            if inside.shape != mask.shape:
                raise ValueError(f"valid has spatial shape {inside.shape} but the label has {mask.shape}.")
            complete = bool((known | ~inside).all())
        classes = np.unique(mask[known])
        result: dict = {}
        if "tags" in types:
            result[TAGS] = torch.as_tensor(classes, dtype=torch.int64)
        want_boxes, want_points = "boxes" in types, "points" in types
        if not (want_boxes or want_points):
            return result
        boxed = [int(c) for c in classes if int(c) not in self.exclude_classes]
        if want_boxes:
            structure = self._structure(ndim)
            boxes, box_classes = [], []
            for cls in boxed:
                components, _ = ndimage.label(mask == cls, structure=structure)
                for region in ndimage.find_objects(components):
                    boxes.append([s.start for s in region] + [s.stop for s in region])
                    box_classes.append(cls)
            result[BOXES] = torch.as_tensor(np.asarray(boxes, dtype=np.int64).reshape(-1, 2 * ndim))
            result[BOX_CLASSES] = torch.as_tensor(np.asarray(box_classes, dtype=np.int64))
            excluded_present = bool(self.exclude_classes.intersection(int(c) for c in classes))
            result[BOXES_EXHAUSTIVE] = complete and not excluded_present
        if want_points:
            points, point_classes = component_medoids(
                mask, boxed, self.connectivity, self.spacing, self.ignore_index
            )
            result[POINTS] = torch.as_tensor(points)
            result[POINT_CLASSES] = torch.as_tensor(point_classes)
        return result


class DeriveWeakLabelsd(MapTransform):
    """Dictionary wrapper of :class:`DeriveWeakLabels` that also applies each item's ``annotation_type``.

    Two modes:

    - ``annotation_type_key`` is None: derive every type in ``types`` and keep the mask (all annotations at once,
      e.g. for inspection or evaluation).
    - ``annotation_type_key`` names a key (default ``"annotation_type"``, written by
      :func:`dsp_monai.data.scenarios.make_scenario`): the item keeps exactly the annotation its type names.
      ``"mask"`` keeps the mask; ``"tags"``, ``"boxes"`` and ``"points"`` derive that type and, with
      ``hide_label``, replace the mask by the ignore value everywhere (same shape and dtype, so batches still
      stack); ``"none"`` only hides the mask. Annotation keys of the other types are set to None, so every item
      carries the same keys.

    Weak annotations already present in the item (a datalist that ships boxes, for instance) are kept as they are;
    they are derived only when the key is missing or None and a mask is there to derive them from.

    Unknown pixels (``ignore_index``) make derived tags and boxes incomplete: a class may hide there. With
    ``unknown_policy="invalidate"`` (default) the unknown pixels of an item whose tags or boxes were derived get
    ``valid = False`` (the key is created from the label's shape when missing), so the tags and boxes are exact on
    every pixel that takes part in training. ``"keep"`` leaves ``valid`` alone (tags then constrain unknown pixels
    to the classes seen elsewhere; boxes are still marked non-exhaustive).

    Keys read: ``label_key``, ``annotation_type_key``, ``valid_key``, and existing weak annotation keys.
    Keys written: ``tags``, ``boxes``, ``box_classes``, ``boxes_exhaustive``, ``points``, ``point_classes``
    (names configurable), ``label_key`` (when hidden) and ``valid_key`` (when invalidated).

    Args:
        keys: the mask key (a single key; MONAI's ``keys`` argument).
        types: types derived when ``annotation_type_key`` is None.
        annotation_type_key: item key naming the item's annotation type, or None (see above).
        connectivity: see :class:`DeriveWeakLabels`.
        ignore_index: see :class:`DeriveWeakLabels`.
        exclude_classes: see :class:`DeriveWeakLabels`.
        spacing: see :class:`DeriveWeakLabels`.
        hide_label: replace the mask of weakly and un-annotated items by ``ignore_index``.
        unknown_policy: ``"invalidate"`` or ``"keep"`` (see above).
        valid_key: key of the valid mask ``(1, *spatial)`` bool.
        tags_key, boxes_key, box_classes_key, boxes_exhaustive_key, points_key, point_classes_key: output names.
        allow_missing_keys: do nothing when the mask key is missing.

    Raises:
        ValueError: for an unknown ``annotation_type`` value or option.
        KeyError: when ``annotation_type_key`` is set and an item lacks it, or a weak type must be derived but the
            item has no mask.

    Example:
        >>> derive = DeriveWeakLabelsd("label")
        >>> item = derive({"label": label, "annotation_type": "boxes"})
        >>> item["boxes"], item["tags"]  # boxes derived, tags None, label now all 255
    """

    def __init__(
        self,
        keys: KeysCollection = LABEL,
        types: Sequence[str] = WEAK_TYPES,
        annotation_type_key: str | None = ANNOTATION_TYPE,
        connectivity: int | None = None,
        ignore_index: int = IGNORE_VALUE,
        exclude_classes: Sequence[int] = (),
        spacing: Sequence[float] | None = None,
        hide_label: bool = True,
        unknown_policy: str = "invalidate",
        valid_key: str = VALID,
        tags_key: str = TAGS,
        boxes_key: str = BOXES,
        box_classes_key: str = BOX_CLASSES,
        boxes_exhaustive_key: str = BOXES_EXHAUSTIVE,
        points_key: str = POINTS,
        point_classes_key: str = POINT_CLASSES,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if len(self.keys) != 1:
            raise ValueError(f"DeriveWeakLabelsd derives from one mask key, got keys {self.keys}.")
        if unknown_policy not in _UNKNOWN_POLICIES:
            raise ValueError(f"unknown_policy must be one of {_UNKNOWN_POLICIES}, got {unknown_policy!r}.")
        self.deriver = DeriveWeakLabels(types, connectivity, ignore_index, exclude_classes, spacing)
        self.annotation_type_key = annotation_type_key
        self.hide_label = hide_label
        self.unknown_policy = unknown_policy
        self.valid_key = valid_key
        self.output_keys = {
            "tags": (tags_key,),
            "boxes": (boxes_key, box_classes_key, boxes_exhaustive_key),
            "points": (points_key, point_classes_key),
        }
        self._output_names = {
            "tags": tags_key,
            "boxes": boxes_key,
            "box_classes": box_classes_key,
            "boxes_exhaustive": boxes_exhaustive_key,
            "points": points_key,
            "point_classes": point_classes_key,
        }

    def _requested(self, data: Mapping[Hashable, object]) -> tuple[tuple[str, ...], bool]:
        """The weak types the item should carry, and whether its mask stays."""
        if self.annotation_type_key is None:
            return self.deriver.types, True
        if self.annotation_type_key not in data:
            raise KeyError(
                f"item has no {self.annotation_type_key!r} key (one of {ANNOTATION_TYPES}); set it with "
                f"dsp_monai.data.scenarios.make_scenario or pass annotation_type_key=None to derive "
                f"{self.deriver.types} for every item. Item keys: {sorted(map(str, data))}."
            )
        kind = data[self.annotation_type_key]
        if kind not in ANNOTATION_TYPES:
            raise ValueError(f"{self.annotation_type_key} must be one of {ANNOTATION_TYPES}, got {kind!r}.")
        if kind == "mask":
            return (), True
        if kind == "none":
            return (), False
        return (kind,), False

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        (label_key,) = self.keys
        label = d.get(label_key)
        if label_key not in d and not self.allow_missing_keys:
            raise KeyError(f"DeriveWeakLabelsd needs the mask under {label_key!r}; item keys: {sorted(map(str, d))}.")
        wanted, keep_label = self._requested(d)
        to_derive = [t for t in wanted if d.get(self.output_keys[t][0]) is None]
        if to_derive and label is None:
            raise KeyError(
                f"cannot derive {to_derive}: the item has neither those annotations nor a mask under {label_key!r}."
            )
        if to_derive:
            derived = self.deriver(label, types=to_derive, valid=d.get(self.valid_key))
            for name, value in derived.items():
                d[self._output_names[name]] = value
            if self.unknown_policy == "invalidate" and {"tags", "boxes"}.intersection(to_derive):
                self._invalidate_unknown(d, label, derived)
        if self.annotation_type_key is not None:
            for kind, names in self.output_keys.items():
                if kind not in wanted:
                    for name in names:
                        d[name] = None
        if not keep_label and self.hide_label and label is not None:
            d[label_key] = self._hidden(label)
        return d

    def _invalidate_unknown(self, d: dict, label: np.ndarray | torch.Tensor, derived: dict) -> None:
        """Mark unknown pixels invalid; the derived boxes are then exhaustive on the valid region."""
        mask = _as_label_array(label)
        unknown = torch.as_tensor(mask == self.deriver.ignore_index)[None]
        valid = d.get(self.valid_key)
        valid = torch.ones_like(unknown) if valid is None else torch.as_tensor(valid).to(torch.bool)
        if tuple(valid.shape) != tuple(unknown.shape):
            raise ValueError(
                f"{self.valid_key} has shape {tuple(valid.shape)} but the mask has shape {tuple(unknown.shape)}."
            )
        unknown = unknown.to(valid.device)
        if not bool((unknown & valid).any()):
            return
        d[self.valid_key] = valid & ~unknown
        if "boxes" in derived:
            present = {int(c) for c in np.unique(mask[mask != self.deriver.ignore_index])}
            d[self._output_names["boxes_exhaustive"]] = not self.deriver.exclude_classes.intersection(present)

    def _hidden(self, label: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
        """A copy of ``label`` holding only the ignore value (same type, shape, dtype and metadata)."""
        if isinstance(label, torch.Tensor):
            return torch.full_like(label, self.deriver.ignore_index)
        return np.full_like(np.asarray(label), self.deriver.ignore_index)
