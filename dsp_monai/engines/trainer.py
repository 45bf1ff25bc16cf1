"""The trainer of every method: a MONAI SupervisedTrainer whose iteration runs a method given as named loss terms.

One iteration: the views the terms read -> one forward pass of the network over them (named outputs) -> each term
on one :class:`~dsp_monai.losses.BatchContext` -> ``loss = sum_t weight_t * schedule_t(iteration) * term_t`` ->
backward and optimiser step. The methods (DSP, FixMatch + PLF, the masks-only U-Net, the point-distance branches)
are configuration files listing their terms (configs/methods/, docs/methods.md); none is code here.

Events (MONAI's ``IterationEvents``): ``FORWARD_COMPLETED`` after the forward pass; ``LOSS_COMPLETED`` after the terms,
before backward, with ``engine.state.output["loss_terms"]`` (name -> the live, unweighted scalar of each term) and
``engine.state.output["loss_weights"]`` (name -> its effective weight at this iteration); ``BACKWARD_COMPLETED``;
``MODEL_COMPLETED`` after the optimiser step. After the iteration ``engine.state.output`` holds ``"loss"`` (the
detached total), ``"terms"`` (name -> float), ``"term_parts"`` (``<name>_<part>`` -> float, e.g. the DSP loss per
annotation type) and ``"loss_weights"``.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from monai.engines import SupervisedTrainer
from monai.engines.utils import IterationEvents
from monai.utils import CommonKeys as Keys

from dsp_monai.annotations import collate_annotations
from dsp_monai.losses import VIEWS, BatchContext, build_loss_terms, required_outputs, required_views

__all__ = ["MethodTrainer"]

VIEW_KEYS = dict(zip(VIEWS, ("image", "image_strong")))
"""The batch key of each view of :data:`dsp_monai.losses.VIEWS` (weak, strong)."""


def _plain(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.as_tensor() if hasattr(tensor, "as_tensor") else tensor


def _unwrapped(network: torch.nn.Module) -> torch.nn.Module:
    return network.module if hasattr(network, "module") else network


class MethodTrainer(SupervisedTrainer):
    """SupervisedTrainer running a method's loss terms on batches of ``dsp_monai.data.collate.annotated_collate``.

    Args:
        loss_terms: the method: name -> ``{"weight": w, "term": callable, "schedule": callable or None}`` (or
            :class:`~dsp_monai.losses.LossTerm`), as :func:`dsp_monai.losses.build_loss_terms` takes it. Terms of
            weight 0 are off.
        num_classes: C.
        ignore_index: the label value of unlabelled pixels.
        **kwargs: SupervisedTrainer arguments (device, max_epochs, train_data_loader, network, optimizer,
            train_handlers, amp, ...). ``loss_function`` is not used (the terms are the loss).

    The network is called once per iteration through its wrapper (so DistributedDataParallel synchronises
    gradients): ``network(images)`` when the terms read only ``logits``, else ``network(images, outputs=names)``
    returning a dict (:class:`~dsp_monai.networks.DSPNet`, :class:`~dsp_monai.networks.AuxiliaryHeadUNet`). When
    ``embeddings`` are read, the logits are the prototype scores of the embeddings
    (:meth:`~dsp_monai.losses.BatchContext.logits`), computed once per view.

    Raises:
        ValueError / TypeError: for a malformed ``loss_terms`` (see :func:`dsp_monai.losses.build_loss_terms`), or a
            network without the named outputs the terms read.
    """

    def __init__(self, loss_terms, num_classes: int, ignore_index: int = 255, **kwargs) -> None:
        kwargs.setdefault("loss_function", None)
        # The batch carries per-image annotation lists (possibly empty tensors) that MONAI's decollation at
        # MODEL_COMPLETED cannot split; the handlers read the batch-level output, so nothing is decollated.
        kwargs.setdefault("decollate", False)
        super().__init__(**kwargs)
        self.loss_terms = build_loss_terms(loss_terms)
        self.num_classes, self.ignore_index = int(num_classes), int(ignore_index)
        self.views = required_views(loss_terms)
        outputs = set(required_outputs(loss_terms))
        if "embeddings" in outputs:
            outputs.discard("logits")
        self.network_outputs = tuple(sorted(outputs))
        if self.network_outputs != ("logits",):
            available = getattr(_unwrapped(self.network), "output_names", ())
            missing = set(self.network_outputs) - set(available)
            if missing:
                readers = [t.name for t in self.loss_terms if missing & set(t.outputs)]
                raise TypeError(
                    f"MethodTrainer: the terms {readers} read the network outputs {sorted(missing)}, which "
                    f"{type(_unwrapped(self.network)).__name__} does not provide (its outputs: "
                    f"{list(available) or ['logits']}); use a network with them (dsp_monai.networks)"
                )

    def _forward(self, engine, views: dict) -> dict:
        """The network's outputs on each view: ``{view: {output name: tensor}}``, from one call."""
        images = torch.cat(list(views.values())) if len(views) > 1 else next(iter(views.values()))
        if self.network_outputs == ("logits",):
            outputs = {"logits": engine.network(images)}
        else:
            outputs = engine.network(images, outputs=self.network_outputs)
        sizes = [view.shape[0] for view in views.values()]
        split = {name: value.split(sizes) for name, value in outputs.items()}
        return {view: {name: parts[i] for name, parts in split.items()} for i, view in enumerate(views)}

    def _iteration(self, engine, batchdata: Mapping) -> dict:
        if batchdata is None:
            raise ValueError("MethodTrainer: the data loader returned no batch")
        device, non_blocking = engine.state.device, engine.non_blocking
        views = {}
        for view in self.views:
            if VIEW_KEYS[view] not in batchdata:
                readers = [t.name for t in self.loss_terms if view in t.views]
                raise KeyError(
                    f"MethodTrainer: the terms {readers} read the {view} view, but the batch has no "
                    f"'{VIEW_KEYS[view]}'; add dsp_monai.transforms.views.WeakStrongViewsd to the training transforms"
                )
            views[view] = _plain(batchdata[VIEW_KEYS[view]]).to(device, non_blocking=non_blocking)
        images = _plain(batchdata["image"]).to(device, non_blocking=non_blocking)
        labels = _plain(batchdata["label"]).to(device, non_blocking=non_blocking).long()
        labels = labels.squeeze(1) if labels.dim() == images.dim() else labels
        annotations = collate_annotations(batchdata, self.num_classes, tuple(images.shape[2:]), self.ignore_index,
                                          device)
        iteration = engine.state.iteration

        engine.network.train()
        engine.optimizer.zero_grad(set_to_none=engine.optim_set_to_none)
        device_type = device.type if isinstance(device, torch.device) else str(device)
        with torch.autocast(device_type, enabled=engine.amp, dtype=torch.bfloat16):
            outputs = self._forward(engine, views)
            engine.fire_event(IterationEvents.FORWARD_COMPLETED)
            context = BatchContext(views, labels, annotations, outputs, iteration, _unwrapped(engine.network))
            values, parts = {}, {}
            for term in self.loss_terms:
                value = term.term(context)
                if isinstance(value, Mapping):
                    parts.update({f"{term.name}_{k}": v for k, v in value.items() if k != "total"})
                    value = value["total"]
                values[term.name] = value
            weights = {term.name: term.weight_at(iteration) for term in self.loss_terms}
            loss = sum(weights[name] * value.float() for name, value in values.items())
        pred = context.logits("weak").detach() if context.has_logits("weak") else None
        engine.state.output = {Keys.IMAGE: images, Keys.LABEL: labels.unsqueeze(1), Keys.PRED: pred,
                               Keys.LOSS: loss, "loss_terms": values, "loss_weights": weights}
        engine.fire_event(IterationEvents.LOSS_COMPLETED)
        loss.backward()
        engine.fire_event(IterationEvents.BACKWARD_COMPLETED)
        engine.optimizer.step()
        engine.fire_event(IterationEvents.MODEL_COMPLETED)

        logged = torch.stack([v.detach().float() for v in (*values.values(), *parts.values())]).tolist()
        engine.state.output = {
            Keys.IMAGE: images,
            Keys.LABEL: labels.unsqueeze(1),
            Keys.PRED: pred,
            Keys.LOSS: loss.detach(),
            "terms": dict(zip(values, logged[: len(values)])),
            "term_parts": dict(zip(parts, logged[len(values):])),
            "loss_weights": weights,
        }
        return engine.state.output
