"""Ignite / MONAI handlers of the training workflow: reproducible epochs, resumable checkpoints, the run summary,
prediction overlays, the progress bar and the EMA teacher's update."""

from __future__ import annotations

import json
import logging
import math
import os
import random
import time

import numpy as np
import torch
from ignite.engine import Engine, Events
from monai.handlers import ValidationHandler

from dsp_monai.data.files import write_json
from dsp_monai.engines.checkpoints import saved_checkpoints
from dsp_monai.engines.metrics import per_class_from_metrics

__all__ = [
    "EMAUpdate",
    "EpochSeeder",
    "IntervalValidation",
    "PredictionOverlays",
    "ProgressBar",
    "RandomStates",
    "RunSummary",
    "StopOnNonFiniteLoss",
    "latest_checkpoint",
    "overlay",
]

logger = logging.getLogger(__name__)


class RandomStates:
    """The random generators (python, numpy, torch CPU and CUDA) as a checkpointable object with
    ``state_dict`` / ``load_state_dict``, so a resumed run draws the same numbers as an uninterrupted one."""

    def state_dict(self) -> dict:
        # Tensors and plain lists only, so checkpoints load with torch.load(weights_only=True).
        version, internal, gauss = random.getstate()
        kind, keys, pos, has_gauss, cached = np.random.get_state()
        state = {
            "python": [version, list(internal), gauss],
            "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)],
            "torch": torch.get_rng_state(),
        }
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state: dict) -> None:
        version, internal, gauss = state["python"]
        random.setstate((version, tuple(internal), gauss))
        kind, keys, pos, has_gauss, cached = state["numpy"]
        np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
        torch.set_rng_state(state["torch"])
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])


def latest_checkpoint(folder: str, pattern: str = "checkpoint_epoch=*.pt") -> str | None:
    """The checkpoint of the highest epoch in ``folder`` (MONAI CheckpointSaver's names), or None (whether it reads
    back whole is :func:`dsp_monai.engines.checkpoints.checkpoint_problem`'s question)."""
    found = saved_checkpoints(folder, pattern)
    return found[0][1] if found else None


class EpochSeeder:
    """At the start of every epoch, seeds everything random from ``(seed, epoch)``: the global generators, the
    dataset's random transforms and the sampler. Each epoch's augmentation and batch order are then a function of the
    seed and the epoch alone, whatever happened before (a resumed run repeats them exactly).

    Args:
        seed: base seed.
        dataset: a dataset whose transforms get ``set_random_state`` (MONAI Dataset / CacheDataset), or None.
        sampler: a sampler with ``set_epoch`` (StratifiedAnnotationSampler, DistributedSampler), or None.
        rank: the process rank (distributed runs draw different augmentations per rank).
    """

    def __init__(self, seed: int = 0, dataset=None, sampler=None, rank: int = 0) -> None:
        self.seed, self.dataset, self.sampler, self.rank = int(seed), dataset, sampler, int(rank)

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self)

    def __call__(self, engine: Engine) -> None:
        epoch_seed = (self.seed * 100_003 + engine.state.epoch * 1_009 + self.rank) % (2**31 - 1)
        random.seed(epoch_seed)
        np.random.seed(epoch_seed)
        torch.manual_seed(epoch_seed)
        if self.dataset is not None:
            target = self.dataset if hasattr(self.dataset, "set_random_state") else getattr(self.dataset, "transform", None)
            if target is None or not hasattr(target, "set_random_state"):
                raise TypeError(
                    f"EpochSeeder: cannot seed the random transforms of {type(self.dataset).__name__}; expected a "
                    "dataset (or a dataset.transform) with set_random_state, such as monai.data.Dataset with a Compose"
                )
            target.set_random_state(seed=epoch_seed)
        if self.sampler is not None and hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(engine.state.epoch)


