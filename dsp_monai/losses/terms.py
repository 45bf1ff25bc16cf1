"""A training method as data: named loss terms, each a weight, an optional schedule and a small callable of one batch.

A method (DSP, FixMatch + PLF, the masks-only U-Net, the point-distance branches; docs/methods.md) is the mapping
``name -> {"weight": w, "schedule": s, "term": callable}`` of its configuration file (``configs/methods/``). The
trainer (:class:`dsp_monai.engines.MethodTrainer`) builds the views the terms need, runs the network once over them,
hands every term one :class:`BatchContext` and minimises ``sum_t weight_t * schedule_t(iteration) * term_t(context)``.

A term is any callable ``term(context) -> scalar tensor`` with two attributes:

- ``views``: the input views it reads (``"weak"``: the training image; ``"strong"``: its strongly augmented copy);
- ``outputs``: the network outputs it reads (``"logits"``, ``"embeddings"`` or an auxiliary head's name).

It may instead return a mapping holding ``"total"`` (the term's value) and further scalars, its parts, logged as
``<name>_<part>`` (the DSP loss's per-annotation-type values). A term with nothing to learn from in a batch returns a
constant zero, which has no autograd graph (``requires_grad`` is False).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch

from ..annotations import AnnotationBatch
from .dsp import prototype_scores

__all__ = [
    "BatchContext",
    "LinearWarmup",
    "LossTerm",
    "VIEWS",
    "build_loss_terms",
    "loss_weights",
    "required_outputs",
    "required_views",
]

VIEWS = ("weak", "strong")
"""The input views a term can ask for, in the order the trainer concatenates them for the network."""


class LinearWarmup:
    """Schedule rising linearly from 0 to 1 over the first ``iterations`` iterations (1-based), then 1.

    Args:
        iterations: length of the warm-up (0: always 1).

    Raises:
        ValueError: for a negative or non-integer length.

    Example:
        >>> [LinearWarmup(4)(i) for i in (1, 2, 4, 9)]
        [0.25, 0.5, 1.0, 1.0]
    """

    def __init__(self, iterations: int) -> None:
        if isinstance(iterations, bool) or int(iterations) != iterations or iterations < 0:
            raise ValueError(f"LinearWarmup: iterations must be an integer >= 0; got {iterations!r}")
        self.iterations = int(iterations)

    def __call__(self, iteration: int) -> float:
        if self.iterations <= 0:
            return 1.0
        return min(1.0, iteration / self.iterations)

    def __repr__(self) -> str:
        return f"LinearWarmup(iterations={self.iterations})"


@dataclass(frozen=True)
class LossTerm:
    """One named term of a method: ``weight * schedule(iteration) * term(context)``.

    Attributes:
        name: the term's name (its log and TensorBoard tag).
        weight: finite and >= 0; a term of weight 0 is off (not computed, its views not built).
        term: the callable (see the module docstring).
        schedule: ``schedule(iteration) -> float`` multiplying the weight (1-based iterations), or None for 1.
    """

    name: str
    weight: float
    term: Callable
    schedule: Callable[[int], float] | None = None

    def weight_at(self, iteration: int) -> float:
        """The effective weight at a 1-based iteration."""
        return self.weight * (1.0 if self.schedule is None else float(self.schedule(iteration)))

    @property
    def views(self) -> tuple:
        return tuple(self.term.views)

    @property
    def outputs(self) -> tuple:
        return tuple(self.term.outputs)


_SPEC_KEYS = {"weight", "term", "schedule"}


def _loss_term(name, spec) -> LossTerm:
    if isinstance(spec, LossTerm):
        return spec
    where = f"loss_terms#{name}"
    if not isinstance(spec, Mapping):
        raise TypeError(f"{where}: expected a mapping with keys weight, term and optionally schedule; got "
                        f"{type(spec).__name__}")
    unknown = set(spec) - _SPEC_KEYS
    missing = {"weight", "term"} - set(spec)
    if unknown or missing:
        raise ValueError(f"{where}: expected the keys weight, term and optionally schedule; "
                         f"unknown {sorted(unknown)}, missing {sorted(missing)}")
    weight = spec["weight"]
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight) or weight < 0:
        raise ValueError(f"{where}#weight must be a finite number >= 0; got {weight!r}")
    term, schedule = spec["term"], spec.get("schedule")
    if not callable(term):
        raise TypeError(f"{where}#term must be callable (a loss term of dsp_monai.losses); got {type(term).__name__}")
    for attribute in ("views", "outputs"):
        if not hasattr(term, attribute):
            raise TypeError(f"{where}#term ({type(term).__name__}) must say which {attribute} it reads "
                            f"(a '{attribute}' attribute)")
    bad_views = set(term.views) - set(VIEWS)
    if bad_views:
        raise ValueError(f"{where}#term reads unknown views {sorted(bad_views)}; the views are {list(VIEWS)}")
    if schedule is not None and not callable(schedule):
        raise TypeError(f"{where}#schedule must be callable (iteration -> factor) or null; got {schedule!r}")
    return LossTerm(str(name), float(weight), term, schedule)


def build_loss_terms(loss_terms) -> list:
    """The active terms of a method's ``loss_terms`` mapping (name -> LossTerm or {weight, term, schedule}), in
    order; terms of weight 0 are left out.

    Raises:
        ValueError: for an empty method, or an entry without weight / term, with an unknown key, a negative or
            non-finite weight or an unknown view; the message names the entry and key.
        TypeError: for an entry that is not a mapping or whose term is not a loss term.
    """
    if not isinstance(loss_terms, Mapping) or not loss_terms:
        raise ValueError(f"loss_terms must be a non-empty mapping of term names to {{weight, term, schedule}}; "
                         f"got {loss_terms!r}")
    terms = [_loss_term(name, spec) for name, spec in loss_terms.items()]
    active = [t for t in terms if t.weight > 0]
    if not active:
        raise ValueError(f"loss_terms: every term has weight 0 ({[t.name for t in terms]}); nothing would be trained")
    return active


def required_views(loss_terms) -> tuple:
    """The views the active terms read, in :data:`VIEWS` order (the training transforms build only these)."""
    wanted = {view for term in build_loss_terms(loss_terms) for view in term.views}
    return tuple(view for view in VIEWS if view in wanted)


def required_outputs(loss_terms) -> tuple:
    """The network outputs the active terms read (sorted)."""
    return tuple(sorted({name for term in build_loss_terms(loss_terms) for name in term.outputs}))


def loss_weights(loss_terms) -> dict:
    """``{name: weight}`` of the active terms (for run summaries)."""
    return {term.name: term.weight for term in build_loss_terms(loss_terms)}


@dataclass
class BatchContext:
    """What every loss term of one training iteration sees.

    Attributes:
        views: view name -> (B, channels, *spatial) images on the training device.
        labels: (B, *spatial) int64 pixel labels (``ignore_index`` where unlabelled).
        annotations: the batch's annotations, collated once (:class:`~dsp_monai.annotations.AnnotationBatch`).
        outputs: view name -> {output name -> tensor}: the network's outputs on each view.
        iteration: the 1-based training iteration.
        network: the network being trained (unwrapped from DistributedDataParallel), for its prototypes and
            temperature.
    """

    views: dict
    labels: torch.Tensor
    annotations: AnnotationBatch
    outputs: dict
    iteration: int
    network: torch.nn.Module
    _scores: dict = field(default_factory=dict, repr=False)

    def scores(self, view: str) -> tuple:
        """``(logits, log_z)`` of a view's embeddings against the network's prototypes, computed once per view by
        the fused operator (:func:`dsp_monai.losses.dsp.prototype_scores`)."""
        if view not in self._scores:
            outputs = self.outputs[view]
            if "embeddings" not in outputs:
                raise KeyError(f"the {view} view has no 'embeddings' output (it has {sorted(outputs)}); a term that "
                               "scores embeddings must list 'embeddings' in its outputs")
            self._scores[view] = prototype_scores(
                outputs["embeddings"], self.network.prototypes, self.network.temperature, self.annotations
            )
        return self._scores[view]

    def logits(self, view: str) -> torch.Tensor:
        """(B, C, *spatial) class scores of a view: the network's ``logits`` output, or the prototype scores of its
        embeddings."""
        outputs = self.outputs[view]
        if "logits" in outputs:
            return outputs["logits"]
        return self.scores(view)[0]

    def has_logits(self, view: str) -> bool:
        """Whether a view's logits exist without further computation."""
        return view in self.outputs and ("logits" in self.outputs[view] or view in self._scores)
