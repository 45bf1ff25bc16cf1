"""Collation of per-image annotation records into the possible-class bit mask and the positive sets of the DSP loss.

Implements docs/method.md §4 (possible-class sets A_j) and the index sets of §5 (positives per annotation type), for a
batch of B images of one spatial shape (2D or 3D). Everything is vectorised over pixels, boxes, points and classes;
only the parsing of the records loops over images. Boxes cost their area (their pixels are listed, not padded to
the largest box); the per-class box coverage costs one batched matrix product.
"""

import dataclasses
import math
import numbers
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple, Union

import torch

from ..ops import MAX_CLASSES, unpack_allowed
from .record import batch_view, image_error, parse_entries, parse_label, parse_valid
from .vocabulary import IGNORE_VALUE, LABEL, VALID, box_problem, point_problem

__all__ = ["AnnotationBatch", "collate_annotations", "validate_record"]


@dataclass(frozen=True)
class AnnotationBatch:
    """A batch of annotations in the form the DSP loss and pseudo-label filtering use.

    All index tensors address ``logits.reshape(-1)`` for logits of shape (B, C, *spatial), i.e. entry
    ``(b * C + c) * N + j`` for image b, class c and flat pixel j (N pixels per image).

    Attributes:
        num_classes: C.
        spatial_shape: the images' spatial shape (array order).
        ignore_index: the label value of unlabelled pixels.
        allowed: (B, *spatial) int64 bit mask of the possible classes A_j (bit c set = class c possible); 0 at
            padding.
        valid: (B, *spatial) bool, False at padding.
        all_valid: True when no pixel is padding.
        label: (B, *spatial) int64 pixel labels, ``ignore_index`` where unlabelled or padding.
        mask_index: (P,) logit indices of the labelled pixels (each at its label's class).
        mask_classes: (P,) their classes.
        point_index: (M,) logit indices of the points (each at its class).
        point_classes: (M,) their classes.
        box_classes: (Nb,) class of each box.
        box_pixel_index: (E,) logit indices of every pixel of every box (box after box, each at its box's class;
            E is the total box area, so a box costs its own area).
        box_pixel_valid: (E,) bool, False for box pixels in padding.
        box_pixel_lines: (ndim, E) the line of each box pixel along each axis: lines are numbered over all boxes
            and axes (the rows of box 0, of box 1, ..., then the columns of box 0, ...).
        box_line_classes: (L,) class of each line (L = the sum of all box extents over all axes).
        box_line_valid: (L,) bool, True for lines holding at least one valid pixel; each contributes one positive,
            the maximum of its class score over the line inside the box.
        tag_images: (T,) image of each (image, tag) pair (deduplicated; images without a valid pixel left out).
        tag_classes: (T,) class of each pair.
        valid_counts: (B,) number of valid pixels per image.
        counts: (4, C) int64 number of positives per source and class (rows in the order of
            :data:`~dsp_monai.annotations.vocabulary.POSITIVE_TYPES`).
    """

    num_classes: int
    spatial_shape: Tuple[int, ...]
    ignore_index: int
    allowed: torch.Tensor
    valid: torch.Tensor
    all_valid: bool
    label: torch.Tensor
    mask_index: torch.Tensor
    mask_classes: torch.Tensor
    point_index: torch.Tensor
    point_classes: torch.Tensor
    box_classes: torch.Tensor
    box_pixel_index: torch.Tensor
    box_pixel_valid: torch.Tensor
    box_pixel_lines: torch.Tensor
    box_line_classes: torch.Tensor
    box_line_valid: torch.Tensor
    tag_images: torch.Tensor
    tag_classes: torch.Tensor
    valid_counts: torch.Tensor
    counts: torch.Tensor

    @property
    def batch_size(self) -> int:
        """B."""
        return self.allowed.shape[0]

    @property
    def device(self) -> torch.device:
        """The device of every tensor of the batch."""
        return self.allowed.device

    def to(self, device: Union[str, torch.device], non_blocking: bool = False) -> "AnnotationBatch":
        """This batch with every tensor on ``device`` (for example collated in DataLoader workers, used on a GPU)."""

        def move(value):
            return value.to(device, non_blocking=non_blocking) if isinstance(value, torch.Tensor) else value

        return dataclasses.replace(self, **{f.name: move(getattr(self, f.name)) for f in dataclasses.fields(self)})

    def possible(self) -> torch.Tensor:
        """The possible classes as a (B, C, *spatial) bool tensor (the unpacked :attr:`allowed`)."""
        return unpack_allowed(self.allowed, self.num_classes)


