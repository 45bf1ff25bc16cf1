"""The app's settings (from ``--conf KEY VALUE`` pairs) and its view of the bundle configuration.

Every number the app uses lives either in the bundle's ``configs/train.yaml`` (network, preprocessing, sliding
window, DSP loss, training) or in :data:`DEFAULT_CONF` (what only the app has: validation share, refinement).
``--conf overrides '{"id": value, ...}'`` overrides bundle ids for inference and training alike, so the network
the app builds always matches the one its training writes.

This module does not import MONAI Label.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from monai.bundle import ConfigParser

from dsp_monai.engines import bundle_root as default_bundle_root
from dsp_monai.engines.evaluation import class_names_for

__all__ = ["DEFAULT_CONF", "AppSettings", "BundleView"]

logger = logging.getLogger(__name__)

DEFAULT_CONF = {
    # bundle folder (configs/train.yaml, configs/metadata.json); "" = the bundle of this installation
    "bundle": "",
    # class names: a JSON list or comma-separated names; "" = the bundle metadata's channel_def
    "labels": "",
    # 2: images (rows x columns); 3: volumes (z, y, x), with the bundle's 3D override configs/train_3d.yaml for
    # inference and training (docs/volumes.md); click refinement is 2D only
    "dimension": "2",
    # bundle config overrides for inference and training, a JSON object {"id": value}
    "overrides": "{}",
    # share of the images with a final mask held out for validation (when it rounds to 0 images, the masked
    # training images validate)
    "val_split": "0.2",
    # seed of the validation draw
    "val_seed": "0",
    # training epochs; "" = the bundle's max_epochs
    "max_epochs": "",
    # epochs between validations; 1 makes the last epoch validate and publish model.pt whatever max_epochs is
    "val_interval": "1",
    # class of background clicks (name or index)
    "background_label": "0",
    # interactive refinement: Adam steps on the head, their step size, and the time they may take (seconds)
    "refine_steps": "30",
    "refine_learning_rate": "0.01",
    "refine_time_limit": "1.5",
    # refinement anchor: the network's own prediction holds the head in place except within this many pixels of a
    # click and where its softmax maximum is below refine_confidence
    "refine_radius": "10",
    "refine_confidence": "0",
}

TRAIN_CONFIG = os.path.join("configs", "train.yaml")
TRAIN_3D_CONFIG = os.path.join("configs", "train_3d.yaml")
METADATA = os.path.join("configs", "metadata.json")
LOGGING = os.path.join("configs", "logging.conf")


def _labels(text: str, metadata: str) -> list[str]:
    text = text.strip()
    if not text:
        return class_names_for("", metadata)
    if text.startswith("["):
        names = json.loads(text)
    else:
        names = [name.strip() for name in text.split(",")]
    if not names or not all(isinstance(n, str) and n for n in names) or len(set(names)) != len(names):
        raise ValueError(f"--conf labels: expected unique non-empty class names, got {text!r}")
    return list(names)


@dataclass
class AppSettings:
    """The app's settings, parsed from the server's ``--conf`` pairs (missing keys take :data:`DEFAULT_CONF`).

    Attributes:
        app_dir: the (writable) app folder; the published model is ``app_dir/model/model.pt``, training runs go to
            ``app_dir/runs``.
        bundle_root: the bundle folder.
        class_names: index = class id.
        overrides: bundle config overrides.
        values: every ``--conf`` value as given (strings), defaults filled in.
    """

    app_dir: str
    bundle_root: str
    class_names: list[str]
    overrides: dict[str, Any]
    values: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_conf(cls, app_dir: str, conf: Mapping[str, str] | None) -> "AppSettings":
        """Parses the ``--conf`` pairs.

        Raises:
            ValueError: an unknown key or a malformed value, naming the key.
        """
        conf = dict(conf or {})
        ignored = {"server_mode"}
        unknown = [k for k in conf if k not in DEFAULT_CONF and k not in ignored]
        if unknown:
            raise ValueError(f"--conf {unknown[0]}: unknown key; the app's keys are {list(DEFAULT_CONF)}")
        values = {**DEFAULT_CONF, **{k: str(v) for k, v in conf.items() if k in DEFAULT_CONF}}
        root = os.path.abspath(values["bundle"]) if values["bundle"] else default_bundle_root()
        if not os.path.isfile(os.path.join(root, TRAIN_CONFIG)):
            raise ValueError(f"--conf bundle: {root} holds no {TRAIN_CONFIG}")
        try:
            overrides = json.loads(values["overrides"])
        except json.JSONDecodeError as error:
            raise ValueError(f"--conf overrides: not valid JSON ({error})") from error
        if not isinstance(overrides, dict):
            raise ValueError(f"--conf overrides: expected a JSON object of bundle ids, got {values['overrides']!r}")
        settings = cls(os.path.abspath(app_dir), root, _labels(values["labels"], os.path.join(root, METADATA)),
                       overrides, values)
        for key in ("val_split", "refine_learning_rate", "refine_time_limit", "refine_radius", "refine_confidence"):
            settings.number(key)
        for key in ("val_seed", "refine_steps", "val_interval", "dimension"):
            settings.integer(key)
        if settings.dimension not in (2, 3):
            raise ValueError(f"--conf dimension: expected 2 (images) or 3 (volumes), got {values['dimension']!r}")
        if settings.dimension == 3 and not os.path.isfile(os.path.join(root, TRAIN_3D_CONFIG)):
            raise ValueError(f"--conf dimension: 3 needs {TRAIN_3D_CONFIG}, which {root} does not hold")
        if not 0.0 <= settings.number("val_split") < 1.0:
            raise ValueError(f"--conf val_split: expected a share in [0, 1), got {values['val_split']!r}")
        return settings

    def number(self, key: str) -> float:
        try:
            return float(self.values[key])
        except ValueError as error:
            raise ValueError(f"--conf {key}: expected a number, got {self.values[key]!r}") from error

    def integer(self, key: str) -> int:
        try:
            return int(self.values[key])
        except ValueError as error:
            raise ValueError(f"--conf {key}: expected an integer, got {self.values[key]!r}") from error

    @property
    def dimension(self) -> int:
        """2 (images) or 3 (volumes), from ``--conf dimension``."""
        return self.integer("dimension")

    @property
    def config_files(self) -> list[str]:
        """The bundle's configuration files: ``train.yaml``, then ``train_3d.yaml`` for volumes."""
        files = [TRAIN_CONFIG] + ([TRAIN_3D_CONFIG] if self.dimension == 3 else [])
        return [os.path.join(self.bundle_root, name) for name in files]

    @property
    def model_dir(self) -> str:
        return os.path.join(self.app_dir, "model")

    @property
    def model_path(self) -> str:
        return os.path.join(self.model_dir, "model.pt")

    @property
    def runs_dir(self) -> str:
        return os.path.join(self.app_dir, "runs")

    def bundle(self) -> "BundleView":
        return BundleView(self.bundle_root, self.class_names, self.overrides, self.config_files)


