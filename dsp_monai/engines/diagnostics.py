"""Opt-in training diagnostics: what each loss term does to the network, logged to TensorBoard.

Contract with the trainer: before ``backward`` it fires MONAI's ``IterationEvents.LOSS_COMPLETED`` with
``engine.state.output["loss_terms"]`` (term name -> live, graph-attached, unweighted scalar) and
``engine.state.output["loss_weights"]`` (term name -> the weight the term enters the total with at this
iteration). Every ``interval`` iterations :class:`LossDiagnostics` records, per term:

- ``value``: the unweighted term;
- ``weight``: its effective weight;
- ``grad_backbone`` / ``grad_prototypes``: the L2 norm of the gradient of the *weighted* term with respect to the
  shared backbone parameters (``network.backbone``, else every parameter but the prototypes) and to the
  prototypes (``torch.autograd.grad(..., retain_graph=True)``, so training is untouched);

the same norms for the weighted sum of all terms (``total``) and of the DSP terms (``dsp_all``), far below the sum
of the per-term norms when the terms pull against each other; for a network with prototypes (C, K, D), the norm of
each class's mean normalised prototype (1 when its K prototypes agree, smaller when they spread) and the pairwise
cosines between the classes' mean prototypes; and the share of valid training pixels whose possible-class set holds
a single class (how much the batch's annotations pin down). After every validation it records the per-class
validation Dice.

Scalars go to TensorBoard under ``diagnostics/...`` and, one JSON object per record, to
``output_dir/diagnostics.jsonl`` (for plots). Cost: one extra backward pass per term every ``interval``
iterations; nothing otherwise. Enable it in the bundle with ``--diagnostics true``.
"""

from __future__ import annotations

import json
import os

import torch
from ignite.engine import Engine, Events
from monai.engines.utils import IterationEvents

from dsp_monai.engines.metrics import per_class_from_metrics

__all__ = ["LossDiagnostics", "prototype_geometry", "single_class_share"]


