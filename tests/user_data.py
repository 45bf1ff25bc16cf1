"""A user's own small PNG datalist (a mask, tags, a box, clicks and one unannotated image, in sections), shared by
the tests that need one."""

import json
from pathlib import Path

import numpy as np
from PIL import Image


def write_user_datalist(root: Path) -> dict:
    """Writes images/, labels/ and datalist.json under ``root`` and returns the datalist's content."""
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    rng = np.random.default_rng(0)
    for i in range(8):
        image = (rng.random((64, 64)) * 60 + 100).astype(np.uint8)
        label = np.zeros((64, 64), np.uint8)
        label[10:30, 12:40], image[10:30, 12:40] = 2, image[10:30, 12:40] - 60
        label[40:55, 40:60], image[40:55, 40:60] = 1, image[40:55, 40:60] + 60
        Image.fromarray(image).save(root / "images" / f"case{i}.png")
        Image.fromarray(label).save(root / "labels" / f"case{i}.png")
    content = {
        "class_names": ["background", "bright", "dark"],
        "training": [
            {"image": "images/case0.png", "label": "labels/case0.png"},
            {"image": "images/case1.png", "tags": [0, 1, 2]},
            {"image": "images/case2.png", "boxes": [[10, 12, 30, 40]], "box_classes": [2], "boxes_exhaustive": False},
            {"image": "images/case3.png", "points": [[20, 20], [45, 50]], "point_classes": [2, 1]},
            {"image": "images/case4.png"},
        ],
        "validation": [{"image": "images/case5.png", "label": "labels/case5.png"}],
        "test": [{"image": f"images/case{i}.png", "label": f"labels/case{i}.png"} for i in (6, 7)],
    }
    (root / "datalist.json").write_text(json.dumps(content))
    return content


def write_user_volume_datalist(root: Path, shape=(20, 24, 12), spacing=(0.8, 0.8, 2.0)) -> dict:
    """Writes NIfTI volumes (an anisotropic, partly flipped affine with an offset) under ``root`` with a datalist of
    sections: a mask, tags, a 3D box, 3D clicks and one unannotated volume; returns the datalist's content."""
    import nibabel as nib

    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    affine = np.diag([-spacing[0], spacing[1], spacing[2], 1.0])
    affine[:3, 3] = [12.0, -30.0, 4.5]
    rng = np.random.default_rng(0)
    for i in range(8):
        image = (rng.random(shape) * 60 + 100).astype(np.float32)
        label = np.zeros(shape, np.uint8)
        label[3:12, 4:15, 2:7], image[3:12, 4:15, 2:7] = 2, image[3:12, 4:15, 2:7] - 60
        label[13:18, 16:22, 7:11], image[13:18, 16:22, 7:11] = 1, image[13:18, 16:22, 7:11] + 60
        nib.save(nib.Nifti1Image(image, affine), str(root / "images" / f"case{i}.nii.gz"))
        nib.save(nib.Nifti1Image(label, affine), str(root / "labels" / f"case{i}.nii.gz"))
    content = {
        "class_names": ["background", "bright", "dark"],
        "training": [
            {"image": "images/case0.nii.gz", "label": "labels/case0.nii.gz"},
            {"image": "images/case1.nii.gz", "tags": [0, 1, 2]},
            {"image": "images/case2.nii.gz", "boxes": [[3, 4, 2, 12, 15, 7]], "box_classes": [2],
             "boxes_exhaustive": False},
            {"image": "images/case3.nii.gz", "points": [[7, 9, 4], [15, 18, 9]], "point_classes": [2, 1]},
            {"image": "images/case4.nii.gz"},
        ],
        "validation": [{"image": "images/case5.nii.gz", "label": "labels/case5.nii.gz"}],
        "test": [{"image": f"images/case{i}.nii.gz", "label": f"labels/case{i}.nii.gz"} for i in (6, 7)],
    }
    (root / "datalist.json").write_text(json.dumps(content))
    return content
