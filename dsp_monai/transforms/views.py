"""The weak / strong view pair of consistency training (FixMatch style; docs/method.md §6).

Both views share one geometry: apply every geometric transform (flips, rotations, crops, zoom, padding, see
:mod:`dsp_monai.transforms.geometry`) first, then :class:`WeakStrongViewsd`, which copies the image to the strong
key and perturbs only that copy, so pixel ``j`` of one view corresponds to pixel ``j`` of the other. The weak view
is the geometrically augmented image itself.

Strong perturbations, each a MONAI transform with its own probability, in this order:

1. brightness: multiply by ``1 + f``, ``f`` uniform in ``[-brightness, brightness]`` (``RandScaleIntensityd``);
2. contrast: scale the deviations from the image mean by ``1 + f``, ``f`` uniform in ``[-contrast, contrast]``
   (``RandScaleIntensityFixedMeand``);
3. Gaussian blur with sigma uniform in ``blur_sigma`` on every axis (``RandGaussianSmoothd``);
4. CutOut: ``cutout_count`` independent tries, each with probability ``cutout_prob``, each filling one
   ``cutout_size`` square (cube in 3D) at a uniformly random position fully inside the image with ``cutout_fill``
   (``RandCoarseDropoutd``). The paper's setting: up to 9 black 32 x 32 squares, each with probability 0.5.

Only the image is changed: labels, valid masks and annotations are shared by both views. ``cutout_fill = 0`` is
black for images scaled to ``[0, 1]``; for standardised images pass the value that means black there.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import (
    Compose,
    MapTransform,
    RandCoarseDropoutd,
    RandGaussianSmoothd,
    Randomizable,
    RandScaleIntensityd,
    RandScaleIntensityFixedMeand,
)
from monai.utils import MAX_SEED

__all__ = ["WeakStrongViewsd"]


class WeakStrongViewsd(Randomizable, MapTransform):
    """Add the strongly augmented view of an image under ``strong_key``; the image itself stays the weak view.

    Args:
        keys: the image key (one key; the weak view, left unchanged).
        strong_key: key written with the strong view.
        brightness: multiplicative brightness jitter half-range (0 disables it).
        brightness_prob: probability of the brightness jitter.
        contrast: contrast jitter half-range around the image mean (0 disables it).
        contrast_prob: probability of the contrast jitter.
        blur_sigma: ``(min, max)`` Gaussian sigma in pixels, drawn per axis.
        blur_prob: probability of blurring.
        cutout_count: number of CutOut tries.
        cutout_prob: probability of each try.
        cutout_size: side of each square / cube (an int for every axis, or one value per axis).
        cutout_fill: value written into the squares.
        allow_missing_keys: do nothing when the image key is missing.

    Raises:
        ValueError: for probabilities outside ``[0, 1]``, negative ranges or counts, or more than one key.

    Example:
        >>> views = WeakStrongViewsd("image", cutout_count=9, cutout_prob=0.5, cutout_size=32)
        >>> views.set_random_state(seed=0)
        >>> item = views({"image": torch.rand(1, 128, 128)})
        >>> item["image"].shape == item["image_strong"].shape
        True
    """

    def __init__(
        self,
        keys: KeysCollection = "image",
        strong_key: str = "image_strong",
        brightness: float = 0.5,
        brightness_prob: float = 0.8,
        contrast: float = 0.5,
        contrast_prob: float = 0.8,
        blur_sigma: Sequence[float] = (0.1, 2.0),
        blur_prob: float = 0.5,
        cutout_count: int = 9,
        cutout_prob: float = 0.5,
        cutout_size: Sequence[int] | int = 32,
        cutout_fill: float = 0.0,
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        if len(self.keys) != 1:
            raise ValueError(f"WeakStrongViewsd takes one image key, got {self.keys}.")
        probabilities = {
            "brightness_prob": brightness_prob,
            "contrast_prob": contrast_prob,
            "blur_prob": blur_prob,
            "cutout_prob": cutout_prob,
        }
        bad = {name: p for name, p in probabilities.items() if not 0.0 <= p <= 1.0}
        if bad:
            raise ValueError(f"probabilities must lie in [0, 1], got {bad}.")
        if brightness < 0 or contrast < 0 or int(cutout_count) < 0:
            raise ValueError(
                f"brightness, contrast and cutout_count must be non-negative, got {brightness}, {contrast}, "
                f"{cutout_count}."
            )
        sigma = tuple(float(s) for s in blur_sigma)
        if len(sigma) != 2 or not 0 < sigma[0] <= sigma[1]:
            raise ValueError(f"blur_sigma must be (min, max) with 0 < min <= max, got {tuple(blur_sigma)}.")
        self.strong_key = strong_key
        strong = strong_key
        steps: list = []
        if brightness > 0:
            steps.append(RandScaleIntensityd(strong, factors=brightness, prob=brightness_prob))
        if contrast > 0:
            steps.append(RandScaleIntensityFixedMeand(strong, factors=contrast, fixed_mean=True, prob=contrast_prob))
        steps.append(RandGaussianSmoothd(strong, sigma_x=sigma, sigma_y=sigma, sigma_z=sigma, prob=blur_prob))
        steps += [
            RandCoarseDropoutd(
                strong, holes=1, spatial_size=cutout_size, fill_value=float(cutout_fill), prob=cutout_prob
            )
            for _ in range(int(cutout_count))
        ]
        self.strong = Compose(steps)

    def set_random_state(
        self, seed: int | None = None, state: np.random.RandomState | None = None
    ) -> WeakStrongViewsd:
        super().set_random_state(seed=seed, state=state)
        self.strong.set_random_state(seed=int(self.R.randint(MAX_SEED, dtype="uint32")))
        return self

    def randomize(self, data: object = None) -> None:
        """The strong pipeline draws its own parameters when called."""

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            image = d[key]
            copy = image.clone() if isinstance(image, torch.Tensor) else torch.as_tensor(np.array(image))
            d = self.strong({**d, self.strong_key: copy.to(torch.float32) if not copy.is_floating_point() else copy})
        return d
