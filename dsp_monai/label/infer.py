"""The infer task ``dsp``: segment a 2D image with the published model, optionally refined with the request's
clicks; or, with ``--conf dimension 3``, a volume by a sliding window over it (the bundle's 3D override; clicks and
refinement are refused there: they are 2D only).

Request parameters (form field ``params`` of ``POST /infer/dsp``, a JSON object; every key is optional):

- ``foreground`` / ``background``: clicks ``[[x, y], ...]`` (clients' order; ``[x, y, 0]`` accepted);
- ``label``: the class of the foreground clicks (name or index; required with ``foreground``); background clicks
  take the class ``--conf background_label``;
- ``refine``: true to fit a copy of the head to the clicks (:mod:`dsp_monai.label.refine`) before segmenting;
  ``refine_steps``, ``refine_learning_rate``, ``refine_time_limit``, ``refine_radius``, ``refine_confidence``
  override the app's defaults;
- ``keep_clicks``: true to store the clicks as points of the image's weak annotations (the app does that).

The label has the image's shape and array order, uint8 class ids (PNG for PNG / JPEG / TIFF images, NIfTI with the
image's affine for NIfTI images and volumes). The model is read from ``model.pt`` and read again whenever the file
changes.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from typing import Any

import numpy as np
import torch
from fastapi import HTTPException
from monailabel.interfaces.tasks.infer_v2 import InferType
from monailabel.tasks.infer.basic_infer import BasicInferTask
from monailabel.utils.others.generic import name_to_device

from dsp_monai.label.annotations import AnnotationInfoError, class_index, clicks_to_points
from dsp_monai.label.datastore import image_format_http_error
from dsp_monai.label.images import ImageFormatError, load_image, mask_suffix, write_mask
from dsp_monai.label.refine import anchor_mask, backbone_features, refine_head
from dsp_monai.label.settings import AppSettings

__all__ = ["DSPInferTask", "is_true", "request_clicks"]

logger = logging.getLogger(__name__)


def is_true(value: Any) -> bool:
    """A request flag: true, 1, "true", "yes", "on" (any case) are true."""
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


def request_clicks(request: dict, class_names, background_label, spatial_shape) -> tuple[list, list]:
    """The request's clicks as points (row, col) and their classes.

    Raises:
        AnnotationInfoError: malformed clicks, clicks outside the image, or foreground clicks without a valid
            ``label``.
    """
    foreground = clicks_to_points(request.get("foreground"), "foreground", spatial_shape)
    background = clicks_to_points(request.get("background"), "background", spatial_shape)
    classes = []
    if foreground:
        if request.get("label") is None:
            raise AnnotationInfoError("request field 'label': required with 'foreground' clicks (their class).")
        classes += [class_index(request["label"], class_names, "label")] * len(foreground)
    if background:
        classes += [class_index(background_label, class_names, "background_label")] * len(background)
    return foreground + background, classes


class DSPInferTask(BasicInferTask):
    """Segmentation (and click refinement) with the bundle's network; see the module docstring.

    Args:
        settings: the app's settings (bundle, classes, refinement defaults, model path).
    """

    def __init__(self, settings: AppSettings) -> None:
        self.settings = settings
        self.bundle = settings.bundle()
        self.preprocessing = self.bundle.preprocessing()
        self.spatial_dims = settings.dimension
        if self.spatial_dims == 3:
            description = "DSP segmentation of 3D volumes (sliding window); click refinement is 2D only"
        else:
            description = "DSP segmentation of 2D images; clicks refine the head (refine: true)"
        super().__init__(
            path=settings.model_path,
            network=self.bundle.network(),
            type=InferType.DEEPEDIT,
            labels={name: index for index, name in enumerate(settings.class_names)},
            dimension=self.spatial_dims,
            description=description,
            config={
                "refine": False,
                "keep_clicks": False,
                "refine_steps": settings.integer("refine_steps"),
                "refine_learning_rate": settings.number("refine_learning_rate"),
                "refine_time_limit": settings.number("refine_time_limit"),
                "refine_radius": settings.number("refine_radius"),
                "refine_confidence": settings.number("refine_confidence"),
            },
        )

    def pre_transforms(self, data=None):
        return [self.preprocessing]

    def post_transforms(self, data=None):
        return []

    def __call__(self, request, callbacks=None):
        start = time.perf_counter()
        req = {**self._config, **request}
        device = name_to_device(req.get("device"))
        if not os.path.isfile(self.settings.model_path):
            raise HTTPException(
                status_code=409,
                detail=f"no trained model yet ({self.settings.model_path} is missing): save final masks and weak "
                "annotations, then POST /train/dsp (or start the server with --model)",
            )
        name = f"image {request.get('image_id', req['image'])!r}"
        try:
            image = load_image(req["image"], self.preprocessing, name, self.spatial_dims)
        except ImageFormatError as error:
            raise image_format_http_error(error) from error
        shape = tuple(int(s) for s in image.shape[1:])
        if self.spatial_dims == 3:
            given = [key for key in ("foreground", "background") if request.get(key)] + \
                [key for key in ("refine", "keep_clicks") if is_true(request.get(key))]
            if given:
                raise HTTPException(
                    status_code=400,
                    detail=f"request field '{given[0]}': {name} is a volume of shape {list(shape)}; clicks and click "
                    "refinement work on 2D images only (an app started with --conf dimension 2); send the volume "
                    "without clicks to segment it",
                )
        try:
            points, classes = request_clicks(req, self.settings.class_names, self.settings.values["background_label"],
                                             shape)
        except AnnotationInfoError as error:
            raise HTTPException(status_code=400, detail=str(error)) from error
        refine = is_true(req.get("refine"))
        if refine and not points:
            raise HTTPException(status_code=400, detail="request field 'refine': needs 'foreground' or 'background' "
                                                        "clicks")
        try:
            steps, learning_rate, time_limit = (int(req["refine_steps"]), float(req["refine_learning_rate"]),
                                                float(req["refine_time_limit"]))
            radius, confidence = float(req["refine_radius"]), float(req["refine_confidence"])
        except (TypeError, ValueError) as error:
            raise HTTPException(status_code=400, detail=f"request fields 'refine_steps' (integer), "
                                f"'refine_learning_rate', 'refine_time_limit', 'refine_radius', 'refine_confidence' "
                                f"(numbers): {error}") from error
        network = self._get_network(device, req)
        batch = image.as_tensor()[None].to(device) if hasattr(image, "as_tensor") else image[None].to(device)
        inferer = self.bundle.inferer()
        result: dict[str, Any] = {"points": points, "point_classes": classes, "shape": list(shape)}
        with torch.no_grad():
            if refine:
                features = backbone_features(network, batch, inferer)
                anchor = anchor_mask(network.head(features), points, radius, confidence)
                with torch.enable_grad():
                    logits, info = refine_head(
                        network, features, points, classes, self.bundle.dsp_loss(), steps=steps,
                        learning_rate=learning_rate, time_limit=time_limit, anchor=anchor,
                    )
                result["refine"] = info
            else:
                logits = inferer(batch, network)
        labels = logits[0].argmax(0).cpu().numpy().astype(np.uint8)
        meta = getattr(image, "meta", {})
        affine = meta.get("original_affine", meta.get("affine"))
        affine = None if affine is None else np.asarray(affine.cpu() if hasattr(affine, "cpu") else affine)
        handle, reserved = tempfile.mkstemp(prefix="dsp_label_", suffix=mask_suffix(req["image"]))
        os.close(handle)
        path = write_mask(labels, req["image"], affine, reserved[: -len(mask_suffix(req["image"]))])
        result["label_names"] = self.labels
        result["latencies"] = {"total": round(time.perf_counter() - start, 4)}
        logger.info("dsp infer: %s -> %s (%s, refine=%s) in %.3f s", req["image"], path, list(shape), refine,
                    result["latencies"]["total"])
        return path, result
