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
