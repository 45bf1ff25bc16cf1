"""Per-class Dice for validation and test: MONAI's DiceMetric on label maps, the ignore value excluded."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.handlers import IgniteMetricHandler
from monai.metrics import DiceMetric
from monai.utils import CommonKeys as Keys

__all__ = ["ClassDice", "dice_output_transform", "per_class_from_metrics", "summarise_dice"]


def dice_output_transform(output):
    """Engine output (dict or list of per-image dicts) -> (argmax label maps, labels), both (B, 1, *spatial)."""
    if isinstance(output, (list, tuple)):
        preds = torch.stack([o[Keys.PRED] for o in output])
        labels = torch.stack([o[Keys.LABEL] for o in output])
    else:
        preds, labels = output[Keys.PRED], output[Keys.LABEL]
    if preds.shape[1] > 1:  # logits or probabilities -> label map
        preds = preds.argmax(dim=1, keepdim=True)
    if labels.dim() == preds.dim() - 1:
        labels = labels.unsqueeze(1)
    return preds.long(), labels.long()


def summarise_dice(per_class: torch.Tensor, present: torch.Tensor, class_names: Sequence[str]) -> dict:
    """``{"mean": float, "per_class": {name: float or None}}``; a class never present in the labels is None and
    takes no part in the mean."""
    values = {}
    for index, name in enumerate(class_names):
        values[name] = float(per_class[index]) if bool(present[index]) else None
    scored = [v for v in values.values() if v is not None]
    return {"mean": sum(scored) / len(scored) if scored else float("nan"), "per_class": values}


def per_class_from_metrics(metrics: dict, name: str) -> dict:
    """The per-class Dice a :class:`ClassDice` named ``name`` stored in an engine's metrics, None for absent classes."""
    values = metrics.get(f"{name}_per_class", {})
    return {k: (None if v is None or v != v else float(v)) for k, v in values.items()}


class ClassDice(IgniteMetricHandler):
    """Mean Dice over classes (each class averaged over the images where it is present), with the per-class values
    stored in ``engine.state.metrics["<name>_per_class"]`` (a dict name -> Dice, NaN for a class absent from every
    label; :func:`per_class_from_metrics` turns NaN into None).

    Args:
        class_names: the classes, in id order; labels equal to ``ignore_index`` are excluded.
        ignore_index: the label value of unannotated pixels.
        output_transform: maps the engine output to (predictions, labels); default :func:`dice_output_transform`.
    """

    def __init__(self, class_names: Sequence[str], ignore_index: int = 255, output_transform=dice_output_transform):
        self.class_names = list(class_names)
        metric = DiceMetric(
            include_background=True,
            reduction="mean_batch",
            get_not_nans=True,
            num_classes=len(self.class_names),
            ignore_index=ignore_index,
        )
        super().__init__(metric_fn=metric, output_transform=output_transform, save_details=False)
        self.summary: dict = {}

    def compute(self):
        per_class, not_nans = self.metric_fn.aggregate()
        self.summary = summarise_dice(per_class.cpu(), not_nans.cpu() > 0, self.class_names)
        return self.summary["mean"]

    def completed(self, engine, name) -> None:
        super().completed(engine, name)
        # NaN (not None) for absent classes, so metric printers and TensorBoard take every entry as a number.
        engine.state.metrics[f"{name}_per_class"] = {
            k: (float("nan") if v is None else v) for k, v in self.summary["per_class"].items()
        }