def prototype_geometry(prototypes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Norms (C,) of the classes' mean normalised prototypes and the (C, C) cosines between those means.

    Args:
        prototypes: (C, K, D).
    """
    with torch.no_grad():
        mean = torch.nn.functional.normalize(prototypes.detach().float(), dim=-1).mean(dim=1)
        norms = mean.norm(dim=-1)
        unit = mean / norms.clamp_min(1e-12).unsqueeze(-1)
        return norms, unit @ unit.T


def single_class_share(allowed: torch.Tensor, valid: torch.Tensor | None = None) -> float:
    """Share of valid pixels whose possible-class bit set has exactly one bit.

    Args:
        allowed: (B, *spatial) integer bit masks of the possible classes.
        valid: (B, *spatial) bool, or None for all valid.
    """
    bits = allowed.long()
    single = (bits != 0) & ((bits & (bits - 1)) == 0)
    if valid is not None:
        single, count = single[valid], int(valid.sum())
    else:
        count = single.numel()
    return float(single.sum()) / max(count, 1)


class LossDiagnostics:
    """Per-term values and gradient norms, prototype geometry, annotation coverage and per-class validation Dice.

    Args:
        output_dir: folder of the TensorBoard events and ``diagnostics.jsonl``.
        num_classes: C (for the annotation coverage of the training batch).
        evaluator: the validation engine whose :class:`~dsp_monai.engines.metrics.ClassDice` is recorded, or None.
        metric_name: that metric's name.
        interval: record the training quantities every this many iterations (>= 1).
        ignore_index: the label value of unlabelled pixels.
        summary_writer: a ``SummaryWriter``; default one on ``output_dir``.
    """

    def __init__(self, output_dir: str, num_classes: int, evaluator: Engine | None = None,
                 metric_name: str = "val_mean_dice", interval: int = 25, ignore_index: int = 255,
                 summary_writer=None) -> None:
        if isinstance(interval, bool) or not isinstance(interval, int) or interval < 1:
            raise ValueError(f"LossDiagnostics: interval must be an integer >= 1; got {interval!r}")
        self.output_dir, self.num_classes, self.evaluator = output_dir, int(num_classes), evaluator
        self.metric_name, self.interval, self.ignore_index = metric_name, interval, int(ignore_index)
        self.writer = summary_writer
        self.trainer: Engine | None = None

    def attach(self, trainer: Engine) -> None:
        self.trainer = trainer
        if self.writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(self.output_dir)
        trainer.add_event_handler(IterationEvents.LOSS_COMPLETED, self._loss_completed)
        if self.evaluator is not None:
            self.evaluator.add_event_handler(Events.COMPLETED, self._validated)

    def _record(self, record: dict) -> None:
        step = record["iteration"]
        for key, value in record.items():
            if key not in ("iteration", "epoch", "kind") and isinstance(value, (int, float)):
                self.writer.add_scalar(f"diagnostics/{key}", value, step)
        os.makedirs(self.output_dir, exist_ok=True)
        with open(os.path.join(self.output_dir, "diagnostics.jsonl"), "a") as handle:
            handle.write(json.dumps(record) + "\n")

    @staticmethod
    def _parameters(network: torch.nn.Module) -> tuple[list, list]:
        found = getattr(network, "prototypes", None)
        prototypes = [found] if isinstance(found, torch.nn.Parameter) else []
        ids = {id(p) for p in prototypes}
        source = network.backbone if hasattr(network, "backbone") else network
        backbone = [p for p in source.parameters() if p.requires_grad and id(p) not in ids]
        return backbone, prototypes

    @staticmethod
    def _grad_norm(term: torch.Tensor, parameters: list) -> float:
        if not parameters or not term.requires_grad:
            return 0.0
        grads = torch.autograd.grad(term, parameters, retain_graph=True, allow_unused=True)
        squares = [g.detach().float().pow(2).sum() for g in grads if g is not None]
        return float(torch.stack(squares).sum().sqrt()) if squares else 0.0

    def _loss_completed(self, engine: Engine) -> None:
        if engine.state.iteration % self.interval:
            return
        output = engine.state.output
        terms, weights = output.get("loss_terms"), output.get("loss_weights")
        if terms is None or weights is None:
            raise KeyError(
                "LossDiagnostics: the trainer's LOSS_COMPLETED output must hold 'loss_terms' and 'loss_weights'; "
                f"got keys {sorted(map(str, output))}"
            )
        network = engine.network.module if hasattr(engine.network, "module") else engine.network
        backbone, prototypes = self._parameters(network)
        record = {"kind": "train", "iteration": engine.state.iteration, "epoch": engine.state.epoch}
        for name, term in terms.items():
            weight = float(weights.get(name, 0.0))
            record[f"{name}/value"] = float(term.detach())
            record[f"{name}/weight"] = weight
            if weight > 0 and isinstance(term, torch.Tensor) and term.requires_grad:
                record[f"{name}/grad_backbone"] = self._grad_norm(weight * term, backbone)
                record[f"{name}/grad_prototypes"] = self._grad_norm(weight * term, prototypes)
        weighted = [float(weights.get(n, 0.0)) * t for n, t in terms.items()
                    if float(weights.get(n, 0.0)) > 0 and isinstance(t, torch.Tensor) and t.requires_grad]
        if weighted:
            total = torch.stack([t.float() for t in weighted]).sum()
            record["total/grad_backbone"] = self._grad_norm(total, backbone)
            record["total/grad_prototypes"] = self._grad_norm(total, prototypes)
            dsp = [float(weights[n]) * t for n, t in terms.items() if n.startswith("dsp") and float(weights[n]) > 0]
            if dsp:
                dsp_total = torch.stack([t.float() for t in dsp]).sum()
                record["dsp_all/grad_backbone"] = self._grad_norm(dsp_total, backbone)
        if prototypes:
            norms, cosines = prototype_geometry(prototypes[0])
            for c in range(norms.shape[0]):
                record[f"prototypes/norm_{c}"] = float(norms[c])
                for k in range(c + 1, norms.shape[0]):
                    record[f"prototypes/cos_{c}_{k}"] = float(cosines[c, k])
        batch = getattr(engine.state, "batch", None)
        if isinstance(batch, dict) and "label" in batch:
            record["annotations/single_class_share"] = self._coverage(batch)
        self._record(record)

    def _coverage(self, batch: dict) -> float:
        from dsp_monai.annotations import collate_annotations

        image = batch["image"]
        spatial = tuple(image.shape[2:])
        annotations = collate_annotations(batch, self.num_classes, spatial, self.ignore_index, torch.device("cpu"))
        return single_class_share(annotations.allowed, annotations.valid)

    def _validated(self, evaluator: Engine) -> None:
        trainer = self.trainer
        per_class = per_class_from_metrics(evaluator.state.metrics, self.metric_name)
        record = {"kind": "validation", "iteration": trainer.state.iteration, "epoch": trainer.state.epoch,
                  "val/mean": evaluator.state.metrics.get(self.metric_name)}
        record.update({f"val/{name}": value for name, value in per_class.items() if value is not None})
        self._record(record)
