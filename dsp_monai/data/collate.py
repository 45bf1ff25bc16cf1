"""Batching of annotated items: dense arrays are stacked, per-image annotations stay per-image lists.

The batch dict produced by :func:`annotated_collate` (``B`` images, ``ndim`` = 2 or 3):

- dense arrays (``image``, ``image_strong``, ``label``, ``valid`` and any other key whose values are tensors or
  arrays of one shape): stacked to ``(B, C, *spatial)`` tensors; MetaTensors stay MetaTensors with batched
  metadata (MONAI's ``collate_meta_tensor``);
- annotation keys (``tags``, ``boxes``, ``box_classes``, ``points``, ``point_classes``, ``boxes_exhaustive``,
  ``annotation_type`` by default): lists of length ``B``, entry ``b`` being image ``b``'s value (a tensor, bool or
  string) or None where the image lacks it;
- anything else (ids, paths, numbers, metadata dicts): PyTorch's ``default_collate`` where it applies, else a list.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from monai.data import MetaTensor
from monai.data.utils import collate_meta_tensor
from torch.utils.data import default_collate

from dsp_monai.annotations.vocabulary import ANNOTATION_LIST_KEYS

__all__ = ["annotated_collate"]


def _flatten(batch) -> list[Mapping]:
    """Items of ``batch``, with nested lists (several crops per item, as MONAI's ``num_samples`` makes) flattened."""
    items: list[Mapping] = []
    for entry in batch:
        if isinstance(entry, Mapping):
            items.append(entry)
        elif isinstance(entry, (list, tuple)):
            items.extend(_flatten(entry))
        else:
            raise TypeError(f"annotated_collate expects dict items (or lists of them), got {type(entry).__name__}.")
    return items


def _as_tensor(value):
    if isinstance(value, torch.Tensor):
        return value
    return torch.as_tensor(np.asarray(value))


def annotated_collate(batch: Sequence, list_keys: Sequence[str] = ANNOTATION_LIST_KEYS) -> dict:
    """Collate annotated items into one batch dict (see the module docstring for the layout).

    Use it as ``DataLoader(..., collate_fn=annotated_collate)``; with other list keys,
    ``functools.partial(annotated_collate, list_keys=...)``.

    Args:
        batch: the items (dicts), or lists of items.
        list_keys: keys kept as per-image lists.

    Returns:
        The batch dict.

    Raises:
        ValueError: for an empty batch, or a dense key whose arrays differ in shape (the message lists the shapes:
            crop or pad the items to one size first).
        KeyError: when a dense key is missing from some items.
    """
    items = _flatten(batch)
    if not items:
        raise ValueError("annotated_collate got an empty batch.")
    keys: list = []
    for item in items:
        keys += [k for k in item if k not in keys]
    list_keys = set(list_keys)
    out: dict = {}
    for key in keys:
        values = [item.get(key) for item in items]
        if key in list_keys:
            out[key] = values
            continue
        dense = [isinstance(v, (torch.Tensor, np.ndarray)) for v in values]
        if any(dense):
            missing = [i for i, item in enumerate(items) if item.get(key) is None]
            if missing:
                raise KeyError(f"dense key {key!r} is missing or None in batch item(s) {missing}; every item needs it.")
            shapes = [tuple(v.shape) for v in values]
            if len(set(shapes)) != 1:
                raise ValueError(
                    f"cannot stack {key!r}: shapes differ across the batch {shapes}; crop or pad every item to one "
                    f"size (e.g. AnnotatedRandSpatialCropd / AnnotatedSpatialPadd) or add {key!r} to list_keys."
                )
            if any(isinstance(v, MetaTensor) for v in values):
                out[key] = collate_meta_tensor([v if isinstance(v, MetaTensor) else MetaTensor(v) for v in values])
            else:
                out[key] = torch.stack([_as_tensor(v) for v in values])
            continue
        if any(v is None for v in values):
            out[key] = values
            continue
        try:
            out[key] = default_collate(values)
        except (TypeError, RuntimeError):
            out[key] = values
    return out
