"""Hypothesis strategies of malformed datalists: a valid datalist with random damage (values replaced by garbage of
any JSON type, keys deleted or added, garbage nested anywhere, huge numbers, unicode paths), and arbitrary JSON.

Used by tests/data/test_datalist_fuzz.py (a few examples) and benchmarks/fuzz_datalist.py (many)."""

import json

import numpy as np
from hypothesis import strategies as st
from PIL import Image

CLASSES = ["background", "bright", "dark"]

numbers = st.one_of(
    st.integers(-3, 70),
    st.integers(),
    st.sampled_from([2**63, -2**63 - 1, 10**30, 10**400]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, 10.0, 10.5, 1e308, -0.0]),
)
texts = st.one_of(
    st.text(max_size=12),
    st.sampled_from(["img0.png", "lab0.png", "img1.png", "", ".", "..", "img0.png?crop=x", "nope.png",
                     "images/../img0.png", "\u00e9t\u00e9.png", "\u56fe\u50cf.png", "\ud800.png", "a\x00b"]),
)
scalars = st.one_of(st.none(), st.booleans(), numbers, texts)
garbage = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                        st.dictionaries(texts, inner, max_size=4)), max_leaves=12)
coordinates = st.lists(st.lists(numbers, min_size=0, max_size=7), max_size=4)

KEYS = ["image", "label", "tags", "boxes", "box_classes", "boxes_exhaustive", "points", "point_classes", "subvolume",
        "annotation_type", "id", "metadata"]


def write_images(folder) -> None:
    """The files the valid datalist names: two 64 x 64 PNG images and a label."""
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray((rng.random((64, 64)) * 255).astype(np.uint8)).save(folder / f"img{i}.png")
    label = np.zeros((64, 64), np.uint8)
    label[10:30, 12:40] = 2
    Image.fromarray(label).save(folder / "lab0.png")


def valid_datalist() -> dict:
    return {
        "class_names": list(CLASSES),
        "training": [
            {"image": "img0.png", "label": "lab0.png"},
            {"image": "img1.png", "tags": [0, 2], "boxes": [[10, 12, 30, 40]], "box_classes": [2],
             "boxes_exhaustive": False, "points": [[20, 20]], "point_classes": [2]},
        ],
        "validation": [{"image": "img1.png", "label": "lab0.png"}],
        "test": [{"image": "img0.png", "label": "lab0.png"}],
    }


@st.composite
def damaged_datalists(draw):
    """A valid datalist with one to four random changes."""
    content = valid_datalist()
    for _ in range(draw(st.integers(1, 4))):
        section = draw(st.sampled_from(["training", "validation", "test"]))
        items = content.get(section)
        action = draw(st.sampled_from(["replace", "delete", "add", "coordinates", "item", "top", "section",
                                       "classes"]))
        if action == "top":
            content[draw(st.sampled_from(["class_names", "training", "data", "description", "metadata",
                                          "extra"]))] = draw(garbage)
        elif action == "classes":
            content["class_names"] = draw(st.lists(texts, max_size=4) | garbage)
        elif action == "section" or not isinstance(items, list) or not items:
            content[section] = draw(st.lists(garbage, max_size=3) | garbage)
        else:
            position = draw(st.integers(0, len(items) - 1))
            item = items[position]
            if action == "item" or not isinstance(item, dict):
                items[position] = draw(garbage)
            elif action == "replace":
                item[draw(st.sampled_from(KEYS))] = draw(garbage)
            elif action == "delete" and item:
                del item[draw(st.sampled_from(sorted(item)))]
            elif action == "add":
                item[draw(texts)] = draw(garbage)
            else:
                key, classes_key = draw(st.sampled_from([("boxes", "box_classes"), ("points", "point_classes")]))
                item[key] = draw(coordinates)
                item[classes_key] = draw(st.lists(st.integers(-1, 4), max_size=4))
    return content


def encode(content) -> bytes:
    """JSON text of ``content`` (NaN / Infinity as Python writes them; lone surrogates escaped)."""
    return json.dumps(content).encode("utf-8")


documents = st.one_of(
    damaged_datalists().map(encode),
    garbage.map(encode),
    st.binary(max_size=64),
    st.sampled_from([b"[" * 5000, b'{"class_names": [' + b"9" * 5000 + b"]}", b"\xff\xfe"]),
)