class _Parsed:
    """The records of a batch, parsed: dense entries stacked, sparse entries concatenated with their image and
    position within the image's entry."""

    def __init__(self, annotations, spatial_shape, ignore_index, device, first_index):
        view = batch_view(annotations)
        if view.batch_size == 0:
            raise ValueError("annotations describe no image; expected at least one record")
        self.batch_size = view.batch_size
        self.first_index = first_index
        ndim = len(spatial_shape)
        self.label = torch.full((view.batch_size, *spatial_shape), ignore_index, dtype=torch.int64, device=device)
        self.valid = torch.ones((view.batch_size, *spatial_shape), dtype=torch.bool, device=device)
        lists = {name: [] for name in ("tags", "boxes", "box_classes", "points", "point_classes")}
        has_tags, has_boxes, exhaustive = [], [], []
        for offset, get in enumerate(view.getters):
            index = first_index + offset
            if get(LABEL) is not None:
                self.label[offset] = parse_label(get(LABEL), index, spatial_shape, device)
            if get(VALID) is not None:
                self.valid[offset] = parse_valid(get(VALID), index, spatial_shape, device)
            entries = parse_entries(get, index, ndim, device)
            for name in lists:
                value = getattr(entries, name)
                if value is not None:
                    lists[name].append((offset, value))
            has_tags.append(entries.tags is not None)
            has_boxes.append(entries.boxes is not None)
            exhaustive.append(entries.boxes_exhaustive)
        self.has_tags = torch.tensor(has_tags, device=device)
        self.has_boxes = torch.tensor(has_boxes, device=device)
        self.exhaustive = torch.tensor(exhaustive, device=device)
        self.tags, self.tag_image, self.tag_local = _concatenate(lists["tags"], (0,), device)
        self.boxes, self.box_image, self.box_local = _concatenate(lists["boxes"], (0, 2 * ndim), device)
        self.box_classes = _concatenate(lists["box_classes"], (0,), device)[0]
        self.points, self.point_image, self.point_local = _concatenate(lists["points"], (0, ndim), device)
        self.point_classes = _concatenate(lists["point_classes"], (0,), device)[0]

    def image(self, offset) -> int:
        """The index of the image at ``offset`` in this batch, as error messages name it."""
        return self.first_index + int(offset)


def _concatenate(pieces, empty_shape, device):
    """Concatenates per-image tensors; returns the values, each row's image offset and its row within the image."""
    if not pieces:
        empty = torch.zeros(empty_shape, dtype=torch.int64, device=device)
        index = torch.zeros(0, dtype=torch.int64, device=device)
        return empty, index, index
    values = torch.cat([value for _, value in pieces])
    image = torch.cat([torch.full((len(value),), offset, dtype=torch.int64, device=device) for offset, value in pieces])
    local = torch.cat([torch.arange(len(value), device=device) for _, value in pieces])
    return values, image, local


def _first(mask: torch.Tensor) -> Optional[int]:
    """The flat index of the first True of ``mask``, or None."""
    flat = mask.reshape(-1)
    if flat.numel() == 0 or not bool(flat.any()):
        return None
    return int(flat.to(torch.uint8).argmax())


def _coordinates(flat_pixel: int, spatial_shape: Sequence[int]) -> Tuple[int, ...]:
    coords = []
    for size in reversed(spatial_shape):
        coords.append(flat_pixel % size)
        flat_pixel //= size
    return tuple(reversed(coords))


def _row(tensor: torch.Tensor) -> List[int]:
    return [int(v) for v in tensor.tolist()]


