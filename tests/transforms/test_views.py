"""The weak/strong view pair: shared geometry, strong perturbations on the copy only, CutOut as configured."""

import numpy as np
import pytest
import torch

from dsp_monai.transforms.geometry import AnnotatedRandFlipd, AnnotatedRandSpatialCropd
from dsp_monai.transforms.views import WeakStrongViewsd
from monai.transforms import Compose

NO_JITTER = dict(brightness=0.0, contrast=0.0, blur_prob=0.0)


def test_cutout_only_blacks_exact_squares_on_the_strong_view():
    image = torch.rand(1, 96, 96) + 1.0  # no pixel is 0 before CutOut
    label = torch.randint(0, 3, (1, 96, 96))
    views = WeakStrongViewsd("image", **NO_JITTER, cutout_count=1, cutout_prob=1.0, cutout_size=32)
    views.set_random_state(0)
    out = views({"image": image, "label": label})
    assert torch.equal(out["image"], image) and torch.equal(out["label"], label)
    black = (torch.as_tensor(out["image_strong"])[0] == 0).numpy()
    rows, cols = np.nonzero(black)
    assert black.sum() == 32 * 32 and np.ptp(rows) == 31 and np.ptp(cols) == 31
    untouched = ~black
    assert torch.equal(torch.as_tensor(out["image_strong"])[0][untouched], image[0][torch.as_tensor(untouched)])


def test_cutout_count_follows_binomial_probability():
    image = torch.ones(1, 40, 40)
    views = WeakStrongViewsd("image", **NO_JITTER, cutout_count=9, cutout_prob=0.5, cutout_size=1)
    views.set_random_state(1)
    counts = [int((torch.as_tensor(views({"image": image})["image_strong"]) == 0).sum()) for _ in range(120)]
    # 1-pixel holes rarely coincide: the count of black pixels is ~ Binomial(9, 0.5)
    assert max(counts) <= 9 and abs(np.mean(counts) - 4.5) < 0.45  # 3.3 standard errors


def test_zero_probabilities_leave_the_strong_view_equal_to_the_weak_one():
    image = torch.rand(1, 40, 40)
    views = WeakStrongViewsd("image", brightness_prob=0.0, contrast_prob=0.0, blur_prob=0.0, cutout_prob=0.0)
    out = views({"image": image})
    assert torch.equal(torch.as_tensor(out["image_strong"]), image)


def test_jitter_and_blur_change_the_strong_view_only():
    image = torch.rand(1, 3, 32, 32)[0]
    views = WeakStrongViewsd("image", brightness_prob=1.0, contrast_prob=1.0, blur_prob=1.0, cutout_count=0)
    views.set_random_state(2)
    out = views({"image": image})
    assert torch.equal(out["image"], image)
    assert not torch.allclose(torch.as_tensor(out["image_strong"]), image)
    assert out["image_strong"].shape == image.shape and out["image_strong"].dtype == torch.float32


def test_views_share_geometry_when_applied_after_it():
    image = torch.arange(64 * 64, dtype=torch.float32).reshape(1, 64, 64)
    pipeline = Compose([
        AnnotatedRandFlipd(prob=0.5),
        AnnotatedRandSpatialCropd(roi_size=40),
        WeakStrongViewsd("image", brightness=0.0, contrast=0.0, blur_prob=0.0, cutout_prob=1.0, cutout_count=2,
                         cutout_size=8, cutout_fill=-1.0),
    ])
    pipeline.set_random_state(3)
    for _ in range(5):
        out = pipeline({"image": image})
        weak, strong = torch.as_tensor(out["image"]), torch.as_tensor(out["image_strong"])
        kept = strong != -1.0
        assert torch.equal(weak[kept], strong[kept]), "pixels outside CutOut must match the weak view exactly"


def test_3d_and_determinism():
    image = torch.rand(1, 20, 24, 24)
    first = WeakStrongViewsd("image", cutout_size=8, cutout_prob=1.0)
    second = WeakStrongViewsd("image", cutout_size=8, cutout_prob=1.0)
    first.set_random_state(5)
    second.set_random_state(5)
    a, b = first({"image": image}), second({"image": image})
    assert torch.equal(torch.as_tensor(a["image_strong"]), torch.as_tensor(b["image_strong"]))
    assert a["image_strong"].shape == image.shape


def test_view_errors_are_clear():
    with pytest.raises(ValueError, match="probabilities must lie in"):
        WeakStrongViewsd("image", cutout_prob=1.5)
    with pytest.raises(ValueError, match="blur_sigma must be"):
        WeakStrongViewsd("image", blur_sigma=(2.0, 1.0))
    with pytest.raises(ValueError, match="one image key"):
        WeakStrongViewsd(("image", "other"))
