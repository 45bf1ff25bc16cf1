"""Stratified sampling over annotation types (docs/method.md §8).

At ACR 64 only one training image in 64 has a mask; drawn uniformly, most batches would hold none and the mask
loss would be computed irregularly. :class:`StratifiedAnnotationSampler` instead draws the annotation *type* first,
uniformly among the types present in the scenario (or with given weights), then an item of that type, so every
type is equally present in each batch in expectation and the rarer types are oversampled.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence

import numpy as np
import torch.distributed as dist
from torch.utils.data import Sampler

from dsp_monai.annotations.vocabulary import ANNOTATION_TYPE, ANNOTATION_TYPES

__all__ = ["StratifiedAnnotationSampler"]




def _types_of(data, key: str) -> list[str]:
    """Annotation type per item from a list of strings, a list of item dicts, or a dataset with ``.data``."""
    items = getattr(data, "data", data)
    if isinstance(items, (str, bytes, Mapping)) or not isinstance(items, Sequence):
        raise TypeError(
            f"expected a list of annotation types, a list of item dicts or a dataset with .data, got "
            f"{type(data).__name__}."
        )
    types = []
    for index, item in enumerate(items):
        if isinstance(item, Mapping):
            if key not in item:
                raise KeyError(
                    f"item {index} has no {key!r}; build the training items with "
                    f"dsp_monai.data.scenarios.make_scenario. Item keys: {sorted(map(str, item))}."
                )
            item = item[key]
        if not isinstance(item, str):
            raise TypeError(f"item {index}: annotation type must be a string, got {item!r}.")
        types.append(item)
    return types


class StratifiedAnnotationSampler(Sampler[int]):
    """Draw dataset indices so that each annotation type is equally frequent in every batch, in expectation.

    Each epoch is a sequence of ``num_samples`` draws (padded up to a multiple of ``num_replicas``); replica
    ``rank`` of ``num_replicas`` takes draws ``rank, rank + num_replicas, ...`` (the ``DistributedSampler``
    layout). With equal weights the types are drawn in blocks: every block of ``T`` consecutive draws *of one
    replica* (``T`` = number of types present) holds each type once, in random order, so a replica's batch of
    ``T * m`` draws is exactly balanced when aligned with the blocks and balanced in expectation otherwise. With
    ``type_weights`` each draw picks a type independently with those probabilities. Within a type, items are drawn
    without replacement over the whole stream (all replicas), reshuffled each time the type's items are used up,
    so a rare type cycles through all its items before repeating any and replicas see different items of a type
    until it is used up. The stream depends only on ``seed``, ``num_replicas`` and the epoch (:meth:`set_epoch`).

    Args:
        data: the training items' annotation types: a list of strings, a list of item dicts holding
            ``annotation_type_key``, or a dataset whose ``.data`` is such a list (MONAI ``Dataset`` /
            ``CacheDataset``).
        num_samples: draws per epoch over all replicas (default: the number of items).
        seed: seed of the stream.
        num_replicas: number of processes; None = the ``torch.distributed`` world size when initialised, else 1.
        rank: this process's rank; None = the ``torch.distributed`` rank when initialised, else 0.
        type_weights: optional probability weight per annotation type present (missing types get 0; all types
            with weight 0 are never drawn). None = equal weights.
        annotation_type_key: item key of the annotation type.

    Raises:
        ValueError: for an empty dataset, a bad rank or replica count, non-positive ``num_samples``, or weights
            that are negative, name an absent type, or leave nothing to draw.

    Example:
        >>> sampler = StratifiedAnnotationSampler(scenario.training, seed=0)
        >>> loader = DataLoader(dataset, batch_size=8, sampler=sampler, collate_fn=annotated_collate)
        >>> for epoch in range(epochs):
        ...     sampler.set_epoch(epoch)
    """

    def __init__(
        self,
        data,
        num_samples: int | None = None,
        seed: int = 0,
        num_replicas: int | None = None,
        rank: int | None = None,
        type_weights: Mapping[str, float] | None = None,
        annotation_type_key: str = ANNOTATION_TYPE,
    ) -> None:
        types = _types_of(data, annotation_type_key)
        if not types:
            raise ValueError("the dataset is empty: there is nothing to sample.")
        distributed = dist.is_available() and dist.is_initialized()
        if num_replicas is None:
            num_replicas = dist.get_world_size() if distributed else 1
        if rank is None:
            rank = dist.get_rank() if distributed else 0
        if int(num_replicas) < 1 or not 0 <= int(rank) < int(num_replicas):
            raise ValueError(f"need num_replicas >= 1 and 0 <= rank < num_replicas, got {num_replicas}, {rank}.")
        num_samples = len(types) if num_samples is None else int(num_samples)
        if num_samples < 1:
            raise ValueError(f"num_samples must be positive, got {num_samples}.")
        order = {kind: rank for rank, kind in enumerate(ANNOTATION_TYPES)}
        present = sorted(set(types), key=lambda t: (order.get(t, len(order)), t))
        self.pools = {t: np.flatnonzero(np.asarray(types) == t) for t in present}
        if type_weights is None:
            self.weights = None
            self.types = present
        else:
            unknown = sorted(set(type_weights) - set(present))
            if unknown:
                raise ValueError(f"type_weights names type(s) {unknown} absent from the dataset (present: {present}).")
            weights = np.array([float(type_weights.get(t, 0.0)) for t in present])
            if np.any(weights < 0) or not np.isfinite(weights).all() or weights.sum() <= 0:
                raise ValueError(
                    f"type_weights must be finite, non-negative and not all zero, got {dict(type_weights)}."
                )
            self.types = [t for t, w in zip(present, weights) if w > 0]
            self.weights = weights[weights > 0] / weights[weights > 0].sum()
        self.seed = int(seed)
        self.num_replicas = int(num_replicas)
        self.rank = int(rank)
        self.num_samples = num_samples
        self.per_replica = math.ceil(num_samples / self.num_replicas)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch's stream (call before iterating, as with ``DistributedSampler``)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.per_replica

    def _type_sequence(self, rng: np.random.Generator, total: int) -> np.ndarray:
        """Type code per draw; with equal weights each replica's own draws come in balanced blocks."""
        count = len(self.types)
        if self.weights is None:
            blocks = math.ceil(self.per_replica / count)
            own = [
                np.concatenate([rng.permutation(count) for _ in range(blocks)])[: self.per_replica]
                for _ in range(self.num_replicas)
            ]
            return np.stack(own, axis=1).reshape(-1)
        return rng.choice(count, size=total, p=self.weights)

    def __iter__(self) -> Iterator[int]:
        rng = np.random.default_rng([self.seed, self.epoch])
        total = self.per_replica * self.num_replicas
        sequence = self._type_sequence(rng, total)
        draws = np.empty(total, dtype=np.int64)
        for code, name in enumerate(self.types):
            slots = np.flatnonzero(sequence == code)
            pool = self.pools[name]
            cycles = math.ceil(len(slots) / len(pool)) if len(slots) else 0
            drawn = np.concatenate([rng.permutation(pool) for _ in range(cycles)]) if cycles else pool[:0]
            draws[slots] = drawn[: len(slots)]
        return iter(draws[self.rank :: self.num_replicas].tolist())
