"""An independent statement of method.md §2-4 for the tests: explicit Python loops over images, pixels, classes,
boxes and points (slow, float64, small inputs), plus a generator of random, consistent annotation batches.

Nothing here imports dsp_monai; tests/annotations loads this file by path.
"""

import itertools
import math
import random
from typing import Dict, List, Sequence, Set, Tuple

import torch

IGNORE = 255
TYPES = ("mask", "box", "point", "image")


def _pixels(spatial: Sequence[int]) -> List[Tuple[int, ...]]:
    return list(itertools.product(*[range(size) for size in spatial]))


def _get(record, key):
    return None if record is None else record.get(key)


def _valid(record, pixel) -> bool:
    valid = _get(record, "valid")
    return True if valid is None else bool(valid[pixel])


def _label(record, pixel):
    label = _get(record, "label")
    return IGNORE if label is None else int(label[pixel])


def _in_box(box: Sequence[int], pixel: Sequence[int]) -> bool:
    ndim = len(pixel)
    return all(box[a] <= pixel[a] < box[ndim + a] for a in range(ndim))


def possible_sets(record, num_classes: int, spatial: Sequence[int]) -> Dict[Tuple[int, ...], Set[int]]:
    """A_j for every pixel of one image, built set by set from method.md §3 (empty at padding)."""
    sets = {}
    tags = _get(record, "tags")
    boxes = _get(record, "boxes")
    box_classes = _get(record, "box_classes")
    points = _get(record, "points")
    point_classes = _get(record, "point_classes")
    exhaustive = _get(record, "boxes_exhaustive")
    exhaustive = True if exhaustive is None else bool(exhaustive)
    for pixel in _pixels(spatial):
        if not _valid(record, pixel):
            sets[pixel] = set()
            continue
        possible = set(range(num_classes))
        label = _label(record, pixel)
        if label != IGNORE:
            possible &= {label}
        if tags is not None:
            possible &= {int(t) for t in tags}
        if boxes is not None:
            boxed = {int(c) for c in box_classes}
            containing = {int(box_classes[k]) for k in range(len(boxes)) if _in_box(boxes[k].tolist(), pixel)}
            for cls in range(num_classes):
                if cls in boxed and cls not in containing:
                    possible.discard(cls)
                if cls not in boxed and exhaustive:
                    possible.discard(cls)
        if points is not None:
            for k in range(len(points)):
                if tuple(points[k].tolist()) == pixel:
                    possible &= {int(point_classes[k])}
        sets[pixel] = possible
    return sets


def scores(embeddings: torch.Tensor, prototypes: torch.Tensor, temperature: float):
    """s[b][c][pixel] = (1/K) sum_k cos(f, P_ck) / tau, one pixel at a time; a norm below 1e-12 counts as 1e-12
    (the operator's normalisation x / max(|x|, 1e-12)), so a zero vector scores 0."""
    batch, classes = embeddings.shape[0], prototypes.shape[0]
    spatial = embeddings.shape[2:]
    out = [[{} for _ in range(classes)] for _ in range(batch)]
    for b in range(batch):
        for pixel in _pixels(spatial):
            f = embeddings[(b, slice(None), *pixel)]
            f_norm = torch.clamp(torch.linalg.vector_norm(f), min=1e-12)
            for c in range(classes):
                total = 0
                for k in range(prototypes.shape[1]):
                    p = prototypes[c, k]
                    total = total + torch.dot(f, p) / (f_norm * torch.clamp(torch.linalg.vector_norm(p), min=1e-12))
                out[b][c][pixel] = total / prototypes.shape[1] / temperature
    return out