class RunSummary:
    """Writes ``metrics.json`` in ``output_dir`` when training completes (and after every validation): the best
    and last validation Dice per class, epochs, iterations and time; logs the best validation Dice.

    Args:
        output_dir: where the JSON goes.
        evaluator: the validation engine (its metrics are read).
        metric_name: the key validation metric (a :class:`~dsp_monai.engines.metrics.ClassDice`).
        extra: anything else to record (the experiment's parameters).
    """

    def __init__(self, output_dir: str, evaluator: Engine, metric_name: str = "val_mean_dice", extra=None) -> None:
        self.output_dir, self.evaluator, self.metric_name = output_dir, evaluator, metric_name
        self.extra = dict(extra or {})
        self.best: dict | None = None
        self.start = time.time()

    def attach(self, trainer: Engine) -> None:
        self.evaluator.add_event_handler(Events.COMPLETED, self._validated, trainer)
        trainer.add_event_handler(Events.COMPLETED, self._write, True)

    def _validated(self, evaluator: Engine, trainer: Engine) -> None:
        value = evaluator.state.metrics.get(self.metric_name)
        per_class = per_class_from_metrics(evaluator.state.metrics, self.metric_name)
        last = {"epoch": trainer.state.epoch, "mean": value, "per_class": per_class}
        if self.best is None:
            # a resumed run: the best validation of the epochs before the interruption
            self.best = self._previous().get("best_validation")
        if self.best is None or (value is not None and value > self.best["mean"]):
            self.best = last
        self._write(trainer, False, last)

    def _previous(self) -> dict:
        """What metrics.json holds from earlier (an interrupted run of the same command), or {}."""
        path = os.path.join(self.output_dir, "metrics.json")
        if not os.path.exists(path):
            return {}
        with open(path) as handle:
            return json.load(handle)

    def _write(self, trainer: Engine, final: bool, last: dict | None = None) -> None:
        path = os.path.join(self.output_dir, "metrics.json")
        previous = self._previous()
        if self.best is None and "best_validation" in previous:
            self.best = previous["best_validation"]
        summary = {
            **previous,
            **self.extra,
            "epochs": trainer.state.epoch,
            "iterations": trainer.state.iteration,
            "finished": final,
            "best_validation": self.best,
        }
        if last is not None:
            summary["last_validation"] = last
        summary["seconds"] = previous.get("seconds", 0.0) + (time.time() - self.start)
        self.start = time.time()
        write_json(path, summary)
        if final and self.best is not None:
            logger.info(
                "training finished: best validation mean Dice %.4f at epoch %d (%s)",
                self.best["mean"], self.best["epoch"],
                ", ".join(f"{k} {v:.3f}" for k, v in self.best["per_class"].items() if v is not None),
            )


def _palette(num_classes: int) -> np.ndarray:
    import matplotlib

    cmap = matplotlib.colormaps["tab20"].resampled(max(num_classes, 2))
    return (np.array([cmap(i)[:3] for i in range(num_classes)]) * 255).astype(np.uint8)


def overlay(image: np.ndarray, labels: np.ndarray, num_classes: int, ignore_index: int = 255,
            alpha: float = 0.45) -> np.ndarray:
    """An RGB uint8 picture of a 2D grey image (H, W, values in [0, 1]) with a label map coloured over it
    (``ignore_index`` and out-of-range values left uncoloured)."""
    grey = np.clip(image, 0.0, 1.0)
    rgb = np.repeat((grey * 255).astype(np.float32)[..., None], 3, axis=2)
    colours = _palette(num_classes).astype(np.float32)
    known = (labels >= 0) & (labels < num_classes) & (labels != ignore_index)
    rgb[known] = (1 - alpha) * rgb[known] + alpha * colours[labels[known]]
    return rgb.astype(np.uint8)


class PredictionOverlays:
    """After each validation, writes to TensorBoard one picture per image of the first validation batch: image,
    label overlay, prediction overlay side by side (2D images; the middle slice of 3D ones).

    Args:
        summary_writer: a ``torch.utils.tensorboard.SummaryWriter``.
        num_classes: C.
        trainer: the training engine (its epoch is the TensorBoard step), or None.
        max_images: images of the first batch to show.
        tag: TensorBoard tag prefix.
    """

    def __init__(self, summary_writer, num_classes: int, trainer: Engine | None = None, max_images: int = 4,
                 tag: str = "validation/overlay") -> None:
        self.writer, self.num_classes, self.trainer = summary_writer, num_classes, trainer
        self.max_images, self.tag = max_images, tag

    def attach(self, evaluator: Engine) -> None:
        # Each validation run restarts the evaluator's iteration count, so this fires once per validation.
        evaluator.add_event_handler(Events.ITERATION_COMPLETED(once=1), self._capture)

    def _capture(self, evaluator: Engine) -> None:
        from dsp_monai.engines.metrics import dice_output_transform

        preds, labels = dice_output_transform(evaluator.state.output)
        images = evaluator.state.output
        images = torch.stack([o["image"] for o in images]) if isinstance(images, list) else images["image"]
        step = self.trainer.state.epoch if self.trainer is not None else evaluator.state.epoch
        for i in range(min(self.max_images, preds.shape[0])):
            image, label, pred = images[i, 0], labels[i, 0], preds[i, 0]
            if image.dim() == 3:
                middle = image.shape[0] // 2
                image, label, pred = image[middle], label[middle], pred[middle]
            picture = np.concatenate(
                [
                    overlay(image.float().cpu().numpy(), np.full(tuple(label.shape), -1), self.num_classes),
                    overlay(image.float().cpu().numpy(), label.cpu().numpy(), self.num_classes),
                    overlay(image.float().cpu().numpy(), pred.cpu().numpy(), self.num_classes),
                ],
                axis=1,
            )
            self.writer.add_image(f"{self.tag}/{i}", picture, step, dataformats="HWC")


