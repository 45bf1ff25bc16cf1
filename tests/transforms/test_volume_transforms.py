"""The pieces of 3D training: weak labels of volumes against an independent scipy derivation, class-centred crops,
rotation planes chosen by voxel size, and the 3D training chain on NIfTI volumes with an anisotropic affine."""

import nibabel as nib
import numpy as np
import pytest
import torch
from scipy import ndimage
from scipy.spatial.distance import cdist

from dsp_monai.data.experiment import relative_spacing
from dsp_monai.engines.data import training_transforms
from dsp_monai.transforms.geometry import AddValidMaskd, AnnotatedRandClassCropd, isotropic_planes
from dsp_monai.transforms.weak_labels import DeriveWeakLabels

SPACING = (1.31, 1.0, 1.0)


def blobs(shape=(9, 14, 13), seed=0, classes=3, share=0.1):
    rng = np.random.default_rng(seed)
    label = np.zeros(shape, dtype=np.int64)
    for cls in range(1, classes + 1):
        field = ndimage.gaussian_filter(rng.standard_normal(shape), 1.2)
        label[field > np.quantile(field, 1 - share)] = cls
    label[0, :3, :3] = 255  # a few unknown voxels
    return label


def scipy_weak_labels(label, spacing):
    """Tags, 26-connected component boxes (exclusive ends) and medoid points, derived without the project's code."""
    structure = np.ones((3, 3, 3), dtype=bool)
    tags = sorted(int(c) for c in np.unique(label) if c != 255)
    boxes, medoids = [], []
    for cls in tags:
        components, count = ndimage.label(label == cls, structure)
        for index, found in enumerate(ndimage.find_objects(components), start=1):
            boxes.append((cls, *[s.start for s in found], *[s.stop for s in found]))
            coords = np.argwhere(components == index).astype(np.float64)
            costs = cdist(coords * spacing, coords * spacing).sum(1)
            medoids.append((cls, [tuple(int(v) for v in coords[i]) for i in np.flatnonzero(costs <= costs.min()
                                                                                          * (1 + 1e-12))]))
    return tags, sorted(boxes), medoids


@pytest.mark.parametrize("seed", range(3))
def test_3d_weak_labels_match_an_independent_scipy_derivation(seed):
    label = blobs(seed=seed)
    out = DeriveWeakLabels(spacing=SPACING)(torch.as_tensor(label)[None])
    tags, boxes, medoids = scipy_weak_labels(label, np.asarray(SPACING))
    assert out["tags"].tolist() == tags
    assert sorted((int(c), *map(int, b)) for c, b in zip(out["box_classes"], out["boxes"])) == boxes
    assert len(boxes) > len(tags)  # several components per class: the 26-connectivity matters
    points = sorted((int(c), tuple(p.tolist())) for c, p in zip(out["point_classes"], out["points"]))
    assert len(points) == len(medoids)
    for cls, candidates in medoids:  # each component has exactly one point, one of its medoids
        assert sum(c == cls and p in candidates for c, p in points) == 1


def test_isotropic_planes_follow_the_voxel_size():
    assert isotropic_planes(3) == [(0, 1), (0, 2), (1, 2)]
    assert isotropic_planes(3, (10.48, 8.0, 8.0)) == [(1, 2)]
    assert isotropic_planes(3, (1.0, 1.0, 1.0)) == [(0, 1), (0, 2), (1, 2)]
    assert isotropic_planes(3, (0.8, 2.0, 0.8)) == [(0, 2)]
    assert isotropic_planes(3, (3.0, 2.0, 1.0)) == []
    assert isotropic_planes(2, (8.0, 8.0)) == [(0, 1)]
    with pytest.raises(ValueError, match=r"spacing must have 3 positive values, got \[1\.0, 1\.0\]"):
        isotropic_planes(3, (1.0, 1.0))
    assert relative_spacing([10.48, 8.0, 8.0]) == [1.31, 1.0, 1.0] and relative_spacing(None) is None


