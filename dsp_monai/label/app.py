"""The MONAI Label app: infer task ``dsp`` (segmentation, click refinement), train task ``dsp`` (from final masks,
tags, boxes and points kept in the datastore), and the stock random / first active-learning strategies.

The server loads it from ``<app folder>/main.py`` (written by ``python -m dsp_monai.label start_server``).
"""

from __future__ import annotations

import logging
import os

from fastapi import HTTPException
from monailabel.config import settings as server_settings
from monailabel.interfaces.app import MONAILabelApp
from monailabel.tasks.activelearning.first import First
from monailabel.tasks.activelearning.random import Random

import dsp_monai
from dsp_monai.label.annotations import INFO_KEY, add_points
from dsp_monai.label.datastore import DSPDatastore
from dsp_monai.label.infer import DSPInferTask, is_true
from dsp_monai.label.settings import AppSettings
from dsp_monai.label.train import DSPTrainTask

__all__ = ["DSPLabelApp"]

logger = logging.getLogger(__name__)


class DSPLabelApp(MONAILabelApp):
    """MONAI Label app over the dsp_monai bundle (see :mod:`dsp_monai.label`).

    Args:
        app_dir: the writable app folder.
        studies: the studies folder (the datastore).
        conf: ``--conf`` pairs (:data:`dsp_monai.label.settings.DEFAULT_CONF`).
    """

    def __init__(self, app_dir: str, studies: str, conf: dict) -> None:
        self.settings = AppSettings.from_conf(app_dir, conf)
        os.makedirs(self.settings.model_dir, exist_ok=True)
        super().__init__(
            app_dir=app_dir,
            studies=studies,
            conf=conf,
            name="dsp_monai",
            description="Decoupled Semantic Prototypes: segment with clicks, train from masks, boxes, points and tags",
            version=getattr(dsp_monai, "__version__", "0.1.0"),
            labels={name: index for index, name in enumerate(self.settings.class_names)},
        )

    def init_datastore(self):
        return DSPDatastore(
            self.studies,
            class_names=self.settings.class_names,
            preprocessing=self.settings.bundle().preprocessing(),
            spatial_dims=self.settings.dimension,
            extensions=server_settings.MONAI_LABEL_DATASTORE_FILE_EXT,
            auto_reload=server_settings.MONAI_LABEL_DATASTORE_AUTO_RELOAD,
            read_only=server_settings.MONAI_LABEL_DATASTORE_READ_ONLY,
        )

    def init_infers(self):
        return {"dsp": DSPInferTask(self.settings)}

    def init_trainers(self):
        return {"dsp": DSPTrainTask(self.settings)}

    def init_strategies(self):
        return {"random": Random(), "first": First()}

    def infer(self, request, datastore=None):
        """Checks the model and image, runs the task, and stores the clicks as points when ``keep_clicks`` is set.

        Raises:
            HTTPException: 404 for an unknown model or image, 400 for ``keep_clicks`` on an uploaded file, and the
                task's 4xx errors.
        """
        model = request.get("model")
        if model not in self._infers:
            raise HTTPException(status_code=404, detail=f"unknown model {model!r}; the app has {list(self._infers)}")
        datastore = datastore or self.datastore()
        image_id = request.get("image")
        uploaded = isinstance(image_id, str) and os.path.exists(image_id)
        if not uploaded and not datastore.get_image_uri(image_id):
            raise HTTPException(status_code=404, detail=f"image {image_id!r} is not in the datastore")
        keep = is_true(request.get("keep_clicks"))
        if keep and uploaded:
            raise HTTPException(status_code=400, detail="request field 'keep_clicks': only clicks on datastore images "
                                                        "can be kept (give ?image=ID)")
        result = super().infer({**request, "image_id": image_id}, datastore)
        params = result.get("params") or {}
        if keep and params.get("points"):
            stored = datastore.get_image_info(image_id).get(INFO_KEY)
            annotations = add_points(stored, params["points"], params["point_classes"])
            datastore.update_image_info(image_id, {INFO_KEY: annotations})
            params["kept"] = annotations
        return result
