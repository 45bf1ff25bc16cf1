"""The DSP loss: decoupled prototype contrast against every annotation type at once (docs/method.md, supplement
S.3-S.8).

    L_DSP = sum_l lambda_l sum_c [ |Omega_c^l| > 0 ] * ( log Z_c - mean(Omega_c^l) )              (S.8)

with Z_c the decoupled denominator of S.3 (computed by the fused operator
:func:`dsp_monai.ops.prototype_logsumexp`) and Omega_c^l the positive scores of class c from annotation type
l in (mask, box, point, image).
"""

import math
from typing import Dict, Union

import torch
from torch.autograd.function import once_differentiable
from torch.nn.modules.loss import _Loss

from ..annotations import POSITIVE_TYPES, AnnotationBatch, collate_annotations
from ..ops import prototype_logsumexp
from .distributed import all_reduce_max, all_reduce_sum, check_option, resolve_group

__all__ = [
    "DSPLoss",
    "DSPTerm",
    "dsp_loss",
    "dsp_loss_from_scores",
    "positive_sums",
    "prepare_annotations",
    "prototype_scores",
]


def _shape(tensor_or_sizes) -> list:
    sizes = tensor_or_sizes.shape if isinstance(tensor_or_sizes, torch.Tensor) else tensor_or_sizes
    return [int(s) for s in sizes]


def prepare_annotations(
    annotations, num_classes: int, spatial_shape, batch_size: int, device, ignore_index: int = 255
) -> AnnotationBatch:
    """``annotations`` as an :class:`AnnotationBatch` matching a (B, C, *spatial) prediction on ``device``.

    Collates a list of records or a batch dict (:func:`dsp_monai.annotations.collate_annotations`), or checks that
    an already collated batch matches.

    Args:
        annotations: records, a batch dict or an :class:`AnnotationBatch`.
        num_classes: C.
        spatial_shape: the prediction's spatial shape.
        batch_size: B.
        device: the prediction's device.
        ignore_index: the label value of unlabelled pixels.

    Returns:
        The matching :class:`AnnotationBatch`.

    Raises:
        ValueError: when a collated batch does not match (batch size, spatial shape, classes, ignore value,
            device), or as :func:`collate_annotations`.
    """
    if not isinstance(annotations, AnnotationBatch):
        annotations = collate_annotations(annotations, num_classes, spatial_shape, ignore_index, device)
    expected = (batch_size, tuple(int(s) for s in spatial_shape), num_classes, ignore_index, torch.device(device))
    got = (
        annotations.batch_size,
        annotations.spatial_shape,
        annotations.num_classes,
        annotations.ignore_index,
        annotations.device,
    )
    if expected != got:
        raise ValueError(
            "the annotations do not match the prediction: expected (batch size, spatial shape, classes, ignore value, "
            f"device) = {expected}, got {got}"
        )
    return annotations


_SUM_DTYPE = torch.float64
"""Positive scores are summed in float64: a class's mask pixels can number tens of millions in a 3D batch."""