def test_class_crop_contains_a_voxel_of_every_drawn_class_equally_often():
    label = np.zeros((16, 32, 32), dtype=np.int64)
    label[2:4, 3:5, 3:5] = 1  # 8 voxels: a uniform 8x8x8 window would miss it most of the time
    label[10:16, 20:32, 20:32] = 2
    item = AddValidMaskd("image")({"image": torch.rand(1, 16, 32, 32), "label": torch.as_tensor(label)[None],
                                   "annotation_type": "mask"})
    crop = AnnotatedRandClassCropd(roi_size=8)
    crop.set_random_state(0)
    seen = np.zeros(3)
    for _ in range(300):
        out = crop(item)
        assert tuple(out["label"].shape) == (1, 8, 8, 8)
        seen += [bool((out["label"] == c).any()) for c in range(3)]
    # class 0 is everywhere but in class 2's block; each of the 3 classes is drawn a third of the time
    assert seen[1] >= 80 and seen[2] >= 80 and seen[0] >= 200


def test_class_crop_uses_given_boxes_and_points_but_never_the_mask_of_a_weak_item():
    image = torch.rand(1, 12, 24, 24)
    boxed = {"image": image, "boxes": torch.tensor([[1, 2, 3, 3, 5, 6]]), "box_classes": torch.tensor([4]),
             "points": torch.tensor([[10, 20, 21]]), "point_classes": torch.tensor([1]), "annotation_type": "boxes"}
    crop = AnnotatedRandClassCropd(roi_size=(4, 6, 6))
    crop.set_random_state(1)
    for _ in range(40):
        out = crop(boxed)
        assert len(out["boxes"]) == 1 or len(out["points"]) == 1  # the window holds a box voxel or the point
    label = torch.zeros(1, 12, 24, 24, dtype=torch.int64)
    label[0, 0, 0, 0] = 1
    weak = {"image": image, "label": label, "annotation_type": "points"}  # its point is derived after the crop
    hits = sum(bool((crop(weak)["label"] == 1).any()) for _ in range(200))
    assert hits < 10  # uniform windows: the lone voxel is rarely inside
    with pytest.raises(ValueError, match=r"prob must be in \[0, 1\], got 1\.5"):
        AnnotatedRandClassCropd(roi_size=4, prob=1.5)


def _nifti(path, array, spacing):
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = [4.0, -2.0, 7.5]
    nib.save(nib.Nifti1Image(array, affine), str(path))
    return str(path)


@pytest.mark.parametrize("spacing,planes_kept", [((2.0, 1.0, 1.0), True), ((1.0, 1.0, 1.0), False)])
def test_3d_training_chain_turns_only_in_isotropic_planes(tmp_path, spacing, planes_kept):
    """An image whose value is its z index keeps every z-slice constant under flips and quarter turns in the
    (y, x) plane; a turn through z (allowed only when the voxels are isotropic) breaks that."""
    shape = (6, 8, 8)
    image = np.broadcast_to(np.arange(shape[0], dtype=np.float32)[:, None, None], shape).copy()
    label = blobs(shape, seed=3).astype(np.uint8)
    item = {"image": _nifti(tmp_path / "image.nii.gz", image, spacing),
            "label": _nifti(tmp_path / "label.nii.gz", label, spacing), "annotation_type": "mask"}
    chain = training_transforms(["a", "b", "c", "d"], roi_size=[8, 8, 8], intensity_range=[0.0, 5.0],
                                rotate90_prob=1.0, strong_view=False, spacing=spacing, class_crop_prob=1.0)
    constant_slices = []
    for seed in range(12):
        chain.set_random_state(seed)
        out = chain(dict(item))
        valid = out["valid"][0].numpy()
        values = out["image"][0].numpy()
        z_valid = [values[z][valid[z]] for z in range(8) if valid[z].any()]
        constant_slices.append(all(np.ptp(v) == 0 for v in z_valid))
        moved = out["label"][0].numpy()
        assert ((moved == 255) | valid).all() and (moved[~valid] == 255).all()
        assert sorted(np.unique(moved[valid]).tolist()) == sorted(np.unique(label).tolist())
    assert all(constant_slices) is planes_kept
