"""Test-set reports and inference outputs: per-class Dice tables, and predicted masks written in the input's format
(NIfTI, PNG / TIFF, zarr) with overlay pictures."""

from __future__ import annotations

import json
import logging
import os
import re

import numpy as np
import torch
from ignite.engine import Engine, Events
from monai.utils import CommonKeys as Keys

from dsp_monai.data.datalist import load_datalist
from dsp_monai.data.files import write_json, write_text
from dsp_monai.data.readers import is_zarr_path, parse_zarr_path
from dsp_monai.engines.metrics import per_class_from_metrics

__all__ = ["PredictionWriter", "TestReport", "class_names_for", "inference_items", "markdown_dice_table"]

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".mha", ".mhd", ".tif", ".tiff", ".png")


def markdown_dice_table(summary: dict, title: str = "Dice") -> str:
    """A Markdown table of ``{"mean", "per_class"}`` (classes absent from the labels shown as n/a)."""
    lines = [f"| class | {title} |", "|---|---|"]
    for name, value in summary["per_class"].items():
        lines.append(f"| {name} | {'n/a' if value is None else f'{100 * value:.1f}'} |")
    lines.append(f"| **mean** | **{100 * summary['mean']:.1f}** |")
    return "\n".join(lines) + "\n"


class TestReport:
    """When an evaluation completes, writes its per-class and mean Dice to ``<output_dir>/<name>.json`` and
    ``<name>.md`` (a Markdown table), and logs the mean.

    Args:
        output_dir: folder of the report.
        metric_name: the evaluator's :class:`~dsp_monai.engines.metrics.ClassDice` metric.
        name: file name stem.
        extra: anything else to record in the JSON (checkpoint, split, ...).
    """

    def __init__(self, output_dir: str, metric_name: str = "val_mean_dice", name: str = "test_metrics",
                 extra=None) -> None:
        self.output_dir, self.metric_name, self.name, self.extra = output_dir, metric_name, name, dict(extra or {})

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        summary = {
            "mean": engine.state.metrics[self.metric_name],
            "per_class": per_class_from_metrics(engine.state.metrics, self.metric_name),
        }
        write_json(os.path.join(self.output_dir, f"{self.name}.json"),
                   {**self.extra, "images": len(engine.data_loader.dataset), "dice": summary})
        write_text(os.path.join(self.output_dir, f"{self.name}.md"), markdown_dice_table(summary, "Dice (%)"))
        logger.info("test mean Dice %.4f over %d classes; report in %s", summary["mean"],
                    sum(v is not None for v in summary["per_class"].values()),
                    os.path.join(self.output_dir, f"{self.name}.md"))


def inference_items(source: str, section: str | None = None) -> list[dict]:
    """Items ``{"image": path}`` to segment: every image of a folder (by suffix), or the items of a datalist JSON
    (one section, or all).

    Raises:
        FileNotFoundError: when ``source`` does not exist.
        ValueError: when a folder holds no image.
    """
    if not os.path.exists(source):
        raise FileNotFoundError(f"inference input not found: {source} (a folder of images or a datalist JSON)")
    if os.path.isdir(source) and not source.rstrip("/").endswith(".zarr"):
        names = sorted(n for n in os.listdir(source) if n.lower().endswith(IMAGE_SUFFIXES))
        if not names:
            raise ValueError(f"{source} holds no image ending in {IMAGE_SUFFIXES}")
        return [{"image": os.path.join(source, n)} for n in names]
    items, _ = load_datalist(source, section)
    return [{"image": item["image"]} for item in items]


def class_names_for(source: str, metadata: str) -> list:
    """Class names of a datalist (when ``source`` is one), else of the bundle metadata's ``channel_def``."""
    if os.path.isfile(source) and source.endswith(".json"):
        with open(source) as handle:
            names = json.load(handle).get("class_names")
        if names:
            return list(names)
    with open(metadata) as handle:
        channel_def = json.load(handle)["network_data_format"]["outputs"]["pred"]["channel_def"]
    return [channel_def[str(i)] for i in range(len(channel_def))]


def _stem(path: str) -> str:
    if is_zarr_path(path):
        selector = parse_zarr_path(path)
        store = os.path.basename(os.path.normpath(selector.store)).removesuffix(".zarr")
        parts = [store] + [f"{k}{v}" for k, v in (("", selector.crop), ("", selector.axis), ("", selector.index))
                           if v is not None]
        return re.sub(r"[^A-Za-z0-9_.-]+", "_", "_".join(str(p) for p in parts))
    name = os.path.basename(path)
    for suffix in sorted(IMAGE_SUFFIXES, key=len, reverse=True):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return os.path.splitext(name)[0]


