"""The train task ``dsp``: trains the bundle on everything the datastore holds and republishes ``model.pt``.

Each request gets a fresh folder ``<app>/runs/train_<time>``: the datalist built from the datastore
(:mod:`dsp_monai.label.datalist`) is written there as ``datalist.json``, and the bundle's ``training`` workflow
runs with overrides only (``datalist``, ``output_dir``, ``models_dir``, ``acr 0`` so every item keeps the
annotation it has, ``max_epochs``, ``val_interval``), so nothing is resumed from an earlier request and no
synthetic data is generated. With ``--conf dimension 3`` the bundle's 3D override ``configs/train_3d.yaml`` is
merged after ``train.yaml`` (3D network, patches and sliding-window validation over the datastore's volumes). With
``pretrained`` (default) training starts from the published model. Validation
writes the best model to ``<app>/model/model.pt``, which the infer task reads again.

Request parameters (``POST /train/dsp``, JSON body): ``max_epochs``, ``val_split``, ``pretrained``, and
``overrides`` (bundle ids, on top of ``--conf overrides``).
"""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Any

import monai.bundle
from monailabel.interfaces.tasks.train import TrainTask

from dsp_monai.data.files import write_json
from dsp_monai.label.datalist import write_datalist
from dsp_monai.label.settings import AppSettings

__all__ = ["DSPTrainTask"]

logger = logging.getLogger(__name__)

STATS_FILE = "train_stats.json"


class DSPTrainTask(TrainTask):
    """See the module docstring.

    Args:
        settings: the app's settings.
    """

    def __init__(self, settings: AppSettings) -> None:
        super().__init__("DSP training from the datastore's final masks, tags, boxes and points")
        self.settings = settings
        configured = settings.values["max_epochs"]
        self.max_epochs = int(configured) if configured else int(settings.bundle().get("max_epochs"))

    def config(self) -> dict[str, Any]:
        return {
            "max_epochs": self.max_epochs,
            "val_split": self.settings.number("val_split"),
            "pretrained": True,
            "overrides": {},
        }

    def stats(self) -> dict[str, Any]:
        path = os.path.join(self.settings.model_dir, STATS_FILE)
        if not os.path.isfile(path):
            return {}
        with open(path) as handle:
            return json.load(handle)

    def overrides(self, request: dict, run_dir: str, datalist: str) -> dict[str, Any]:
        """The bundle overrides of one training request."""
        settings = self.settings
        overrides: dict[str, Any] = {
            "bundle_root": settings.bundle_root,
            "datalist": datalist,
            "dataset_dir": run_dir,
            "output_dir": run_dir,
            "models_dir": settings.model_dir,
            "acr": 0,
            "val_interval": settings.integer("val_interval"),
            "class_names": list(settings.class_names),
            **settings.overrides,
        }
        overrides["max_epochs"] = int(request["max_epochs"]) if request.get("max_epochs") not in (None, "") else \
            self.max_epochs
        if request.get("pretrained", True) and os.path.isfile(settings.model_path):
            view = settings.bundle()
            handlers = list(view.parser.get("train#handlers"))
            handlers.insert(0, {
                "_target_": "CheckpointLoader",
                "load_path": settings.model_path,
                "load_dict": {"model": "@network"},
                "map_location": "@device",
            })
            overrides["train#handlers"] = handlers
        overrides.update(request.get("overrides") or {})
        return overrides

    def __call__(self, request: dict, datastore) -> dict[str, Any]:
        settings = self.settings
        run_dir = os.path.join(settings.runs_dir, time.strftime("train_%Y%m%d-%H%M%S") + f"_{os.getpid()}")
        os.makedirs(run_dir)
        os.makedirs(settings.model_dir, exist_ok=True)
        datalist = os.path.join(run_dir, "datalist.json")
        val_split = float(request.get("val_split", settings.number("val_split")))
        parts = write_datalist(datalist, datastore, settings.class_names, val_split, settings.integer("val_seed"))
        overrides = self.overrides(request, run_dir, datalist)
        view = settings.bundle()
        started = time.time()
        logger.info("training in %s (overrides %s)", run_dir, sorted(overrides))
        monai.bundle.run(
            run_id="training",
            meta_file=view.metadata_file,
            config_file=view.config_files,
            logging_file=view.logging_file,
            **overrides,
        )
        types: dict[str, int] = {}
        for item in parts["training"]:
            types[item["annotation_type"]] = types.get(item["annotation_type"], 0) + 1
        stats = {
            "run_dir": run_dir,
            "datalist": datalist,
            "training_items": types,
            "validation_items": len(parts["validation"]),
            "model": settings.model_path,
            "model_mtime": os.path.getmtime(settings.model_path) if os.path.isfile(settings.model_path) else None,
            "start_ts": int(started),
            "seconds": round(time.time() - started, 1),
        }
        write_json(os.path.join(settings.model_dir, STATS_FILE), stats)
        return stats