class _PositiveSums(torch.autograd.Function):
    """Sums of the positive scores per type and class; the backward pass writes one dense gradient of the logits
    (a single zero fill and scatter, instead of one dense buffer per gather that autograd would add up). No
    host-device synchronisation: lines without a valid pixel are masked, not dropped."""

    @staticmethod
    def forward(ctx, logits, annotations, dtype):
        flat = logits.detach().reshape(-1)
        sums = torch.zeros(len(POSITIVE_TYPES), annotations.num_classes, dtype=_SUM_DTYPE, device=logits.device)
        sums[0].index_add_(0, annotations.mask_classes, flat.index_select(0, annotations.mask_index).to(_SUM_DTYPE))
        sums[2].index_add_(0, annotations.point_classes, flat.index_select(0, annotations.point_index).to(_SUM_DTYPE))

        ctx.line_winner = None
        lines = annotations.box_line_classes.shape[0]
        if lines:
            ndim, pixels = annotations.box_pixel_lines.shape
            scores = flat.index_select(0, annotations.box_pixel_index).to(dtype)
            scores = scores.masked_fill(~annotations.box_pixel_valid, -math.inf)
            scores, line_of = scores.repeat(ndim), annotations.box_pixel_lines.reshape(-1)
            line_max = scores.new_full((lines,), -math.inf).scatter_reduce_(0, line_of, scores, "amax")
            # the first pixel reaching its line's maximum receives the line's gradient
            entries = ndim * pixels
            position = torch.arange(entries, device=flat.device)
            candidate = torch.where(scores == line_max.index_select(0, line_of), position, entries)
            winner = torch.full((lines,), entries, device=flat.device).scatter_reduce_(0, line_of, candidate, "amin")
            ctx.line_winner = annotations.box_pixel_index.index_select(0, winner.clamp(max=entries - 1) % pixels)
            line_max = torch.where(annotations.box_line_valid, line_max, torch.zeros_like(line_max))
            sums[1].index_add_(0, annotations.box_line_classes, line_max.to(_SUM_DTYPE))

        ctx.tag_softmax = None
        if annotations.tag_images.shape[0]:
            scores = _tag_scores(flat, annotations, dtype)
            shift = scores.amax(dim=1, keepdim=True)
            softmax = scores.sub_(shift).exp_()
            normaliser = softmax.sum(dim=1, keepdim=True)
            counts = annotations.valid_counts[annotations.tag_images].to(dtype)
            log_mean = (normaliser.log() + shift).squeeze(1) - counts.log()
            sums[3].index_add_(0, annotations.tag_classes, log_mean.to(_SUM_DTYPE))
            ctx.tag_softmax = softmax.div_(normaliser)

        ctx.annotations = annotations
        ctx.save_for_backward(logits)
        return sums

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_sums):
        (logits,) = ctx.saved_tensors
        annotations = ctx.annotations
        grad = torch.zeros(logits.numel(), dtype=logits.dtype, device=logits.device)
        index = [annotations.mask_index, annotations.point_index]
        values = [grad_sums[0][annotations.mask_classes], grad_sums[2][annotations.point_classes]]
        if ctx.line_winner is not None:
            index.append(ctx.line_winner)
            values.append(grad_sums[1][annotations.box_line_classes] * annotations.box_line_valid)
        grad.index_add_(0, torch.cat(index), torch.cat(values).to(logits.dtype))
        if ctx.tag_softmax is not None:
            weights = grad_sums[3].index_select(0, annotations.tag_classes).to(ctx.tag_softmax.dtype)
            weighted = (ctx.tag_softmax * weights.unsqueeze(1)).to(logits.dtype)
            rows = annotations.tag_images * annotations.num_classes + annotations.tag_classes
            grad.view(annotations.batch_size * annotations.num_classes, -1).index_add_(0, rows, weighted)
        return grad.view(logits.shape), None, None


def _tag_scores(flat_logits: torch.Tensor, annotations: AnnotationBatch, dtype: torch.dtype) -> torch.Tensor:
    """(T, N) scores s_c of each tagged (image, class) pair (a fresh tensor), -inf at padding."""
    batch_size, classes = annotations.batch_size, annotations.num_classes
    rows = annotations.tag_images * classes + annotations.tag_classes
    scores = flat_logits.view(batch_size * classes, -1).index_select(0, rows).to(dtype)
    if not annotations.all_valid:
        invalid = ~annotations.valid.reshape(batch_size, -1).index_select(0, annotations.tag_images)
        scores = scores.masked_fill(invalid, -math.inf)
    return scores


def positive_sums(logits: torch.Tensor, annotations: AnnotationBatch, dtype: torch.dtype) -> torch.Tensor:
    """Sum of the positive scores per annotation type and class (docs/method.md), differentiable w.r.t. ``logits``.

    Mask and point positives are the scores at the labelled pixels and points; box positives the maximum of the
    box's class score over each line of the box (rows and columns in 2D, the slices along each axis in 3D; padding
    excluded); image positives log(mean over the image's valid pixels of exp s_c) per tagged (image, class).

    Args:
        logits: (B, C, *spatial) class scores s_c (already divided by the temperature).
        annotations: the matching :class:`AnnotationBatch`.
        dtype: the dtype of the score arithmetic (that of log Z: float32, or float64 for float64 logits).

    Returns:
        (4, C) float64 sums, rows in (mask, box, point, image) order; divide by ``annotations.counts`` for the means
        of S.8. Differentiable once (the gradient of a line maximum goes to its first maximal pixel).
    """
    return _PositiveSums.apply(logits, annotations, dtype)


CLASS_REDUCTIONS = ("sum", "mean")


