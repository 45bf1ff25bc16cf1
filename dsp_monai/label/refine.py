"""Interactive refinement: a few gradient steps of the DSP loss on a copy of the head, with the clicks of one
request as point annotations of its image.

The backbone runs once (its features are kept); only the head's projection and prototypes move, so each step costs
one 1x1 projection and one prototype scoring of the image. The trained network itself is never changed.

This module does not import MONAI Label (the benchmark ``benchmarks/bench_label_refine.py`` uses it directly).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence

import torch

from dsp_monai.networks import DSPNet

__all__ = ["anchor_mask", "backbone_features", "refine_head"]


def backbone_features(network: DSPNet, image: torch.Tensor, inferer: Callable) -> torch.Tensor:
    """The backbone's features (1, F, *spatial) of ``image`` (1, in, *spatial), through ``inferer`` (for example
    a sliding window)."""
    with torch.no_grad():
        return inferer(image, network.backbone)


def anchor_mask(logits: torch.Tensor, points: Sequence[Sequence[int]], radius: float, confidence: float,
                ignore_index: int = 255) -> torch.Tensor:
    """The network's own prediction as a partial mask that holds the refinement in place away from the clicks.

    Args:
        logits: (1, C, rows, cols) scores of the trained network.
        points: the clicks (row, col).
        radius: pixels closer than this to a click are left free (``ignore_index``).
        confidence: pixels whose softmax maximum is below this are left free too.
        ignore_index: the value of free pixels.

    Returns:
        (1, rows, cols) int64 class ids, ``ignore_index`` where free.
    """
    probabilities = torch.softmax(logits.float(), dim=1)
    best, label = probabilities.max(dim=1)
    free = best < confidence
    rows = torch.arange(logits.shape[2], device=logits.device)[:, None]
    cols = torch.arange(logits.shape[3], device=logits.device)[None, :]
    for row, col in points:
        free |= ((rows - row) ** 2 + (cols - col) ** 2 < radius**2)[None]
    return torch.where(free, torch.full_like(label, ignore_index), label)


def refine_head(
    network: DSPNet,
    features: torch.Tensor,
    points: Sequence[Sequence[int]],
    point_classes: Sequence[int],
    loss: Callable,
    steps: int,
    learning_rate: float,
    time_limit: float,
    anchor: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict]:
    """Class scores of ``features`` by a copy of ``network``'s head fitted to the clicked points.

    Args:
        network: the trained :class:`~dsp_monai.networks.DSPNet` (left unchanged).
        features: (1, F, *spatial) backbone features of the image (:func:`backbone_features`).
        points: clicked pixels, array order (row, col).
        point_classes: one class per point.
        loss: the DSP loss, ``loss(embeddings, prototypes, temperature, records) -> {"total": ...}``
            (:class:`dsp_monai.losses.DSPLoss`).
        steps: at most this many Adam steps.
        learning_rate: Adam's step size.
        time_limit: no step starts when the time spent plus the last step's duration would exceed this many
            seconds (the scoring after the last step is not counted).
        anchor: optional (1, *spatial) partial mask (:func:`anchor_mask`) given to the loss with the points: away
            from the clicks the refined head keeps the network's prediction. Without it the points alone decide,
            and the decoupled denominators push every class down wherever it was not clicked.

    Returns:
        ``(logits, info)``: (1, C, *spatial) scores of the refined head, and ``{"steps", "seconds", "loss_first",
        "loss_last"}``.

    Raises:
        ValueError: no point, or points and classes of different lengths.
    """
    if len(points) == 0 or len(points) != len(point_classes):
        raise ValueError(
            f"refinement needs at least one point and one class per point; got {len(points)} points and "
            f"{len(point_classes)} classes"
        )
    start = time.perf_counter()
    head = copy.deepcopy(network.head)
    head.eval()
    for parameter in head.parameters():
        parameter.requires_grad_(True)
    optimizer = torch.optim.Adam(head.parameters(), lr=learning_rate)
    record = {
        "points": torch.as_tensor(points, dtype=torch.int64, device=features.device),
        "point_classes": torch.as_tensor(point_classes, dtype=torch.int64, device=features.device),
    }
    if anchor is not None:
        record["label"] = anchor
    records = [record]
    features = features.detach()
    losses = []
    taken = 0
    last = 0.0
    for _ in range(int(steps)):
        began = time.perf_counter()
        if began - start + last > time_limit:
            break
        optimizer.zero_grad(set_to_none=True)
        total = loss(head.embed(features), head.prototypes, head.temperature, records)["total"]
        total.backward()
        optimizer.step()
        losses.append(float(total.detach()))
        taken += 1
        last = time.perf_counter() - began
    seconds = time.perf_counter() - start
    with torch.no_grad():
        logits = head(features)
    info = {
        "steps": taken,
        "seconds": round(seconds, 4),
        "loss_first": losses[0] if losses else None,
        "loss_last": losses[-1] if losses else None,
    }
    return logits, info