def _affine_of(meta, ndim: int) -> np.ndarray | None:
    """The input's affine ``(ndim + 1, ndim + 1)`` float64 from its metadata (the original one when the image was
    reoriented), or None."""
    affine = meta.get("original_affine", meta.get("affine"))
    if affine is None:
        return None
    affine = np.asarray(affine.cpu() if isinstance(affine, torch.Tensor) else affine, dtype=np.float64)
    return affine if affine.shape == (ndim + 1, ndim + 1) else None


class PredictionWriter:
    """Writes each predicted label map (uint8) in its input's format, plus an overlay PNG.

    NIfTI inputs get a NIfTI mask with the input's affine (so its spacing and orientation); PNG / TIFF inputs a PNG /
    TIFF mask; NRRD / MHA inputs an ITK image; zarr crops a zarr array (v2) with the source selector, the voxel size
    (``spacing``) and the affine of the crop in its attributes. Files are named after the input
    in ``output_dir`` (``<stem>_seg.<ext>``); overlays go to ``output_dir/overlays``.

    Args:
        output_dir: destination folder.
        num_classes: C (for the overlay colours).
        overlays: also write overlay PNGs.
    """

    def __init__(self, output_dir: str, num_classes: int, overlays: bool = True) -> None:
        self.output_dir, self.num_classes, self.overlays = output_dir, int(num_classes), overlays

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        outputs = engine.state.output if isinstance(engine.state.output, list) else [engine.state.output]
        for out in outputs:
            pred = out[Keys.PRED]
            labels = pred.argmax(0) if pred.shape[0] > 1 else pred[0]
            image = out[Keys.IMAGE]
            meta = getattr(image, "meta", {})
            source = str(meta.get("filename_or_obj", "image"))
            self.write(np.asarray(labels.detach().cpu()).astype(np.uint8), source, meta)
            if self.overlays:
                self.write_overlay(image[0].detach().float().cpu().numpy(), np.asarray(labels.cpu()), source)

    def write(self, labels: np.ndarray, source: str, meta) -> str:
        """Writes one label map next to its input's name and returns the path."""
        os.makedirs(self.output_dir, exist_ok=True)
        stem = os.path.join(self.output_dir, _stem(source) + "_seg")
        lower = source.lower()
        if is_zarr_path(source):
            import zarr

            path = stem + ".zarr"
            array = zarr.open_array(path, mode="w", shape=labels.shape, dtype="uint8", zarr_format=2)
            array[...] = labels
            array.attrs["source"] = source
            array.attrs["description"] = "predicted class ids (dsp_monai)"
            affine = _affine_of(meta, labels.ndim)
            if affine is not None:
                array.attrs["spacing"] = [float(v) for v in np.linalg.norm(affine[:-1, :-1], axis=0)]
                array.attrs["affine"] = affine.tolist()
        elif lower.endswith((".nii", ".nii.gz")):
            import nibabel as nib

            affine = meta.get("original_affine", meta.get("affine", np.eye(4)))
            affine = np.asarray(affine.cpu() if isinstance(affine, torch.Tensor) else affine, dtype=np.float64)
            if affine.shape != (4, 4):
                affine = np.eye(4)
            path = stem + ".nii.gz"
            nib.save(nib.Nifti1Image(labels, affine), path)
        elif lower.endswith((".tif", ".tiff")):
            import tifffile

            path = stem + ".tif"
            tifffile.imwrite(path, labels)
        elif lower.endswith((".nrrd", ".mha", ".mhd")):
            import itk

            path = stem + (".nrrd" if lower.endswith(".nrrd") else ".mha")
            itk.imwrite(itk.image_from_array(labels), path)
        else:
            from PIL import Image

            path = stem + ".png"
            Image.fromarray(labels).save(path)
        return path

    def write_overlay(self, image: np.ndarray, labels: np.ndarray, source: str) -> str:
        """Writes the image and the image with the predicted classes coloured over it, side by side; for a volume
        one such row per axis, each through the middle of that axis (rows padded to the widest with black)."""
        from PIL import Image

        from dsp_monai.engines.handlers import overlay

        if image.ndim == 2:
            planes = [(image, labels)]
        else:
            planes = [(np.take(image, image.shape[a] // 2, axis=a), np.take(labels, labels.shape[a] // 2, axis=a))
                      for a in range(image.ndim)]
        rows = [np.concatenate([overlay(i, np.full(l.shape, -1), self.num_classes),
                                overlay(i, l, self.num_classes)], axis=1) for i, l in planes]
        width = max(row.shape[1] for row in rows)
        picture = np.concatenate([np.pad(row, ((0, 0), (0, width - row.shape[1]), (0, 0))) for row in rows], axis=0)
        folder = os.path.join(self.output_dir, "overlays")
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, _stem(source) + "_overlay.png")
        Image.fromarray(picture).save(path)
        return path
