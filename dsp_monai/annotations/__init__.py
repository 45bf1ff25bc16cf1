"""The per-image annotation record, its validation, and its collation into what the DSP loss consumes.

One record (a dict) per image holds any mix of a partial pixel mask (``label``), image-level ``tags``, ``boxes``
with ``box_classes``, ``points`` with ``point_classes``, a ``valid`` mask (False = padding) and
``boxes_exhaustive`` (see :mod:`dsp_monai.annotations.record` for the layout). :func:`collate_annotations` checks a
batch of records and builds an :class:`AnnotationBatch`: the possible-class bit mask ``allowed`` (method.md §3)
and the positive sets of every annotation type (method.md §4), vectorised.

This package knows nothing of MONAI; it imports torch and :mod:`dsp_monai.ops` only.
"""

from .collate import ANNOTATION_TYPES, AnnotationBatch, collate_annotations, validate_record
from .record import (
    BOX_CLASSES,
    BOXES,
    BOXES_EXHAUSTIVE,
    LABEL,
    POINT_CLASSES,
    POINTS,
    RECORD_KEYS,
    TAGS,
    VALID,
)

__all__ = [
    "ANNOTATION_TYPES",
    "AnnotationBatch",
    "BOXES",
    "BOXES_EXHAUSTIVE",
    "BOX_CLASSES",
    "LABEL",
    "POINTS",
    "POINT_CLASSES",
    "RECORD_KEYS",
    "TAGS",
    "VALID",
    "collate_annotations",
    "validate_record",
]