def _check_class_ids(parsed, values, image, local, name, num_classes):
    position = _first((values < 0) | (values >= num_classes))
    if position is not None:
        raise image_error(
            parsed.image(image[position]),
            f"{name}[{int(local[position])}] = {int(values[position])} is not a class id; expected an integer in "
            f"[0, {num_classes})",
        )


def _check_values(parsed: _Parsed, num_classes: int, spatial_shape: Tuple[int, ...], ignore_index: int) -> None:
    labelled = parsed.label != ignore_index
    position = _first(labelled & ((parsed.label < 0) | (parsed.label >= num_classes)))
    if position is not None:
        pixels = math.prod(spatial_shape)
        value = int(parsed.label.reshape(-1)[position])
        raise image_error(
            parsed.image(position // pixels),
            f"label holds {value} at pixel {_coordinates(position % pixels, spatial_shape)}; expected class ids in "
            f"[0, {num_classes}) or the ignore value {ignore_index}",
        )
    _check_class_ids(parsed, parsed.tags, parsed.tag_image, parsed.tag_local, "tags", num_classes)
    _check_class_ids(parsed, parsed.box_classes, parsed.box_image, parsed.box_local, "box_classes", num_classes)
    _check_class_ids(parsed, parsed.point_classes, parsed.point_image, parsed.point_local, "point_classes", num_classes)

    found = box_problem(parsed.boxes, spatial_shape)
    if found is not None:
        row, problem = found
        raise image_error(
            parsed.image(parsed.box_image[row]),
            f"boxes[{int(parsed.box_local[row])}] = {_row(parsed.boxes[row])} {problem}; expected [start..., end...] "
            "in array order with 0 <= start < end <= size on every axis (end exclusive)",
        )
    found = point_problem(parsed.points, spatial_shape)
    if found is not None:
        row, problem = found
        raise image_error(
            parsed.image(parsed.point_image[row]),
            f"points[{int(parsed.point_local[row])}] = {tuple(_row(parsed.points[row]))} {problem}; expected "
            "0 <= coordinate < size in array order",
        )


def _strides(spatial_shape: Tuple[int, ...], device) -> torch.Tensor:
    strides = [1] * len(spatial_shape)
    for axis in range(len(spatial_shape) - 2, -1, -1):
        strides[axis] = strides[axis + 1] * spatial_shape[axis + 1]
    return torch.tensor(strides, dtype=torch.int64, device=device)


def _class_bits(classes: torch.Tensor) -> torch.Tensor:
    return torch.ones_like(classes) << classes


def _bits_per_image(images: torch.Tensor, classes: torch.Tensor, batch_size: int, num_classes: int) -> torch.Tensor:
    """(B,) int64: the OR of the class bits of each image's entries."""
    keys = torch.unique(images * num_classes + classes)
    bits = torch.zeros(batch_size, dtype=torch.int64, device=images.device)
    return bits.index_add_(0, keys // num_classes, _class_bits(keys % num_classes))


_PACK_BITS = 16
"""Class bits are packed 16 at a time in float32 matrix products (sums below 2**16 are exact)."""


def _box_coverage(parsed: _Parsed, spatial_shape: Tuple[int, ...], num_classes: int) -> torch.Tensor:
    """(B, N) int64: at each pixel, the bits of the classes of the boxes containing it.

    The number of boxes of (image b, class g) covering a pixel is a sum over the image's boxes of products of
    per-axis interval indicators: one batched matrix product (B, G * prod(sizes[:-1]), n) @ (B, n, sizes[-1]).
    Clamped to 0 / 1, the class bits are packed by a second product with the weights 2**(class % 16), 16 classes
    per row (sums below 2**16 are exact in float32).
    """
    batch_size, ndim, pixels = parsed.batch_size, len(spatial_shape), math.prod(spatial_shape)
    device = parsed.boxes.device
    if parsed.boxes.shape[0] == 0:
        return torch.zeros(batch_size, pixels, dtype=torch.int64, device=device)
    present, group = torch.unique(parsed.box_image * num_classes + parsed.box_classes, return_inverse=True)
    group_image, group_class = present // num_classes, present % num_classes
    per_image = torch.bincount(group_image, minlength=batch_size)
    local_group = torch.arange(present.shape[0], device=device) - (per_image.cumsum(0) - per_image)[group_image]
    groups, slots = int(per_image.max()), int(parsed.box_local.max()) + 1

    product = torch.zeros(batch_size, slots, groups, device=device)
    product[parsed.box_image, parsed.box_local, local_group[group]] = 1.0
    for axis, size in enumerate(spatial_shape):
        line = torch.arange(size, device=device)
        start, end = parsed.boxes[:, axis : axis + 1], parsed.boxes[:, ndim + axis : ndim + axis + 1]
        inside = torch.zeros(batch_size, slots, size, device=device)
        inside[parsed.box_image, parsed.box_local] = ((line >= start) & (line < end)).float()
        if axis < ndim - 1:
            product = product.unsqueeze(-1) * inside.view(batch_size, slots, *([1] * (product.dim() - 2)), size)
        else:
            hits = torch.bmm(product.reshape(batch_size, slots, -1).transpose(1, 2), inside)
    covered = hits.view(batch_size, groups, pixels).clamp_(max=1.0)
    chunks = (num_classes + _PACK_BITS - 1) // _PACK_BITS
    weights = torch.zeros(batch_size, chunks, groups, device=device)
    weights[group_image, group_class // _PACK_BITS, local_group] = torch.pow(2.0, (group_class % _PACK_BITS).float())
    packed = torch.bmm(weights, covered).to(torch.int64)
    shifts = torch.arange(chunks, device=device) * _PACK_BITS
    return (packed << shifts.view(1, chunks, 1)).sum(dim=1)


class _Allowed:
    """The possible-class bit mask and the per-source pieces it was built from (kept to explain contradictions)."""

    def __init__(self, parsed: _Parsed, num_classes: int, spatial_shape: Tuple[int, ...], ignore_index: int):
        batch_size, pixels = parsed.batch_size, math.prod(spatial_shape)
        device = parsed.label.device
        self.full = (1 << num_classes) - 1
        self.label = parsed.label.reshape(batch_size, pixels)
        self.valid = parsed.valid.reshape(batch_size, pixels)
        self.labelled = (self.label != ignore_index) & self.valid
        label_bits = torch.ones_like(self.label) << self.label.clamp(0, num_classes - 1)
        allowed = torch.where(self.labelled, label_bits, torch.full_like(self.label, self.full))

        tag_bits = _bits_per_image(parsed.tag_image, parsed.tags, batch_size, num_classes)
        self.tag_bits = torch.where(parsed.has_tags, tag_bits, torch.full_like(tag_bits, self.full))
        allowed &= self.tag_bits.unsqueeze(1)

        self.coverage = _box_coverage(parsed, spatial_shape, num_classes)
        box_class_bits = _bits_per_image(parsed.box_image, parsed.box_classes, batch_size, num_classes)
        self.box_class_bits = box_class_bits
        self.constrained = torch.where(
            parsed.has_boxes & parsed.exhaustive, torch.full_like(box_class_bits, self.full), box_class_bits
        )
        allowed &= self.coverage | ~self.constrained.unsqueeze(1)

        strides = _strides(spatial_shape, device)
        self.point_pixel = parsed.point_image * pixels + (parsed.points * strides).sum(dim=1)
        flat = allowed.view(-1)
        flat[self.point_pixel] = flat[self.point_pixel] & _class_bits(parsed.point_classes)
        self.bits = torch.where(self.valid, allowed, torch.zeros_like(allowed))

    def why_impossible(self, parsed: _Parsed, image: int, pixel: int, cls: int, point: Optional[int] = None) -> str:
        """Names the annotations that rule class ``cls`` out at ``pixel`` of image offset ``image``."""
        reasons = []
        label = int(self.label[image, pixel])
        if bool(self.labelled[image, pixel]) and label != cls:
            reasons.append(f"the label there is {label}")
        if not (int(self.tag_bits[image]) >> cls) & 1:
            tags = sorted(set(_row(parsed.tags[parsed.tag_image == image])))
            reasons.append(f"class {cls} is not among the image's tags {tags}")
        if (int(self.constrained[image]) >> cls) & 1 and not (int(self.coverage[image, pixel]) >> cls) & 1:
            if (int(self.box_class_bits[image]) >> cls) & 1:
                reasons.append(f"it lies outside every box of class {cls}")
            else:
                reasons.append(f"the image's boxes are exhaustive and none has class {cls}")
        pixels = self.label.shape[1]
        others = (self.point_pixel == image * pixels + pixel) & (parsed.point_classes != cls)
        for other in others.nonzero().flatten().tolist():
            if other != point:
                reasons.append(
                    f"points[{int(parsed.point_local[other])}] at the same pixel has class "
                    f"{int(parsed.point_classes[other])}"
                )
        return "; ".join(reasons) if reasons else "the annotations exclude it"


def _check_contradictions(parsed: _Parsed, allowed: _Allowed, spatial_shape: Tuple[int, ...]) -> None:
    pixels = math.prod(spatial_shape)
    flat_valid = allowed.valid.reshape(-1)
    position = _first(~flat_valid[allowed.point_pixel])
    if position is not None:
        raise image_error(
            parsed.image(parsed.point_image[position]),
            f"points[{int(parsed.point_local[position])}] = {tuple(_row(parsed.points[position]))} of class "
            f"{int(parsed.point_classes[position])} lies in padding (valid is False there); points must lie in the "
            "valid region",
        )
    flat_bits = allowed.bits.reshape(-1)
    point_ok = (flat_bits[allowed.point_pixel] >> parsed.point_classes) & 1
    position = _first(point_ok == 0)
    if position is not None:
        image, cls = int(parsed.point_image[position]), int(parsed.point_classes[position])
        pixel = int(allowed.point_pixel[position]) - image * pixels
        raise image_error(
            parsed.image(image),
            f"points[{int(parsed.point_local[position])}] = {tuple(_row(parsed.points[position]))} has class {cls}, "
            f"which is impossible there: {allowed.why_impossible(parsed, image, pixel, cls, position)}",
        )
    label_ok = ((allowed.bits >> allowed.label.clamp(min=0)) & 1).bool() | ~allowed.labelled
    position = _first(~label_ok)
    if position is not None:
        image, pixel = position // pixels, position % pixels
        cls = int(allowed.label[image, pixel])
        raise image_error(
            parsed.image(image),
            f"label {cls} at pixel {_coordinates(pixel, spatial_shape)} contradicts the other annotations: "
            f"{allowed.why_impossible(parsed, image, pixel, cls)}",
        )


class _BoxPixels:
    """Every pixel of every box as a flat list (box after box), with its box, its flat pixel index
    (image * N + pixel), its validity, and its line along each axis (lines numbered over all boxes and axes).

    Per-box quantities are expanded to the pixels with ``repeat_interleave`` and counted with ``bincount``
    (sequential passes), not gathered by index."""

    def __init__(self, parsed: _Parsed, spatial_shape: Tuple[int, ...]):
        ndim, device = len(spatial_shape), parsed.boxes.device
        count = parsed.boxes.shape[0]
        start, extent = parsed.boxes[:, :ndim], parsed.boxes[:, ndim:] - parsed.boxes[:, :ndim]
        self.area = extent.prod(dim=1)
        expand = self.per_pixel
        area = self.area
        self.box = expand(torch.arange(count, device=device))
        rest = torch.arange(self.box.shape[0], device=device) - expand(area.cumsum(0) - area)
        coordinates = [None] * ndim
        for axis in range(ndim - 1, -1, -1):
            size = expand(extent[:, axis])
            coordinates[axis] = rest % size
            rest = rest // size
        strides = _strides(spatial_shape, device).tolist()
        pixel = expand(parsed.box_image * math.prod(spatial_shape))
        lines, line_classes = [], []
        first_line = 0
        for axis in range(ndim):
            pixel = pixel + (expand(start[:, axis]) + coordinates[axis]) * strides[axis]
            lines.append(expand(first_line + extent[:, axis].cumsum(0) - extent[:, axis]) + coordinates[axis])
            line_classes.append(torch.repeat_interleave(parsed.box_classes, extent[:, axis]))
            first_line += int(extent[:, axis].sum())
        self.pixel = pixel
        self.valid = parsed.valid.reshape(-1).index_select(0, pixel)
        self.lines = torch.stack(lines)
        self.line_classes = torch.cat(line_classes)
        weights = self.valid.to(torch.float32).repeat(ndim)
        self.line_valid = torch.bincount(self.lines.reshape(-1), weights, minlength=first_line) > 0

    def per_pixel(self, per_box: torch.Tensor) -> torch.Tensor:
        """(E,) a per-box quantity (Nb,) repeated over each box's pixels."""
        return torch.repeat_interleave(per_box, self.area)

    def count_per_box(self, selected: torch.Tensor, boxes: int) -> torch.Tensor:
        """(Nb,) number of box pixels per box where ``selected`` (E,) bool holds."""
        return torch.bincount(self.box, selected.to(torch.float32), minlength=boxes)


def _check_boxes(parsed: _Parsed, allowed: _Allowed, box_pixels: _BoxPixels) -> None:
    count = parsed.boxes.shape[0]
    position = _first(box_pixels.count_per_box(box_pixels.valid, count) == 0)
    if position is not None:
        raise image_error(
            parsed.image(parsed.box_image[position]),
            f"boxes[{int(parsed.box_local[position])}] = {_row(parsed.boxes[position])} lies entirely in padding "
            "(valid is False on every pixel inside it); boxes must overlap the valid region",
        )
    classes = box_pixels.per_pixel(parsed.box_classes)
    bits = allowed.bits.reshape(-1).index_select(0, box_pixels.pixel)
    possible = ((bits >> classes) & 1).bool() & box_pixels.valid
    position = _first(box_pixels.count_per_box(possible, count) == 0)
    if position is not None:
        image, cls = int(parsed.box_image[position]), int(parsed.box_classes[position])
        if not (int(allowed.tag_bits[image]) >> cls) & 1:
            tags = sorted(set(_row(parsed.tags[parsed.tag_image == image])))
            reason = f"class {cls} is not among the image's tags {tags}"
        else:
            reason = "every valid pixel inside it is labelled with another class or holds a point of another class"
        raise image_error(
            parsed.image(image),
            f"boxes[{int(parsed.box_local[position])}] = {_row(parsed.boxes[position])} of class {cls} holds no pixel "
            f"where class {cls} is possible: {reason}",
        )


def _is_integer(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _check_tags(parsed: _Parsed, allowed: _Allowed) -> None:
    """Each tag's class must be possible somewhere in its image. Only labels, exhaustive boxes or points on every
    pixel can rule a tagged class out everywhere, so only such images are searched."""
    valid_counts = allowed.valid.sum(dim=1)
    point_counts = torch.bincount(parsed.point_image, minlength=parsed.batch_size)
    exhaustive_boxes = parsed.has_boxes & parsed.exhaustive
    searched = (allowed.labelled.any(dim=1) | exhaustive_boxes | (point_counts >= valid_counts)) & (valid_counts > 0)
    rows = searched[parsed.tag_image].nonzero().flatten()
    if rows.numel() == 0:
        return
    bits = allowed.bits[parsed.tag_image[rows]]
    somewhere = ((bits >> parsed.tags[rows].unsqueeze(1)) & 1).any(dim=1)
    position = _first(~somewhere)
    if position is None:
        return
    row = int(rows[position])
    image, cls = int(parsed.tag_image[row]), int(parsed.tags[row])
    if bool(exhaustive_boxes[image]) and not (int(allowed.box_class_bits[image]) >> cls) & 1:
        reason = f"the image's boxes are exhaustive and none has class {cls}"
    else:
        reason = "every valid pixel is labelled with another class or holds a point of another class"
    raise image_error(
        parsed.image(image),
        f"tags[{int(parsed.tag_local[row])}] = {cls} names a class that is possible nowhere in the image: {reason}",
    )


def _check_arguments(num_classes, spatial_shape, ignore_index) -> Tuple[int, Tuple[int, ...], int]:
    if not _is_integer(num_classes) or not 1 <= num_classes <= MAX_CLASSES:
        raise ValueError(f"num_classes must be an integer in [1, {MAX_CLASSES}]; got {num_classes!r}")
    shape = tuple(int(s) for s in spatial_shape)
    if len(shape) < 1 or any(s < 1 for s in shape):
        raise ValueError(f"spatial_shape must hold at least one positive size; got {list(spatial_shape)}")
    if not _is_integer(ignore_index) or 0 <= ignore_index < num_classes:
        raise ValueError(
            f"ignore_index must be an integer outside the class ids [0, {num_classes}); got {ignore_index!r}"
        )
    return int(num_classes), shape, int(ignore_index)


def _collate(annotations, num_classes, spatial_shape, ignore_index, device, first_index) -> AnnotationBatch:
    num_classes, spatial_shape, ignore_index = _check_arguments(num_classes, spatial_shape, ignore_index)
    device = torch.device("cpu") if device is None else torch.device(device)
    parsed = _Parsed(annotations, spatial_shape, ignore_index, device, first_index)
    _check_values(parsed, num_classes, spatial_shape, ignore_index)
    allowed = _Allowed(parsed, num_classes, spatial_shape, ignore_index)
    _check_contradictions(parsed, allowed, spatial_shape)
    box_pixels = _BoxPixels(parsed, spatial_shape)
    _check_boxes(parsed, allowed, box_pixels)
    _check_tags(parsed, allowed)

    batch_size, pixels = parsed.batch_size, math.prod(spatial_shape)

    def logit_index(flat_pixel, classes):
        return flat_pixel + ((flat_pixel // pixels) * (num_classes - 1) + classes) * pixels

    mask_pixel = allowed.labelled.reshape(-1).nonzero().flatten()
    mask_classes = allowed.label.reshape(-1).index_select(0, mask_pixel)
    valid_counts = allowed.valid.sum(dim=1)
    tag_keys = torch.unique(parsed.tag_image * num_classes + parsed.tags)
    tag_images, tag_classes = tag_keys // num_classes, tag_keys % num_classes
    keep = valid_counts[tag_images] > 0
    tag_images, tag_classes = tag_images[keep], tag_classes[keep]

    counts = torch.stack(
        [
            torch.bincount(mask_classes, minlength=num_classes),
            torch.bincount(box_pixels.line_classes[box_pixels.line_valid], minlength=num_classes),
            torch.bincount(parsed.point_classes, minlength=num_classes),
            torch.bincount(tag_classes, minlength=num_classes),
        ]
    )
    label = torch.where(allowed.labelled, allowed.label, torch.full_like(allowed.label, ignore_index))
    return AnnotationBatch(
        num_classes=num_classes,
        spatial_shape=spatial_shape,
        ignore_index=ignore_index,
        allowed=allowed.bits.view(batch_size, *spatial_shape),
        valid=allowed.valid.view(batch_size, *spatial_shape),
        all_valid=bool(allowed.valid.all()),
        label=label.view(batch_size, *spatial_shape),
        mask_index=logit_index(mask_pixel, mask_classes),
        mask_classes=mask_classes,
        point_index=logit_index(allowed.point_pixel, parsed.point_classes),
        point_classes=parsed.point_classes,
        box_classes=parsed.box_classes,
        box_pixel_index=logit_index(box_pixels.pixel, box_pixels.per_pixel(parsed.box_classes)),
        box_pixel_valid=box_pixels.valid,
        box_pixel_lines=box_pixels.lines,
        box_line_classes=box_pixels.line_classes,
        box_line_valid=box_pixels.line_valid,
        tag_images=tag_images,
        tag_classes=tag_classes,
        valid_counts=valid_counts,
        counts=counts,
    )


def collate_annotations(
    annotations,
    num_classes: int,
    spatial_shape: Sequence[int],
    ignore_index: int = IGNORE_VALUE,
    device: Optional[Union[str, torch.device]] = None,
) -> AnnotationBatch:
    """Checks a batch of annotation records and builds the possible-class bit mask and the positive sets.

    Possible classes (docs/method.md §4): every class starts possible at every pixel; a labelled pixel allows only its
    label; tags allow only the tagged classes in the whole image; a class with boxes in the image is impossible
    outside its boxes, and when the boxes are exhaustive (the default) a class without a box is impossible
    everywhere; a point allows only its class at its pixel. Padding (``valid`` False) allows nothing and takes no
    part in anything: labels there are ignored, box lines and image means skip it.

    Positives (docs/method.md §5): every labelled pixel (mask); every point; every line of every box along every axis
    (the box maximum over that line is the positive); every (image, tag) pair (the log-mean-exp over the image).

    Args:
        annotations: a list of per-image records (dicts, None for an unannotated image; keys in
            :mod:`dsp_monai.annotations.record`), or a batch dict as ``dsp_monai.data.collate.annotated_collate``
            makes it (stacked ``label`` / ``valid`` of shape (B, 1, *spatial), per-image lists for the rest).
        num_classes: C, in [1, 63].
        spatial_shape: the images' spatial shape (the embeddings' / logits' trailing dims).
        ignore_index: the label value of unlabelled pixels; must not be a class id.
        device: where to build the batch (default CPU); put it where the logits live.

    Returns:
        The :class:`AnnotationBatch`.

    Raises:
        TypeError: for an entry of the wrong type (a record that is not a dict, class ids that are not integers).
        ValueError: for a wrong shape, a class id outside [0, C), a label value that is neither a class nor the
            ignore value, a box that is empty, inverted or outside the image, a point outside the image or in
            padding, and for contradictions: a point or labelled pixel whose class the other annotations rule out,
            a box holding no pixel where its class is possible, a tag whose class is possible nowhere in the image
            (for example exhaustive boxes without a box of that class: recompute or drop tags after cropping).
            Every message starts with ``image <index>:`` and names the offending entry (e.g.
            ``boxes[2] = [5, 1, 5, 9]``).

    Example:
        >>> import torch
        >>> from dsp_monai.annotations import collate_annotations
        >>> records = [
        ...     {"boxes": torch.tensor([[0, 0, 4, 4]]), "box_classes": torch.tensor([1]), "boxes_exhaustive": False},
        ...     {"tags": torch.tensor([0, 2]), "points": torch.tensor([[3, 5]]), "point_classes": torch.tensor([2])},
        ...     None,
        ... ]
        >>> batch = collate_annotations(records, num_classes=3, spatial_shape=(8, 8))
        >>> batch.allowed.shape, int(batch.allowed[0, 6, 6]), int(batch.allowed[1, 3, 5])
        (torch.Size([3, 8, 8]), 5, 4)
        >>> batch.counts.tolist()  # positives per type (mask, box, point, image) and class
        [[0, 0, 0], [0, 8, 0], [0, 0, 1], [1, 0, 1]]
    """
    return _collate(annotations, num_classes, spatial_shape, ignore_index, device, first_index=0)


def validate_record(
    record,
    num_classes: int,
    spatial_shape: Sequence[int],
    ignore_index: int = IGNORE_VALUE,
    index: int = 0,
) -> None:
    """Checks one image's annotation record with every check of :func:`collate_annotations`.

    Args:
        record: the per-image dict (or None).
        num_classes: C, in [1, 63].
        spatial_shape: the image's spatial shape.
        ignore_index: the label value of unlabelled pixels.
        index: the image index the error messages name (for example the item's position in a dataset).

    Raises:
        TypeError, ValueError: as :func:`collate_annotations`, naming image ``index``.

    Example:
        >>> import torch
        >>> from dsp_monai.annotations import validate_record
        >>> record = {"points": torch.tensor([[9, 0]]), "point_classes": torch.tensor([0])}
        >>> validate_record(record, num_classes=2, spatial_shape=(8, 8), index=4)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: image 4: points[0] = (9, 0) lies outside the image of shape [8, 8]; ...
    """
    _collate([record], num_classes, spatial_shape, ignore_index, None, first_index=index)

