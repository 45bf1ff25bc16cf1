"""Experiment preparation: datalist -> split -> items, pinned against the items recorded before the move to the data
layer (tests/data/experiment_items.json), and the split file it writes and reads back."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dsp_monai.data.experiment import prepare_experiment
from user_data import write_user_datalist

PINNED = Path(__file__).with_name("experiment_items.json")


def _user_data(root: Path) -> None:
    """A user's own PNG images with a mask, tags, a box, clicks and one unannotated image (as tests/bundle)."""
    content = write_user_datalist(root)
    masked_items = [{"image": f"images/case{i}.png", "label": f"labels/case{i}.png"} for i in range(5)]
    masked = dict(content, training=masked_items)
    (root / "masked.json").write_text(json.dumps(masked))


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("experiment_data")
    subprocess.run(
        [sys.executable, "-m", "dsp_monai.data.synthetic", "--out", str(root / "tiny"), "--cells", "2",
         "--crops-per-cell", "3", "--crop-shape", "4", "64", "64", "--no-contact-sheet", "--quiet", "--overwrite"],
        check=True, cwd=root, env=dict(os.environ, OMP_NUM_THREADS="1"),
    )
    _user_data(root / "user")
    return root


RUNS = {
    "pool_acr2": ("tiny/datalist.json", dict(acr=2)),
    "pool_acr8_split1_seed3": ("tiny/datalist.json",
                               dict(acr=8, split_index=1, seed=3, weak_types=["boxes", "points"])),
    "pool_semi_masks_only": ("tiny/datalist.json", dict(acr=4, weak_types=[], training_types=["mask"])),
    "user_as_given": ("user/datalist.json", dict(acr=0)),
    "user_masked_acr2": ("user/masked.json", dict(acr=2, seed=1)),
}


def _relative(result: dict, root: Path) -> dict:
    def rel(item):
        return {**item, **{key: os.path.relpath(item[key], root) for key in ("image", "label") if key in item}}

    return {
        part: (result[part] if part == "class_names" else [rel(item) for item in result[part]])
        for part in ("training", "validation", "test", "class_names")
    }


@pytest.mark.parametrize("name", sorted(RUNS))
def test_items_equal_the_pinned_items(data_root, tmp_path, name):
    datalist, kwargs = RUNS[name]
    result = prepare_experiment(str(data_root / datalist), str(tmp_path), spatial_dims=2, **kwargs)
    assert _relative(result, data_root) == json.loads(PINNED.read_text())[name]
