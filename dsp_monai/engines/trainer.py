"""The semi-weakly supervised trainer: one MONAI SupervisedTrainer whose iteration is the DSP recipe.

    total = lambda_ce * CE(weak-view logits, masks)
          + ramp * lambda_plf * CE(strong-view logits, filtered pseudo-labels of the weak view)
          + ramp * lambda_dsp * (L_DSP(weak view) + L_DSP(strong view))

(shared/design/method.md §5). The baselines are the same trainer with other weights: FixMatch + PLF is
``lambda_dsp = 0``; the masks-only U-Net is ``lambda_plf = lambda_dsp = 0`` on mask items (no strong view needed).
``ramp`` rises linearly from 0 to 1 over ``warmup_iterations``.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from monai.engines import SupervisedTrainer
from monai.engines.utils import IterationEvents
from monai.utils import CommonKeys as Keys

from dsp_monai.annotations import ANNOTATION_TYPES, collate_annotations
from dsp_monai.losses import DSPLoss, filter_pseudo_labels

__all__ = ["DSPTrainer"]

PSEUDO_LABEL_SOURCES = ("student", "ema")


def _plain(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.as_tensor() if hasattr(tensor, "as_tensor") else tensor


class DSPTrainer(SupervisedTrainer):
    """SupervisedTrainer running the DSP recipe on batches of ``dsp_monai.data.collate.annotated_collate``.

    Args:
        num_classes: C.
        dsp_loss: the :class:`~dsp_monai.losses.DSPLoss` (per-type lambdas; ``distributed`` for multi-GPU), or None
            for methods without it.
        lambda_ce: weight of the cross-entropy on the masks.
        lambda_plf: weight of the pseudo-label cross-entropy on the strong view (0 disables it).
        lambda_dsp: weight of the DSP loss (0 disables it).
        dsp_views: ``"both"`` (weak and strong view, the paper) or ``"weak"``.
        warmup_iterations: iterations over which the PLF and DSP weights ramp up linearly from 0.
        pseudo_label_threshold: minimum softmax confidence of a pseudo-label (0 keeps all, the paper's choice).
        pseudo_label_source: ``"student"`` (the weak-view prediction of the network being trained) or ``"ema"`` (an
            exponential moving average of its weights, in eval mode).
        ema_decay: decay of the EMA teacher.
        ignore_index: the label value of unlabelled pixels.
        **kwargs: SupervisedTrainer arguments (device, max_epochs, train_data_loader, network, optimizer,
            loss_function, train_handlers, amp, ...). ``loss_function`` is unused by the recipe (pass the DSP loss
            or None).

    The network must accept ``forward(images, return_embeddings=True)`` and provide ``prototypes`` and
    ``temperature`` when the DSP loss is on (:class:`dsp_monai.networks.DSPNet`); otherwise any network returning
    logits works.
    """

    def __init__(
        self,
        num_classes: int,
        dsp_loss: DSPLoss | None = None,
        lambda_ce: float = 1.0,
        lambda_plf: float = 1.0,
        lambda_dsp: float = 1.0,
        dsp_views: str = "both",
        warmup_iterations: int = 0,
        pseudo_label_threshold: float = 0.0,
        pseudo_label_source: str = "student",
        ema_decay: float = 0.99,
        ignore_index: int = 255,
        **kwargs,
    ) -> None:
        for name, value in (("lambda_ce", lambda_ce), ("lambda_plf", lambda_plf), ("lambda_dsp", lambda_dsp)):
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(f"DSPTrainer: {name} must be a finite number >= 0; got {value!r}")
        if lambda_dsp > 0 and dsp_loss is None:
            raise ValueError("DSPTrainer: lambda_dsp > 0 needs a dsp_loss (a dsp_monai.losses.DSPLoss)")
        if dsp_views not in ("both", "weak"):
            raise ValueError(f"DSPTrainer: dsp_views must be 'both' or 'weak'; got {dsp_views!r}")
        if pseudo_label_source not in PSEUDO_LABEL_SOURCES:
            raise ValueError(
                f"DSPTrainer: pseudo_label_source must be one of {PSEUDO_LABEL_SOURCES}; got {pseudo_label_source!r}"
            )
        if not 0.0 <= ema_decay < 1.0:
            raise ValueError(f"DSPTrainer: ema_decay must be in [0, 1); got {ema_decay!r}")
        if int(warmup_iterations) < 0:
            raise ValueError(f"DSPTrainer: warmup_iterations must be >= 0; got {warmup_iterations!r}")
        kwargs.setdefault("loss_function", dsp_loss)
        super().__init__(**kwargs)
        network = self.network.module if hasattr(self.network, "module") else self.network
        if lambda_dsp > 0 and not all(hasattr(network, a) for a in ("embed", "prototypes", "temperature")):
            raise TypeError(
                f"DSPTrainer: the DSP loss needs a network whose forward takes return_embeddings=True and that has "
                f"prototypes and temperature "
                f"(dsp_monai.networks.DSPNet); got {type(network).__name__}"
            )
        self.num_classes = int(num_classes)
        self.dsp_loss = dsp_loss
        self.lambda_ce, self.lambda_plf, self.lambda_dsp = float(lambda_ce), float(lambda_plf), float(lambda_dsp)
        self.dsp_views = dsp_views
        self.warmup_iterations = int(warmup_iterations)
        self.pseudo_label_threshold = float(pseudo_label_threshold)
        self.pseudo_label_source = pseudo_label_source
        self.ema_decay = float(ema_decay)
        self.ignore_index = int(ignore_index)
        self.teacher = None
        if pseudo_label_source == "ema" and lambda_plf > 0:
            self.teacher = copy.deepcopy(network).eval()
            for parameter in self.teacher.parameters():
                parameter.requires_grad_(False)

    def ramp(self, iteration: int) -> float:
        """The weight multiplier of the PLF and DSP terms at a 1-based iteration."""
        if self.warmup_iterations <= 0:
            return 1.0
        return min(1.0, iteration / self.warmup_iterations)

    @property
    def uses_strong_view(self) -> bool:
        return self.lambda_plf > 0 or (self.lambda_dsp > 0 and self.dsp_views == "both")

    def _update_teacher(self) -> None:
        network = self.network.module if hasattr(self.network, "module") else self.network
        with torch.no_grad():
            for t, s in zip(self.teacher.parameters(), network.parameters()):
                t.mul_(self.ema_decay).add_(s.detach(), alpha=1.0 - self.ema_decay)
            for t, s in zip(self.teacher.buffers(), network.buffers()):
                t.copy_(s)

    def _iteration(self, engine, batchdata: Mapping) -> dict:
        if batchdata is None:
            raise ValueError("DSPTrainer: the data loader returned no batch")
        device = engine.state.device
        images_w = _plain(batchdata["image"]).to(device, non_blocking=engine.non_blocking)
        labels = _plain(batchdata["label"]).to(device, non_blocking=engine.non_blocking).long()
        labels = labels.squeeze(1) if labels.dim() == images_w.dim() else labels
        spatial = tuple(images_w.shape[2:])
        batch_size = images_w.shape[0]
        annotations = collate_annotations(batchdata, self.num_classes, spatial, self.ignore_index, device)
        ramp = self.ramp(engine.state.iteration)
        use_strong = engine.uses_strong_view
        if use_strong:
            if "image_strong" not in batchdata:
                raise KeyError(
                    "DSPTrainer: the PLF / strong-view DSP terms need 'image_strong' in the batch; add "
                    "dsp_monai.transforms.views.WeakStrongViewsd to the training transforms"
                )
            images_s = _plain(batchdata["image_strong"]).to(device, non_blocking=engine.non_blocking)
            inputs = torch.cat([images_w, images_s])
        else:
            inputs = images_w

        engine.network.train()
        engine.optimizer.zero_grad(set_to_none=engine.optim_set_to_none)
        autocast = torch.autocast(device.type if isinstance(device, torch.device) else str(device), enabled=engine.amp,
                                  dtype=torch.bfloat16)
        terms = {}
        with autocast:
            if self.lambda_dsp > 0:
                network = engine.network.module if hasattr(engine.network, "module") else engine.network
                # Through the (possibly DistributedDataParallel) wrapper, so gradients are synchronised.
                embeddings = engine.network(inputs, return_embeddings=True)
                prototypes, temperature = network.prototypes, network.temperature
                out_w = self.dsp_loss(embeddings[:batch_size], prototypes, temperature, annotations)
                logits_w = out_w["logits"]
                dsp_total = out_w["total"]
                terms.update({f"dsp_{k}": out_w[k].detach() for k in ("mask", "box", "point", "image")})
                logits_s = None
                if use_strong:
                    if self.dsp_views == "both":
                        out_s = self.dsp_loss(embeddings[batch_size:], prototypes, temperature, annotations)
                        logits_s = out_s["logits"]
                        dsp_total = dsp_total + out_s["total"]
                    else:
                        logits_s = network.head.score(embeddings[batch_size:])
            else:
                logits = engine.network(inputs)
                logits_w = logits[:batch_size]
                logits_s = logits[batch_size:] if use_strong else None
                dsp_total = logits_w.new_zeros(())
            labelled = labels != self.ignore_index
            ce = (
                F.cross_entropy(logits_w.float(), labels, ignore_index=self.ignore_index)
                if bool(labelled.any()) else logits_w.new_zeros((), dtype=torch.float32)
            )
            plf = logits_w.new_zeros((), dtype=torch.float32)
            if self.lambda_plf > 0:
                if self.teacher is not None:
                    with torch.no_grad():
                        teacher_logits = self.teacher(images_w)
                else:
                    teacher_logits = logits_w.detach()
                pseudo = filter_pseudo_labels(teacher_logits, annotations, self.pseudo_label_threshold,
                                              self.ignore_index)
                if bool((pseudo != self.ignore_index).any()):
                    plf = F.cross_entropy(logits_s.float(), pseudo, ignore_index=self.ignore_index)
            loss = self.lambda_ce * ce + ramp * (self.lambda_plf * plf + self.lambda_dsp * dsp_total.float())
        loss_terms, loss_weights = {"ce": ce, "plf": plf}, {"ce": self.lambda_ce, "plf": ramp * self.lambda_plf}
        if self.lambda_dsp > 0:
            views = {"weak": out_w, "strong": out_s} if use_strong and self.dsp_views == "both" else {"weak": out_w}
            for view, out in views.items():
                for kind, weight in zip(ANNOTATION_TYPES, self.dsp_loss.weights):
                    loss_terms[f"dsp_{view}_{kind}"] = out[kind]
                    loss_weights[f"dsp_{view}_{kind}"] = ramp * self.lambda_dsp * weight
        # Live (graph-attached) terms before backward, for opt-in handlers (dsp_monai.engines.diagnostics).
        engine.state.output = {Keys.LOSS: loss, "loss_terms": loss_terms, "loss_weights": loss_weights}
        engine.fire_event(IterationEvents.LOSS_COMPLETED)
        loss.backward()
        engine.optimizer.step()
        if self.teacher is not None:
            self._update_teacher()
        terms.update({"ce": ce.detach(), "plf": plf.detach(), "dsp": dsp_total.detach().float(), "ramp": ramp})
        engine.state.output = {
            Keys.IMAGE: images_w,
            Keys.LABEL: labels.unsqueeze(1),
            Keys.PRED: logits_w.detach(),
            Keys.LOSS: loss.detach(),
            "terms": terms,
        }
        return engine.state.output