def check_class_reduction(class_reduction) -> str:
    """``class_reduction`` if it is one of :data:`CLASS_REDUCTIONS`, else a ValueError."""
    if class_reduction not in CLASS_REDUCTIONS:
        raise ValueError(f"class_reduction must be one of {CLASS_REDUCTIONS}; got {class_reduction!r}")
    return class_reduction


def _global_log_z(log_z: torch.Tensor, group) -> torch.Tensor:
    shift = all_reduce_max(log_z, group)
    shift = torch.where(torch.isfinite(shift), shift, torch.zeros_like(shift))
    return all_reduce_sum(torch.exp(log_z - shift), group).log() + shift


def dsp_loss(
    embeddings: torch.Tensor,
    prototypes: torch.Tensor,
    temperature: float,
    annotations,
    ignore_index: int = 255,
    distributed: Union[bool, object] = False,
    class_reduction: str = "sum",
) -> Dict[str, torch.Tensor]:
    """The DSP loss of every annotation type (docs/method.md, supplement S.3-S.8), with all lambdas 1.

    For each type l in (mask, box, point, image) the term is ``sum_c [|Omega_c^l| > 0] (log Z_c -
    mean(Omega_c^l))``: mask positives are the scores s_c of the pixels labelled c; point positives the scores
    at the points of class c; box positives, for every box of class c, every axis and every index along it inside
    the box, the maximum of s_c over the box's slice at that index (its rows and columns in 2D); image positives,
    for every image tagged with c, log(mean over its valid pixels of exp s_c). Z_c (S.3) sums, over every valid
    pixel of the batch, exp s_k for k != c and exp s_c where c is impossible. A class with positives but no
    negatives (log Z_c = -inf: only with C = 1 or no valid pixel) contributes 0.

    Args:
        embeddings: (B, D, *spatial) pixel embeddings (2D or 3D; float16 / bfloat16 / float32 / float64).
        prototypes: (C, K, D) class prototypes, C <= 63.
        temperature: tau > 0 (scores are mean cosines / tau).
        annotations: per-image records, a batch dict (``annotated_collate``'s layout) or an
            :class:`~dsp_monai.annotations.AnnotationBatch` already collated for this batch (collate once and reuse
            it for both views and the pseudo-labels).
        ignore_index: the label value of unlabelled pixels.
        distributed: False (this process's batch only), True (the default process group) or a
            ``torch.distributed.ProcessGroup``: Z_c then sums over the whole global batch and the positive means
            run over every rank's positives, differentiably, so every rank gets the loss of the concatenated batch
            (see :mod:`dsp_monai.losses.distributed` for the gradient convention under DistributedDataParallel).
        class_reduction: how a type's per-class terms combine: ``"sum"`` (S.8 as written: the term, and its
            gradient, grow with the number of classes that have positives) or ``"mean"`` (divided by that number,
            so the term's scale no longer depends on the class count; a type without positives stays 0).

    Returns:
        dict of float tensors: ``"mask"``, ``"box"``, ``"point"``, ``"image"`` (scalars, each zero when the type has
        no positives), ``"total"`` (their sum), ``"logits"`` (B, C, *spatial) scores s_c in the embeddings' dtype
        (for cross-entropy and pseudo-labels) and ``"log_z"`` (C,) (global when ``distributed``). The scalars are
        float32 (float64 for float64 embeddings).

    Raises:
        ValueError: when the annotations do not match the embeddings, or are invalid (see
            :func:`dsp_monai.annotations.collate_annotations`).
        RuntimeError: from the operator on wrong shapes or dtypes, or when ``distributed`` is set but
            torch.distributed is not initialised.

    Example:
        >>> import torch
        >>> from dsp_monai.losses import dsp_loss
        >>> embeddings = torch.randn(2, 8, 16, 16, requires_grad=True)
        >>> prototypes = torch.randn(3, 5, 8, requires_grad=True)
        >>> records = [
        ...     {"tags": torch.tensor([0, 2])},
        ...     {"points": torch.tensor([[4, 5]]), "point_classes": torch.tensor([1])},
        ... ]
        >>> out = dsp_loss(embeddings, prototypes, 0.05, records)
        >>> out["total"].backward()
        >>> sorted(out)
        ['box', 'image', 'log_z', 'logits', 'mask', 'point', 'total']
    """
    if embeddings.dim() < 3:
        raise ValueError(f"embeddings must have shape (B, D, *spatial); got shape {_shape(embeddings)}")
    if prototypes.dim() != 3:
        raise ValueError(f"prototypes must have shape (C, K, D); got shape {_shape(prototypes)}")
    check_class_reduction(class_reduction)
    group = resolve_group(distributed)
    batch = prepare_annotations(
        annotations, prototypes.shape[0], embeddings.shape[2:], embeddings.shape[0], embeddings.device, ignore_index
    )
    logits, log_z = prototype_scores(embeddings, prototypes, temperature, batch)
    return dsp_loss_from_scores(logits, log_z, batch, group, class_reduction)