class ProgressBar:
    """A tqdm progress bar over each epoch's iterations showing the loss and each loss term by name (ignite's
    ProgressBar, attachable from a bundle config, which calls ``attach(engine)`` only).

    Args:
        persist: keep each epoch's bar on screen when it ends.
        loss_key: the engine output's loss entry.
        terms_key: the engine output's entry of the loss terms (name -> float), shown after the loss.
    """

    def __init__(self, persist: bool = False, loss_key: str = "loss", terms_key: str = "terms") -> None:
        from ignite.handlers import ProgressBar as IgniteProgressBar

        self.bar = IgniteProgressBar(persist=persist)
        self.loss_key, self.terms_key = loss_key, terms_key

    def _shown(self, output) -> dict:
        return {self.loss_key: float(output[self.loss_key]), **output.get(self.terms_key, {})}

    def attach(self, engine: Engine) -> None:
        self.bar.attach(engine, output_transform=self._shown)


class EMAUpdate:
    """After every training iteration, one step of an :class:`~dsp_monai.networks.EMATeacher` towards the network.

    Args:
        teacher: the EMA teacher.
        network: the network being trained (None: the engine's network).
    """

    def __init__(self, teacher, network=None) -> None:
        if not hasattr(teacher, "update"):
            raise TypeError(f"EMAUpdate: teacher must be a dsp_monai.networks.EMATeacher; got {type(teacher).__name__}")
        self.teacher, self.network = teacher, network

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        self.teacher.update(self.network if self.network is not None else engine.network)


class IntervalValidation(ValidationHandler):
    """MONAI's epoch-level ValidationHandler that also validates after the last epoch, whatever the interval, so
    every run ends with a validation (its Dice in ``metrics.json``, the best model saved).

    Args:
        interval: validate every ``interval`` epochs, and after the last one.
        validator: the evaluator to run.
        exec_at_start: also validate before the first epoch.
    """

    def __init__(self, interval: int, validator=None, exec_at_start: bool = False) -> None:
        if int(interval) < 1:
            raise ValueError(f"IntervalValidation: interval must be an int >= 1 (epochs); got {interval!r}")
        super().__init__(interval=int(interval), validator=validator, epoch_level=True, exec_at_start=exec_at_start)

    def _due(self, engine: Engine, epoch: int) -> bool:
        return epoch % self.interval == 0 or epoch == engine.state.max_epochs

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED(event_filter=self._due), self)
        if self.exec_at_start:
            engine.add_event_handler(Events.STARTED, self)


class StopOnNonFiniteLoss:
    """Stops training with an error at the first iteration whose loss (or any loss term) is NaN or infinite, before
    the epoch ends: that epoch is never checkpointed, so the checkpoints of the earlier epochs stay the newest.

    Reads ``engine.state.output[loss_key]`` and the dicts ``engine.state.output[terms_key]`` (term name -> value) and
    ``engine.state.output[parts_key]`` (``<term>_<part>`` -> value, when present).

    Args:
        loss_key: the output's total loss.
        terms_key: the output's named loss terms.
        parts_key: the output's named parts of the terms.

    Raises:
        FloatingPointError: naming the epoch, the iteration, the loss and every non-finite term and part with its
            value.
    """

    def __init__(self, loss_key: str = "loss", terms_key: str = "terms", parts_key: str = "term_parts") -> None:
        self.loss_key, self.terms_key, self.parts_key = loss_key, terms_key, parts_key

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        output = engine.state.output
        loss = float(output[self.loss_key])
        named = {**(output.get(self.terms_key) or {}), **(output.get(self.parts_key) or {})}
        bad = {name: float(value) for name, value in named.items() if not math.isfinite(float(value))}
        if math.isfinite(loss) and not bad:
            return
        listed = ", ".join(f"{name} = {value}" for name, value in bad.items()) or "none (only their weighted sum)"
        raise FloatingPointError(
            f"training stopped at iteration {engine.state.iteration} (epoch {engine.state.epoch}): the loss is "
            f"{loss}; non-finite terms: {listed}. Nothing of epoch {engine.state.epoch} is saved; the checkpoints of "
            "the earlier epochs are kept, and running the same command resumes from the newest. Check the inputs "
            "of this epoch's batches and consider a lower learning_rate."
        )