def reference_loss(embeddings, prototypes, temperature, records, num_classes=None, class_mean=False):
    """The four DSP terms (S.8, lambdas 1), log Z (S.3), the scores and the positive counts, from loops.

    With ``class_mean`` each type's term is divided by the number of classes that contributed to it."""
    batch = embeddings.shape[0]
    classes = prototypes.shape[0] if num_classes is None else num_classes
    spatial = tuple(embeddings.shape[2:])
    s = scores(embeddings, prototypes, temperature)
    sets = [possible_sets(records[b], classes, spatial) for b in range(batch)]

    log_z = []
    for c in range(classes):
        terms = []
        for b in range(batch):
            for pixel in _pixels(spatial):
                if not _valid(records[b], pixel):
                    continue
                for k in range(classes):
                    if k != c or c not in sets[b][pixel]:
                        terms.append(s[b][k][pixel])
        log_z.append(torch.logsumexp(torch.stack(terms), 0) if terms else torch.tensor(-math.inf, dtype=torch.float64))

    omega = {name: [[] for _ in range(classes)] for name in TYPES}
    for b in range(batch):
        record = records[b]
        for pixel in _pixels(spatial):
            label = _label(record, pixel)
            if label != IGNORE and _valid(record, pixel):
                omega["mask"][label].append(s[b][label][pixel])
        points = _get(record, "points")
        if points is not None:
            for k in range(len(points)):
                cls = int(record["point_classes"][k])
                omega["point"][cls].append(s[b][cls][tuple(points[k].tolist())])
        boxes = _get(record, "boxes")
        if boxes is not None:
            ndim = len(spatial)
            for k in range(len(boxes)):
                box, cls = boxes[k].tolist(), int(record["box_classes"][k])
                inside = [p for p in _pixels(spatial) if _in_box(box, p) and _valid(record, p)]
                for axis in range(ndim):
                    for index in range(box[axis], box[ndim + axis]):
                        line = [s[b][cls][p] for p in inside if p[axis] == index]
                        if line:
                            best = line[0]
                            for value in line[1:]:
                                best = torch.maximum(best, value)
                            omega["box"][cls].append(best)
        tags = _get(record, "tags")
        valid_pixels = [p for p in _pixels(spatial) if _valid(record, p)]
        if tags is not None and valid_pixels:
            for cls in sorted({int(t) for t in tags}):
                values = torch.stack([s[b][cls][p] for p in valid_pixels])
                omega["image"][cls].append(torch.logsumexp(values, 0) - math.log(len(valid_pixels)))

    terms = {}
    for name in TYPES:
        total = torch.zeros((), dtype=torch.float64)
        contributing = 0
        for c in range(classes):
            if omega[name][c] and math.isfinite(float(log_z[c].detach())):
                total = total + log_z[c] - torch.stack(omega[name][c]).mean()
                contributing += 1
        terms[name] = total / contributing if class_mean and contributing else total
    terms["total"] = terms["mask"] + terms["box"] + terms["point"] + terms["image"]
    counts = [[len(omega[name][c]) for c in range(classes)] for name in TYPES]
    return terms, torch.stack(log_z), s, counts


# --------------------------------------------------------------------------------------------------- generation


def consistent(record, num_classes, spatial) -> bool:
    """Whether every box holds a pixel where its class is possible and every tag's class is possible somewhere
    (else the record is contradictory)."""
    sets = possible_sets(record, num_classes, spatial)
    boxes = _get(record, "boxes")
    for k in range(0 if boxes is None else len(boxes)):
        cls = int(record["box_classes"][k])
        if not any(_in_box(boxes[k].tolist(), p) and cls in sets[p] for p in _pixels(spatial)):
            return False
    tags = _get(record, "tags")
    return tags is None or all(any(int(t) in possible for possible in sets.values()) for t in tags)


def _random_box(rng: random.Random, spatial, valid_last: int):
    ndim = len(spatial)
    start, end = [], []
    for axis, size in enumerate(spatial):
        limit = valid_last if axis == ndim - 1 else size
        first = rng.randrange(0, limit)
        start.append(first)
        end.append(rng.randrange(first + 1, size + 1))
    return start + end