def prototype_scores(embeddings: torch.Tensor, prototypes: torch.Tensor, temperature: float,
                     annotations: AnnotationBatch) -> tuple:
    """``(logits, log_z)``: the class scores s_c (B, C, *spatial) of the embeddings and the decoupled log Z_c (C,)
    of S.3 under the annotations' possible classes, in one pass of :func:`dsp_monai.ops.prototype_logsumexp`.

    Args:
        embeddings: (B, D, *spatial) pixel embeddings.
        prototypes: (C, K, D) class prototypes.
        temperature: tau > 0.
        annotations: the :class:`AnnotationBatch` of the batch (its possible classes and valid pixels).
    """
    valid = None if annotations.all_valid else annotations.valid
    return prototype_logsumexp(embeddings, prototypes, float(temperature), annotations.allowed, valid)


def dsp_loss_from_scores(logits: torch.Tensor, log_z: torch.Tensor, batch: AnnotationBatch,
                         group=None, class_reduction: str = "sum") -> Dict[str, torch.Tensor]:
    """The DSP loss of :func:`dsp_loss` (all lambdas 1) from the scores of :func:`prototype_scores`.

    Args:
        logits: (B, C, *spatial) class scores s_c.
        log_z: (C,) log Z_c of this process's batch.
        batch: the matching :class:`AnnotationBatch`.
        group: None, or the process group to reduce Z_c and the positives over (see :func:`dsp_loss`).
        class_reduction: ``"sum"`` or ``"mean"`` over the classes with positives (see :func:`dsp_loss`).

    Returns:
        the dict of :func:`dsp_loss`.
    """
    sums = positive_sums(logits, batch, log_z.dtype)
    counts = batch.counts.to(sums.dtype)
    if group is not None:
        log_z = _global_log_z(log_z, group)
        sums, counts = all_reduce_sum(torch.stack([sums, counts]), group).unbind(0)
    means = (sums / counts.clamp(min=1)).to(log_z.dtype)
    finite = torch.isfinite(log_z)
    safe_log_z = torch.where(finite, log_z, torch.zeros_like(log_z))
    present = (counts > 0) & finite
    terms = torch.where(present, safe_log_z - means, torch.zeros_like(means)).sum(dim=1)
    if class_reduction == "mean":
        terms = terms / present.sum(dim=1).clamp(min=1).to(terms.dtype)
    out = {name: terms[row] for row, name in enumerate(POSITIVE_TYPES)}
    out["total"] = terms.sum()
    out["logits"] = logits
    out["log_z"] = log_z
    return out


