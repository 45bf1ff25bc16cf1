"""Reading the app's images and masks with the bundle's preprocessing, checking them, and writing predicted masks.

Masks come back the same shape as their image, in its array order ((row, column), or (z, y, x) for volumes): uint8
PNG for PNG, JPEG and TIFF images, NIfTI (with the image's affine) for NIfTI images and volumes.

This module does not import MONAI Label.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import numpy as np
import torch
from monai.transforms import LoadImage

from dsp_monai.data.readers import MultiFormatReader

__all__ = ["ImageFormatError", "load_image", "load_mask", "mask_suffix", "write_mask"]

NIFTI_SUFFIXES = (".nii", ".nii.gz")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", *NIFTI_SUFFIXES)


class ImageFormatError(ValueError):
    """A file that is not an image the app can segment (unreadable, or not a single-channel image of the app's
    dimension)."""

    def __init__(self, message: str, unsupported: bool = False) -> None:
        super().__init__(message)
        self.unsupported = unsupported


def _suffix(path: str) -> str:
    lower = path.lower()
    for suffix in sorted(IMAGE_SUFFIXES, key=len, reverse=True):
        if lower.endswith(suffix):
            return suffix
    return os.path.splitext(lower)[1]


def _root_cause(error: BaseException) -> BaseException:
    while error.__cause__ is not None:
        error = error.__cause__
    return error


def _check_suffix(path: str, name: str) -> None:
    if _suffix(path) not in IMAGE_SUFFIXES:
        raise ImageFormatError(
            f"{name}: unsupported file type {_suffix(path) or '(no suffix)'!r}; the app reads {list(IMAGE_SUFFIXES)}",
            unsupported=True,
        )


def load_image(path: str, preprocessing: Callable, name: str | None = None, spatial_dims: int = 2) -> torch.Tensor:
    """The image at ``path`` after the bundle's preprocessing, as a (1, rows, cols) tensor (or (1, z, y, x) for
    ``spatial_dims`` 3) with its metadata.

    Args:
        path: the image file.
        preprocessing: the bundle's validation preprocessing (takes ``{"image": path}``).
        name: how messages call the image (default: the path).
        spatial_dims: 2 (the app segments images) or 3 (volumes, ``--conf dimension 3``).

    Raises:
        ImageFormatError: an unsupported suffix, an unreadable file, or not a single-channel image of
            ``spatial_dims`` axes.
    """
    name = name or path
    _check_suffix(path, name)
    try:
        image = preprocessing({"image": path})["image"]
    except Exception as error:  # the readers raise many types for a corrupt file; all mean "not an image"
        cause = _root_cause(error)
        raise ImageFormatError(f"{name}: cannot be read as an image ({type(cause).__name__}: {cause})",
                               unsupported=True) from error
    if image.dim() != spatial_dims + 1 or image.shape[0] != 1:
        spatial = list(image.shape[1:])
        if spatial_dims == 2:
            expected = "single-channel 2D images (rows x columns); start it with --conf dimension 3 for volumes"
        else:
            expected = "single-channel 3D volumes (z, y, x) (--conf dimension 3); start it with --conf dimension 2 " \
                       "for 2D images"
        raise ImageFormatError(
            f"{name}: an array of shape {spatial} ({len(spatial)} axes); the app segments {expected}"
        )
    return image


def load_mask(path: str, spatial_shape: Sequence[int], num_classes: int, name: str, ignore_index: int = 255) -> None:
    """Checks that ``path`` is a mask of class ids of the image's shape (``ignore_index`` for unannotated pixels).

    Raises:
        ImageFormatError: unreadable, another shape, or a value that is neither a class id nor ``ignore_index``.
    """
    _check_suffix(path, name)
    try:
        mask = LoadImage(reader=MultiFormatReader(), image_only=True)(path)
    except Exception as error:  # as in load_image
        cause = _root_cause(error)
        raise ImageFormatError(f"{name}: cannot be read as a mask ({type(cause).__name__}: {cause})",
                               unsupported=True) from error
    array = np.asarray(mask)
    if tuple(array.shape) != tuple(spatial_shape):
        raise ImageFormatError(
            f"{name}: the mask has shape {list(array.shape)} but its image has {list(spatial_shape)} (array order); "
            "save a single-channel mask of class ids the size of the image"
        )
    values = np.unique(array)
    bad = [v for v in values.tolist() if not (v == ignore_index or (float(v).is_integer() and 0 <= v < num_classes))]
    if bad:
        raise ImageFormatError(
            f"{name}: value {bad[0]!r} is neither a class id in [0, {num_classes}) nor the ignore value {ignore_index}"
        )


def mask_suffix(image_path: str) -> str:
    """The suffix of the mask written for an image: ``.nii.gz`` for NIfTI images, else ``.png``."""
    return ".nii.gz" if _suffix(image_path) in NIFTI_SUFFIXES else ".png"


def write_mask(labels: np.ndarray, image_path: str, affine: np.ndarray | None, destination: str) -> str:
    """Writes a (rows, cols) or (z, y, x) map of class ids (uint8) in the format :func:`mask_suffix` names.

    Args:
        labels: class ids in the image's array order.
        image_path: the image the mask belongs to (its suffix decides the format).
        affine: the image's affine (NIfTI only; identity when None).
        destination: the file to write, without suffix.

    Returns:
        The path written.
    """
    labels = np.ascontiguousarray(labels, dtype=np.uint8)
    path = destination + mask_suffix(image_path)
    if path.endswith(".nii.gz"):
        import nibabel as nib

        nib.save(nib.Nifti1Image(labels, np.eye(4) if affine is None else np.asarray(affine, dtype=np.float64)),
                 path)
    else:
        from PIL import Image

        Image.fromarray(labels).save(path)
    return path