class BundleView:
    """Pieces of the bundle's training configuration, with the app's class names and overrides applied.

    Args:
        bundle_root: the bundle folder.
        class_names: the app's classes (they replace the datalist's, so no datalist is read).
        overrides: further ``{"id": value}`` overrides.
        config_files: the configuration files, merged in order (default: the bundle's ``train.yaml``).
    """

    def __init__(self, bundle_root: str, class_names: Sequence[str], overrides: Mapping[str, Any],
                 config_files: Sequence[str] | None = None) -> None:
        self.bundle_root = bundle_root
        self.config_files = list(config_files or [os.path.join(bundle_root, TRAIN_CONFIG)])
        self.parser = ConfigParser()
        self.parser.read_config(self.config_files)
        # The preprocessing takes the configured intensity range itself: the bundle's default reads it from the
        # prepared experiment, which would read (or generate) a datalist when the server starts.
        self.parser.update({"bundle_root": bundle_root, "class_names": list(class_names),
                            "validate#preprocessing#intensity_range": "@intensity_range", **dict(overrides)})
        self.parser.get_parsed_content("imports")

    @property
    def metadata_file(self) -> str:
        return os.path.join(self.bundle_root, METADATA)

    @property
    def logging_file(self) -> str:
        return os.path.join(self.bundle_root, LOGGING)

    def get(self, id: str) -> Any:
        """The parsed (instantiated) content of a config id."""
        return self.parser.get_parsed_content(id, instantiate=True)

    def network(self):
        """A new network as ``network_def`` describes it (random weights)."""
        return self.get("network_def")

    def preprocessing(self):
        """The validation preprocessing (load, channel first, intensity scaling; images without a mask get an
        all-ignore label)."""
        return self.get("validate#preprocessing")

    def inferer(self):
        """The validation inferer (a sliding window of the training crop size)."""
        return self.get("validate#inferer")

    def dsp_loss(self):
        """The DSP loss with the training weights."""
        return self.get("dsp_loss")