class DSPLoss(_Loss):
    """The DSP loss with a weight per annotation type (CVPR 2023, "Decoupled Semantic Prototypes enable learning
    from diverse annotation types for semi-weakly segmentation in expert-driven domains", supplement S.8).

    ``total = lambda_mask * mask + lambda_box * box + lambda_point * point + lambda_image * image``, each term as in
    :func:`dsp_loss`.

    Args:
        lambda_mask: weight of the pixel-mask term (>= 0).
        lambda_box: weight of the box term (>= 0).
        lambda_point: weight of the point term (>= 0).
        lambda_image: weight of the image-tag term (>= 0).
        ignore_index: the label value of unlabelled pixels (not a class id).
        distributed: False, True (default process group) or a ``torch.distributed.ProcessGroup``: reduce Z_c and
            the positive means over the global batch (see :func:`dsp_loss`).
        class_reduction: ``"sum"`` (S.8) or ``"mean"`` over the classes with positives, per type (see
            :func:`dsp_loss`).

    Raises:
        ValueError: for a negative or non-finite weight, a non-integer ignore_index or an unknown class_reduction.
        TypeError: when ``distributed`` is neither a bool nor a ProcessGroup.

    Example:
        >>> import torch
        >>> from dsp_monai.losses import DSPLoss
        >>> loss_fn = DSPLoss(lambda_image=0.5)
        >>> embeddings = torch.randn(1, 8, 16, 16, requires_grad=True)
        >>> prototypes = torch.randn(3, 5, 8, requires_grad=True)
        >>> out = loss_fn(embeddings, prototypes, 0.05, [{"tags": torch.tensor([1])}])
        >>> bool(torch.isclose(out["total"], 0.5 * out["image"]))
        True
    """

    def __init__(
        self,
        lambda_mask: float = 1.0,
        lambda_box: float = 1.0,
        lambda_point: float = 1.0,
        lambda_image: float = 1.0,
        ignore_index: int = 255,
        distributed: Union[bool, object] = False,
        class_reduction: str = "sum",
    ) -> None:
        super().__init__()
        weights = {
            "lambda_mask": lambda_mask,
            "lambda_box": lambda_box,
            "lambda_point": lambda_point,
            "lambda_image": lambda_image,
        }
        for name, value in weights.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0; got {value!r}")
        if isinstance(ignore_index, bool) or not isinstance(ignore_index, int):
            raise ValueError(f"ignore_index must be an integer; got {ignore_index!r}")
        check_option(distributed)
        self.class_reduction = check_class_reduction(class_reduction)
        self.weights = tuple(float(weights[f"lambda_{name}"]) for name in POSITIVE_TYPES)
        self.ignore_index = ignore_index
        self.distributed = distributed

    def forward(
        self,
        embeddings: torch.Tensor,
        prototypes: torch.Tensor,
        temperature: float,
        annotations,
    ) -> Dict[str, torch.Tensor]:
        """Computes the weighted DSP loss.

        Args:
            embeddings: (B, D, *spatial) pixel embeddings.
            prototypes: (C, K, D) class prototypes.
            temperature: tau > 0.
            annotations: records, a batch dict or an :class:`~dsp_monai.annotations.AnnotationBatch`.

        Returns:
            the dict of :func:`dsp_loss`, its ``"total"`` weighted by the lambdas (the per-type terms unweighted).
        """
        out = dsp_loss(embeddings, prototypes, temperature, annotations, self.ignore_index, self.distributed,
                       self.class_reduction)
        return self._weighted(out)

    def from_scores(
        self, logits: torch.Tensor, log_z: torch.Tensor, annotations: AnnotationBatch
    ) -> Dict[str, torch.Tensor]:
        """The weighted DSP loss from :func:`prototype_scores` (scores computed once and shared with other terms).

        Args:
            logits: (B, C, *spatial) class scores.
            log_z: (C,) log Z_c of this process's batch.
            annotations: the matching :class:`AnnotationBatch` (its ignore value must be this loss's).

        Returns:
            the dict of :meth:`forward`.
        """
        batch = prepare_annotations(annotations, logits.shape[1], logits.shape[2:], logits.shape[0], logits.device,
                                    self.ignore_index)
        return self._weighted(
            dsp_loss_from_scores(logits, log_z, batch, resolve_group(self.distributed), self.class_reduction))

    def _weighted(self, out: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        out["total"] = sum(weight * out[name] for weight, name in zip(self.weights, POSITIVE_TYPES))
        return out


class DSPTerm:
    """Loss term (:mod:`dsp_monai.losses.terms`) of the DSP loss on one view: its total is the :class:`DSPLoss`
    with its per-type weights, its parts the unweighted per-type values (``mask``, ``box``, ``point``, ``image``).

    The view's scores are computed once per batch (:meth:`~dsp_monai.losses.terms.BatchContext.scores`) and are
    also the view's logits for the other terms (cross-entropy, pseudo-labels).

    Args:
        loss: the :class:`DSPLoss`.
        view: ``"weak"`` or ``"strong"``.
    """

    outputs = ("embeddings",)

    def __init__(self, loss: DSPLoss, view: str = "weak") -> None:
        if not isinstance(loss, DSPLoss):
            raise TypeError(f"DSPTerm: loss must be a dsp_monai.losses.DSPLoss; got {type(loss).__name__}")
        self.loss, self.view = loss, view
        self.views = (view,)

    def __call__(self, context) -> Dict[str, torch.Tensor]:
        logits, log_z = context.scores(self.view)
        out = self.loss.from_scores(logits, log_z, context.annotations)
        return {"total": out["total"], **{name: out[name] for name in POSITIVE_TYPES}}
