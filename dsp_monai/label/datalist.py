"""The mixed datalist of a MONAI Label datastore: final masks, the weak annotations kept in the image infos, and
images with nothing (unlabelled), in the datalist format of docs/datalist.md.

This module does not import MONAI Label: it reads any object with the datastore methods ``list_images``,
``get_image_uri``, ``get_image_info``, ``get_labels_by_image_id`` and ``get_label_uri``.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence

from dsp_monai.data.datalist import save_datalist
from dsp_monai.annotations.vocabulary import ANNOTATION_TYPE, annotation_type_of
from dsp_monai.label.annotations import INFO_KEY

__all__ = ["FINAL_TAG", "datastore_items", "split_items", "write_datalist"]

logger = logging.getLogger(__name__)

FINAL_TAG = "final"
"""The datastore tag of the masks an expert saved as finished (MONAI Label's ``DefaultLabelTag.FINAL``)."""


def datastore_items(datastore) -> list[dict]:
    """One datalist item per datastore image, sorted by image id: ``label`` when it has a final mask, the weak
    annotations stored under :data:`~dsp_monai.label.annotations.INFO_KEY`, and its ``annotation_type``."""
    items = []
    for image_id in sorted(datastore.list_images()):
        item = {"image": datastore.get_image_uri(image_id), "id": image_id}
        if FINAL_TAG in datastore.get_labels_by_image_id(image_id):
            item["label"] = datastore.get_label_uri(image_id, FINAL_TAG)
        item.update(datastore.get_image_info(image_id).get(INFO_KEY) or {})
        item[ANNOTATION_TYPE] = annotation_type_of(item)
        items.append(item)
    return items


def split_items(items: Sequence[dict], val_split: float, seed: int) -> dict[str, list[dict]]:
    """Training and validation parts: ``round(val_split * masked)`` images with a mask, drawn with ``seed``, validate;
    every other image trains. When that rounds to none, the masked training images validate too.

    Returns:
        ``{"training", "validation", "test"}``; ``test`` repeats ``validation`` (the bundle's experiment needs the
        section; the app never evaluates on it). Only training items keep their ``id`` (the image id).

    Raises:
        ValueError: no image has a final mask (training selects its model on masked images).
    """
    masked = [item for item in items if item.get("label")]
    if not masked:
        raise ValueError(
            f"training needs at least one image with a final mask to validate on; the datastore has {len(items)} "
            "images and none has one (save one with PUT /datastore/label?image=ID&tag=final)"
        )
    held_out = set(random.Random(seed).sample([item["id"] for item in masked], int(round(val_split * len(masked)))))
    training = [item for item in items if item["id"] not in held_out]
    validation = [item for item in masked if item["id"] in held_out]
    if not validation:
        logger.warning(
            "val_split %s of %d masked images rounds to none: the masked training images validate", val_split,
            len(masked),
        )
        validation = [item for item in training if item.get("label")]
    # ids are unique across a datalist's sections: only the training items carry them.
    validation = [{k: v for k, v in item.items() if k != "id"} for item in validation]
    return {"training": training, "validation": validation, "test": [dict(item) for item in validation]}


def write_datalist(path: str, datastore, class_names: Sequence[str], val_split: float, seed: int) -> dict:
    """Builds the datastore's datalist (:func:`datastore_items`, :func:`split_items`), validates it and writes it
    to ``path``.

    Returns:
        The parts written.

    Raises:
        ValueError: as :func:`split_items`.
        dsp_monai.data.datalist.DatalistError: an item breaks the datalist rules.
    """
    parts = split_items(datastore_items(datastore), val_split, seed)
    save_datalist(path, class_names, parts, description="MONAI Label datastore (dsp_monai.label)")
    counts = {}
    for item in parts["training"]:
        counts[item["annotation_type"]] = counts.get(item["annotation_type"], 0) + 1
    logger.info("datalist %s: training %s, %d validation images", path, counts, len(parts["validation"]))
    return parts
