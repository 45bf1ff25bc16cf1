"""The app's datastore: MONAI Label's local datastore, checking what clients store in it.

- uploaded images must be single-channel images of the app's dimension (2D images, or volumes with
  ``--conf dimension 3``) the bundle's preprocessing reads (else 415 / 400);
- final masks must be class ids (or 255) of their image's shape (else 400);
- weak annotations put in an image's info under :data:`~dsp_monai.label.annotations.INFO_KEY` must pass the datalist
  rules and lie inside the image (else 400, the message naming the field).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from fastapi import HTTPException
from monailabel.datastore.local import LocalDatastore

from dsp_monai.label.annotations import INFO_KEY, AnnotationInfoError, validate_weak_annotations
from dsp_monai.label.datalist import FINAL_TAG
from dsp_monai.label.images import ImageFormatError, load_image, load_mask

__all__ = ["DSPDatastore", "image_format_http_error"]

logger = logging.getLogger(__name__)


def image_format_http_error(error: ImageFormatError) -> HTTPException:
    """415 for a file that is no image the app reads, 400 for an image of the wrong shape."""
    return HTTPException(status_code=415 if error.unsupported else 400, detail=str(error))


class DSPDatastore(LocalDatastore):
    """A :class:`monailabel.datastore.local.LocalDatastore` that checks uploads, final masks and weak annotations.

    Args:
        studies: the studies folder.
        class_names: the app's classes.
        preprocessing: the bundle's validation preprocessing (reads an image as the network sees it).
        spatial_dims: 2 (images) or 3 (volumes).
        **kwargs: LocalDatastore arguments (extensions, auto_reload, read_only).
    """

    def __init__(self, studies: str, class_names: Sequence[str], preprocessing: Callable, spatial_dims: int = 2,
                 **kwargs: Any) -> None:
        self.class_names = list(class_names)
        self.preprocessing = preprocessing
        self.spatial_dims = spatial_dims
        super().__init__(studies, **kwargs)

    def _image_or_404(self, image_id: str) -> str:
        path = self.get_image_uri(image_id)
        if not path:
            raise HTTPException(status_code=404, detail=f"image {image_id!r} is not in the datastore")
        return path

    def spatial_shape(self, image_id: str) -> tuple[int, ...]:
        """(rows, columns), or (z, y, x) of a volume, of a datastore image."""
        path = self._image_or_404(image_id)
        try:
            image = load_image(path, self.preprocessing, f"image {image_id!r}", self.spatial_dims)
        except ImageFormatError as error:
            raise image_format_http_error(error) from error
        return tuple(int(s) for s in image.shape[1:])

    def add_image(self, image_id: str, image_filename: str, image_info: dict[str, Any]) -> str:
        try:
            load_image(image_filename, self.preprocessing, f"upload {image_id!r}", self.spatial_dims)
        except ImageFormatError as error:
            raise image_format_http_error(error) from error
        return super().add_image(image_id, image_filename, image_info)

    def save_label(self, image_id: str, label_filename: str, label_tag: str, label_info: dict[str, Any]) -> str:
        if label_tag == FINAL_TAG:
            shape = self.spatial_shape(image_id)
            try:
                load_mask(label_filename, shape, len(self.class_names), f"final mask of image {image_id!r}")
            except ImageFormatError as error:
                raise image_format_http_error(error) from error
        return super().save_label(image_id, label_filename, label_tag, label_info)

    def check_annotations(self, image_id: str, annotations: Any) -> dict:
        """The weak annotations of an image, checked (:func:`validate_weak_annotations`); 400 when wrong."""
        path = self._image_or_404(image_id)
        try:
            return validate_weak_annotations(
                annotations, self.class_names, self.spatial_shape(image_id), path,
                source=f"image {image_id!r}, info key '{INFO_KEY}'",
            )
        except AnnotationInfoError as error:
            raise HTTPException(status_code=400, detail=str(error)) from error

    def update_image_info(self, image_id: str, info: dict[str, Any]) -> None:
        self._image_or_404(image_id)
        if not isinstance(info, dict):
            raise HTTPException(status_code=400, detail=f"image info must be a JSON object, got {info!r}")
        if INFO_KEY in info:
            info = {**info, INFO_KEY: self.check_annotations(image_id, info[INFO_KEY])}
        super().update_image_info(image_id, info)
