"""The annotation vocabulary, the per-image annotation record, and its collation into what the DSP loss consumes.

:mod:`dsp_monai.annotations.vocabulary` is the one owner of the item keys, the annotation types, the ignore value
and the parsing policy of boxes and points; :mod:`dsp_monai.annotations.from_masks` holds the one rule for points
derived from masks (the medoid of each connected component). One record (a dict) per image holds any mix of a
partial pixel mask (``label``), image-level ``tags``, ``boxes`` with ``box_classes``, ``points`` with
``point_classes``, a ``valid`` mask (False = padding) and ``boxes_exhaustive`` (see
:mod:`dsp_monai.annotations.record`). :func:`collate_annotations` checks a batch of records and builds an
:class:`AnnotationBatch`: the possible-class bit mask ``allowed`` and the positive sets of every annotation type
(docs/method.md §4 and §5), vectorised.

This package knows nothing of MONAI; it imports numpy, scipy, torch and :mod:`dsp_monai.ops` only.
"""

from .collate import AnnotationBatch, collate_annotations, validate_record
from .from_masks import component_medoids, medoid_index
from .vocabulary import (
    ANNOTATION_LIST_KEYS,
    ANNOTATION_TYPE,
    ANNOTATION_TYPES,
    BOX_CLASSES,
    BOXES,
    BOXES_EXHAUSTIVE,
    ID,
    IGNORE_VALUE,
    IMAGE,
    ITEM_KEYS,
    LABEL,
    METADATA,
    PATH_KEYS,
    POINT_CLASSES,
    POINTS,
    POSITIVE_TYPES,
    RECORD_KEYS,
    SUBVOLUME,
    TAGS,
    VALID,
    WEAK_TYPE_KEYS,
    WEAK_TYPES,
    AnnotationError,
    annotation_type_of,
    parse_boxes,
    parse_points,
    whole_numbers,
)

__all__ = [
    "ANNOTATION_LIST_KEYS",
    "ANNOTATION_TYPE",
    "ANNOTATION_TYPES",
    "AnnotationBatch",
    "AnnotationError",
    "BOXES",
    "BOXES_EXHAUSTIVE",
    "BOX_CLASSES",
    "ID",
    "IGNORE_VALUE",
    "IMAGE",
    "ITEM_KEYS",
    "LABEL",
    "METADATA",
    "PATH_KEYS",
    "POINTS",
    "POINT_CLASSES",
    "POSITIVE_TYPES",
    "RECORD_KEYS",
    "SUBVOLUME",
    "TAGS",
    "VALID",
    "WEAK_TYPES",
    "WEAK_TYPE_KEYS",
    "annotation_type_of",
    "collate_annotations",
    "component_medoids",
    "medoid_index",
    "parse_boxes",
    "parse_points",
    "validate_record",
    "whole_numbers",
]
