"""Training and evaluation workflows on MONAI engines, used by the bundle in ``bundle/``.

- :mod:`dsp_monai.engines.trainer`: :class:`MethodTrainer`, every method as named loss terms (docs/methods.md);
- :mod:`dsp_monai.engines.data`: the transform chains of an experiment's items (made by
  :mod:`dsp_monai.data.experiment`);
- :mod:`dsp_monai.engines.metrics`: per-class Dice (:class:`ClassDice`);
- :mod:`dsp_monai.engines.handlers`: reproducible epochs, validation after the last epoch, a stop on a non-finite loss,
  run summary, overlays, EMA update;
- :mod:`dsp_monai.engines.checkpoints`: atomic checkpoints, and a resume that skips a damaged one;
- :mod:`dsp_monai.engines.evaluation`: test-set reports and inference outputs.
"""

import os

from .checkpoints import CrashSafeCheckpointSaver, IterationSnapshots, ResumeFromCheckpoint
from .handlers import (
    EMAUpdate,
    EpochSeeder,
    IntervalValidation,
    PredictionOverlays,
    ProgressBar,
    RandomStates,
    RunSummary,
    StopOnNonFiniteLoss,
    latest_checkpoint,
)
from .metrics import ClassDice
from .trainer import MethodTrainer

__all__ = [
    "ClassDice",
    "CrashSafeCheckpointSaver",
    "EMAUpdate",
    "EpochSeeder",
    "IntervalValidation",
    "IterationSnapshots",
    "MethodTrainer",
    "PredictionOverlays",
    "ProgressBar",
    "RandomStates",
    "ResumeFromCheckpoint",
    "RunSummary",
    "StopOnNonFiniteLoss",
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
    """The ``class_names`` of a datalist JSON, for the bundle's configuration.

    The datalist is read and fully validated here, once (:func:`dsp_monai.data.datalist.read_datalist` with its
    content checks; the experiment preparation reuses the result). A problem ends the process with its message as
    the last line (:func:`dsp_monai.data.experiment.bundle_errors`).

    Raises:
        SystemExit: for a missing or invalid datalist, naming the file, section, item and key of every problem.
    """
    from dsp_monai.data.datalist import read_datalist
    from dsp_monai.data.experiment import bundle_errors

    with bundle_errors():
        return list(read_datalist(datalist, check_contents=True).class_names)
