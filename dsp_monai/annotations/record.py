"""The per-image annotation record: its keys, and the parsing of one image's entries into checked tensors.

One record (a dict) per image; a missing key or None means that annotation type is absent for the image:

- ``label``: integer mask of the image's spatial shape (optionally with a leading channel of 1); the ignore value
  (default 255) marks unannotated pixels;
- ``tags``: 1-D integer tensor of the classes present in the image;
- ``boxes``: (N, 2 * ndim) integer boxes in array order, start inclusive, end exclusive (2D ``[r0, c0, r1, c1]``,
  3D ``[z0, y0, x0, z1, y1, x1]``), with ``box_classes`` (N,);
- ``points``: (M, ndim) integer pixel positions in array order, with ``point_classes`` (M,);
- ``valid``: bool mask of the spatial shape (optionally with a leading channel of 1); False marks padding;
- ``boxes_exhaustive``: bool, default True: every object of every class present in the image has a box.

The keys and the coordinate policy (whole numbers; floats accepted when they hold whole numbers) are those of
:mod:`dsp_monai.annotations.vocabulary`; torch tensor subclasses (MONAI's MetaTensor) are read as plain tensors.
This module knows nothing of MONAI.
"""

from collections.abc import Mapping, Sequence
from typing import Any, List, NamedTuple, Optional

import numpy as np
import torch

from .vocabulary import (
    BOX_CLASSES,
    BOXES,
    BOXES_EXHAUSTIVE,
    LABEL,
    POINT_CLASSES,
    POINTS,
    RECORD_KEYS,
    TAGS,
    VALID,
    AnnotationError,
    whole_numbers,
)

__all__ = [
    "BOXES",
    "BOXES_EXHAUSTIVE",
    "BOX_CLASSES",
    "LABEL",
    "POINTS",
    "POINT_CLASSES",
    "RECORD_KEYS",
    "TAGS",
    "VALID",
]

_PER_IMAGE_KEYS = (TAGS, BOXES, BOX_CLASSES, POINTS, POINT_CLASSES, BOXES_EXHAUSTIVE)


def image_error(index: int, message: str) -> ValueError:
    """A ValueError whose message starts with the image index, as every annotation error does."""
    return ValueError(f"image {index}: {message}")


def _plain_tensor(value: Any, index: int, name: str) -> torch.Tensor:
    """``value`` as a plain ``torch.Tensor`` (tensor subclasses such as MONAI's MetaTensor are unwrapped)."""
    if isinstance(value, torch.Tensor):
        return value.as_subclass(torch.Tensor) if type(value) is not torch.Tensor else value
    try:
        return torch.as_tensor(value)
    except (TypeError, ValueError, RuntimeError) as error:
        raise TypeError(
            f"image {index}: {name} must be a tensor, an array or a nested list of numbers; got {type(value).__name__}"
        ) from error


def _whole_numbers(tensor: torch.Tensor, index: int, name: str) -> torch.Tensor:
    """``tensor`` as int64 under the coordinate policy of :func:`~dsp_monai.annotations.vocabulary.whole_numbers`."""
    if tensor.dtype == torch.bool or tensor.is_complex():
        raise TypeError(f"image {index}: {name} must hold integers; got dtype {tensor.dtype}")
    try:
        return whole_numbers(tensor, name)
    except AnnotationError as error:
        raise image_error(index, str(error)) from None


def _spatial_mask(value, index, name, spatial_shape, device) -> torch.Tensor:
    """An image-sized entry (``label`` or ``valid``) as a (*spatial) tensor, dropping a leading channel of 1."""
    tensor = _plain_tensor(value, index, name).to(device)
    shape = tuple(tensor.shape)
    if shape == tuple(spatial_shape):
        return tensor
    if shape == (1, *spatial_shape):
        return tensor[0]
    raise ValueError(
        f"image {index}: {name} must have the spatial shape {list(spatial_shape)} (or [1, *spatial]); "
        f"got shape {list(shape)}"
    )


def parse_label(value, index: int, spatial_shape: Sequence[int], device) -> torch.Tensor:
    """The ``label`` entry as an int64 (*spatial) tensor (values are checked later, for the whole batch)."""
    return _whole_numbers(_spatial_mask(value, index, LABEL, spatial_shape, device), index, LABEL)


def parse_valid(value, index: int, spatial_shape: Sequence[int], device) -> torch.Tensor:
    """The ``valid`` entry as a bool (*spatial) tensor; integer or float masks must hold only 0 and 1."""
    tensor = _spatial_mask(value, index, VALID, spatial_shape, device)
    if tensor.dtype == torch.bool:
        return tensor
    binary = (tensor == 0) | (tensor == 1)
    if not bool(binary.all()):
        position = tuple(int(i) for i in (~binary).nonzero()[0])
        raise ValueError(
            f"image {index}: valid must be a bool mask (or hold only 0 and 1); got {tensor[position].item()} at "
            f"pixel {position}"
        )
    return tensor != 0


class ImageEntries(NamedTuple):
    """One image's sparse annotations, shape-checked, as int64 tensors (None where absent)."""

    tags: Optional[torch.Tensor]
    boxes: Optional[torch.Tensor]
    box_classes: Optional[torch.Tensor]
    points: Optional[torch.Tensor]
    point_classes: Optional[torch.Tensor]
    boxes_exhaustive: bool


