"""Training and evaluation workflows on MONAI engines, used by the bundle in ``bundle/``.

- :mod:`dsp_monai.engines.trainer`: :class:`MethodTrainer`, every method as named loss terms (docs/methods.md);
- :mod:`dsp_monai.engines.data`: from a datalist to an experiment's items and their transform chains;
- :mod:`dsp_monai.engines.metrics`: per-class Dice (:class:`ClassDice`);
- :mod:`dsp_monai.engines.handlers`: reproducible epochs, resumable checkpoints, run summary, overlays, EMA update;
- :mod:`dsp_monai.engines.evaluation`: test-set reports and inference outputs.
"""

import json
import os

from .handlers import (
    EMAUpdate,
    EpochSeeder,
    PredictionOverlays,
    ProgressBar,
    RandomStates,
    RunSummary,
    latest_checkpoint,
)
from .metrics import ClassDice
from .trainer import MethodTrainer

__all__ = [
    "ClassDice",
    "EMAUpdate",
    "EpochSeeder",
    "MethodTrainer",
    "PredictionOverlays",
    "ProgressBar",
    "RandomStates",
    "RunSummary",
    "bundle_root",
    "class_names_of",
    "latest_checkpoint",
]


def bundle_root() -> str:
    """The bundle folder: ``$DSP_MONAI_BUNDLE_ROOT`` if set, else the ``bundle/`` folder of the checkout this package
    was imported from, else the current directory (MONAI Label and ``--bundle_root`` override it)."""
    if os.environ.get("DSP_MONAI_BUNDLE_ROOT"):
        return os.path.abspath(os.environ["DSP_MONAI_BUNDLE_ROOT"])
    checkout = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "bundle")
    if os.path.isfile(os.path.join(checkout, "configs", "metadata.json")):
        return checkout
    return os.getcwd()


def class_names_of(datalist: str) -> list:
    """The ``class_names`` of a datalist JSON (without validating its items).

    Raises:
        FileNotFoundError: when the file does not exist.
        ValueError: when it holds no ``class_names`` list.
    """
    if not os.path.isfile(datalist):
        raise FileNotFoundError(f"datalist not found: {datalist} (set the config's `datalist` to your JSON file)")
    with open(datalist) as handle:
        content = json.load(handle)
    names = content.get("class_names") if isinstance(content, dict) else None
    if not isinstance(names, list) or not names:
        raise ValueError(f"{datalist}: expected a non-empty list under 'class_names'; got {names!r}")
    return names