def random_record(rng: random.Random, kind: Set[str], spatial: Sequence[int], num_classes: int) -> dict:
    """One consistent record with the annotation types named in ``kind``.

    kind holds any of: "pad" (the last 2 indices of the last axis are padding), "tags", "boxes" (exhaustive,
    overlapping, of different classes), "boxes_partial" (not exhaustive), "points" (on box borders where there
    are boxes), "mask" (never with boxes; padding pixels get arbitrary class labels, which must be ignored).
    """
    spatial = tuple(spatial)
    ndim = len(spatial)
    record: dict = {}
    valid_last = spatial[-1]
    if "pad" in kind:
        valid = torch.ones(spatial, dtype=torch.bool)
        valid[(Ellipsis, slice(spatial[-1] - 2, None))] = False
        record["valid"] = valid
        valid_last = spatial[-1] - 2
    pool = list(range(num_classes))
    if "tags" in kind:
        pool = sorted(rng.sample(range(num_classes), rng.randint(2, num_classes)))
        tags = pool + [pool[0]]
        record["tags"] = torch.tensor(tags)
    if "boxes" in kind or "boxes_partial" in kind:
        first = _random_box(rng, spatial, valid_last)
        second = first[:ndim] + [rng.randrange(first[a] + 1, spatial[a] + 1) for a in range(ndim)]
        boxes = [first, second] + [_random_box(rng, spatial, valid_last) for _ in range(rng.randint(0, 2))]
        classes = [rng.choice(pool)]
        classes.append(rng.choice([c for c in pool if c != classes[0]]))
        classes += [rng.choice(pool) for _ in boxes[2:]]
        record["boxes"] = torch.tensor(boxes)
        record["box_classes"] = torch.tensor(classes)
        record["boxes_exhaustive"] = "boxes_partial" not in kind
    if "mask" in kind:
        sets = possible_sets(record, num_classes, spatial)
        label = torch.full(spatial, IGNORE, dtype=torch.int64)
        for pixel, possible in sets.items():
            if not _valid(record, pixel):
                label[pixel] = rng.randrange(num_classes)
            elif possible and rng.random() < 0.6:
                label[pixel] = rng.choice(sorted(possible))
        record["label"] = label
    if "points" in kind:
        points, point_classes = [], []
        for _ in range(rng.randint(1, 3)):
            sets = possible_sets(record, num_classes, spatial)
            candidates = []
            if "boxes" in record:
                k = rng.randrange(len(record["boxes"]))
                box, cls = record["boxes"][k].tolist(), int(record["box_classes"][k])
                axis = rng.randrange(ndim)
                for pixel in _pixels(spatial):
                    on_border = pixel[axis] in (box[axis], box[ndim + axis] - 1)
                    if _in_box(box, pixel) and on_border and cls in sets[pixel]:
                        candidates.append((pixel, cls))
            if not candidates:
                candidates = [(p, c) for p, possible in sets.items() for c in sorted(possible)]
            if not candidates:
                continue
            pixel, cls = rng.choice(candidates)
            points.append(list(pixel))
            point_classes.append(cls)
            record["points"] = torch.tensor(points)
            record["point_classes"] = torch.tensor(point_classes)
    if not consistent(record, num_classes, spatial):
        return random_record(rng, kind, spatial, num_classes)
    return record


KINDS_2D = [
    {"mask", "pad"},
    {"tags", "points"},
    {"boxes", "points", "pad"},
    {"boxes_partial", "tags"},
    set(),
    {"mask", "tags", "points"},
    {"tags", "pad"},
]

KINDS_3D = [
    {"boxes", "points"},
    {"mask", "tags", "pad"},
    {"boxes_partial", "tags", "points", "pad"},
    set(),
]


def random_batch(seed: int, spatial, num_classes: int, kinds) -> List[dict]:
    rng = random.Random(seed)
    return [random_record(rng, set(kind), spatial, num_classes) for kind in kinds]