def _rows(value, index, name, width, device) -> torch.Tensor:
    """A (N, width) integer entry; an empty entry of any shape counts as (0, width)."""
    tensor = _whole_numbers(_plain_tensor(value, index, name).to(device), index, name)
    if tensor.numel() == 0:
        return tensor.reshape(0, width)
    if tensor.dim() != 2 or tensor.shape[1] != width:
        raise ValueError(f"image {index}: {name} must have shape (N, {width}); got shape {list(tensor.shape)}")
    return tensor


def _vector(value, index, name, device) -> torch.Tensor:
    tensor = _whole_numbers(_plain_tensor(value, index, name).to(device), index, name)
    if tensor.numel() == 0:
        return tensor.reshape(0)
    if tensor.dim() != 1:
        raise ValueError(f"image {index}: {name} must be a 1-D tensor; got shape {list(tensor.shape)}")
    return tensor


def _paired(rows, classes, index, rows_name, classes_name, device, width):
    """Parses an entry and its classes (boxes / box_classes, points / point_classes); both or neither."""
    if rows is None and classes is None:
        return None, None
    if rows is None or classes is None:
        given, missing = (rows_name, classes_name) if classes is None else (classes_name, rows_name)
        raise ValueError(f"image {index}: {given} given without {missing}; give both or neither")
    rows = _rows(rows, index, rows_name, width, device)
    classes = _vector(classes, index, classes_name, device)
    if classes.shape[0] != rows.shape[0]:
        raise ValueError(
            f"image {index}: {classes_name} must have one entry per row of {rows_name}: expected "
            f"{rows.shape[0]}, got {classes.shape[0]}"
        )
    return rows, classes


def _exhaustive(value, index) -> bool:
    if value is None:
        return True
    if isinstance(value, torch.Tensor) and value.numel() == 1 and value.dtype == torch.bool:
        return bool(value.item())
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise TypeError(f"image {index}: {BOXES_EXHAUSTIVE} must be a bool (or None for the default True); got {value!r}")


def parse_entries(get, index: int, ndim: int, device) -> ImageEntries:
    """Shape-checks one image's sparse entries; ``get(key)`` returns the entry or None."""
    boxes, box_classes = _paired(get(BOXES), get(BOX_CLASSES), index, BOXES, BOX_CLASSES, device, 2 * ndim)
    points, point_classes = _paired(get(POINTS), get(POINT_CLASSES), index, POINTS, POINT_CLASSES, device, ndim)
    tags = get(TAGS)
    return ImageEntries(
        tags=None if tags is None else _vector(tags, index, TAGS, device),
        boxes=boxes,
        box_classes=box_classes,
        points=points,
        point_classes=point_classes,
        boxes_exhaustive=_exhaustive(get(BOXES_EXHAUSTIVE), index),
    )


class BatchView(NamedTuple):
    """A batch of records, seen image by image."""

    batch_size: int
    getters: List[Any]


def _batch_dict_view(batch: Mapping) -> BatchView:
    sizes = {}
    for key in RECORD_KEYS:
        value = batch.get(key)
        if value is not None:
            if not isinstance(value, (torch.Tensor, Sequence)) or isinstance(value, (str, bytes)):
                raise TypeError(
                    f"batch key {key!r} must be a batch-first tensor or a per-image list; got {type(value).__name__}"
                )
            sizes[key] = len(value)
    image = batch.get("image")
    if isinstance(image, torch.Tensor) and image.dim() > 0:
        sizes["image"] = image.shape[0]
    if not sizes:
        raise ValueError(
            "the batch dict holds none of the annotation keys " + ", ".join(RECORD_KEYS) + " and no 'image'; "
            "cannot tell the batch size"
        )
    if len(set(sizes.values())) != 1:
        raise ValueError(f"the batch dict's entries disagree on the batch size: {sizes}")
    batch_size = next(iter(sizes.values()))

    def getter(image_index):
        def get(key):
            value = batch.get(key)
            return None if value is None else value[image_index]

        return get

    return BatchView(batch_size, [getter(i) for i in range(batch_size)])


def batch_view(annotations) -> BatchView:
    """Views a list of per-image records, or a batch dict (``annotated_collate``'s layout), image by image.

    Args:
        annotations: a sequence of per-image dicts (None for an unannotated image), or a batch dict whose
            annotation keys hold batch-first tensors (``label`` (B, 1, *spatial), ``valid`` (B, 1, *spatial)) or
            per-image lists (None where an image lacks the entry).

    Returns:
        the batch size and one ``get(key)`` callable per image (a stacked tensor is read one image at a time).

    Raises:
        TypeError: when ``annotations`` is neither, or an entry of the batch dict has the wrong type.
        ValueError: when the batch dict's entries disagree on the batch size.
    """
    if isinstance(annotations, Mapping):
        return _batch_dict_view(annotations)
    if isinstance(annotations, Sequence) and not isinstance(annotations, (str, bytes)):
        getters = []
        for index, record in enumerate(annotations):
            if record is None:
                record = {}
            if not isinstance(record, Mapping):
                raise TypeError(
                    f"image {index}: an annotation record must be a dict (or None); got {type(record).__name__}"
                )
            getters.append(record.get)
        return BatchView(len(getters), getters)
    raise TypeError(
        "annotations must be a list of per-image dicts or a batch dict (see dsp_monai.annotations); got "
        f"{type(annotations).__name__}"
    )
