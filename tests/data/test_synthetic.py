"""The synthetic FIB-SEM dataset: OpenOrganelle layout and metadata, alignment of labels to EM, unknown regions,
determinism per seed, skewed class frequencies, the FIB-SEM grey levels per class, and the cached default."""

import json
import os

import numpy as np
import pytest
import zarr
from PIL import Image

from dsp_monai.data import synthetic
from dsp_monai.data.datalist import load_datalist
from dsp_monai.data.label_tables import COSEM_IDS_BY_NAME, HELA2_CLASS_NAMES, IGNORE_INDEX
from dsp_monai.data.readers import OMEZarrReader
from dsp_monai.data.synthetic import SyntheticConfig, ensure_default_dataset, generate_dataset

CONFIG = SyntheticConfig(seed=0, cells=2, crops_per_cell=4, crop_shape=(4, 64, 64))
TINY = SyntheticConfig(seed=5, cells=1, crops_per_cell=1, crop_shape=(2, 32, 32))
EM = "recon-1/em/fibsem-uint8"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("synthetic")
    summary = generate_dataset(out, CONFIG, progress=False)
    return str(out), summary


def multiscale(group):
    spec = group.attrs["multiscales"][0]
    levels = {}
    for entry in spec["datasets"]:
        transforms = {t["type"]: t[t["type"]] for t in entry["coordinateTransformations"]}
        levels[entry["path"]] = (np.array(transforms["scale"]), np.array(transforms["translation"]))
    return spec, levels


def crops(root):
    return sorted(root["recon-1/labels/groundtruth"].group_keys())


def test_layout_and_ome_metadata(dataset):
    out, _ = dataset
    scale = np.array(CONFIG.em_scale)
    for cell in ("cell_00", "cell_01"):
        path = os.path.join(out, f"{cell}.zarr")
        assert json.load(open(os.path.join(path, ".zgroup")))["zarr_format"] == 2
        assert json.load(open(os.path.join(path, EM, "s0", ".zarray")))["zarr_format"] == 2
        root = zarr.open_group(path, mode="r")
        spec, em_levels = multiscale(root[EM])
        assert spec["version"] == "0.4"
        assert [(a["name"], a["unit"]) for a in spec["axes"]] == [(n, "nanometer") for n in "zyx"]
        assert root[f"{EM}/s0"].shape == CONFIG.volume_shape and root[f"{EM}/s0"].dtype == np.uint8
        np.testing.assert_allclose(em_levels["s0"][0], scale)
        np.testing.assert_allclose(em_levels["s0"][1], scale / 2)  # pixel centres of a volume starting at 0 nm
        np.testing.assert_allclose(em_levels["s1"][0], scale * 2)
        np.testing.assert_allclose(em_levels["s1"][1], scale)
        assert len(crops(root)) == CONFIG.crops_per_cell
        for crop in crops(root):
            _, levels = multiscale(root[f"recon-1/labels/groundtruth/{crop}/all"])
            np.testing.assert_allclose(levels["s0"][0], scale / 2)  # labels at twice the EM resolution
            np.testing.assert_allclose(levels["s1"][0], scale)
            np.testing.assert_allclose(levels["s1"][1], levels["s0"][1] + scale / 4)
            shape_s0 = root[f"recon-1/labels/groundtruth/{crop}/all/s0"].shape
            shape_s1 = root[f"recon-1/labels/groundtruth/{crop}/all/s1"].shape
            assert shape_s1 == CONFIG.crop_shape and shape_s0 == tuple(2 * n for n in CONFIG.crop_shape)
            start = (levels["s1"][1] - em_levels["s0"][1]) / scale
            np.testing.assert_allclose(start, np.round(start), atol=1e-6)
            assert np.all(np.round(start) > 0)  # crops sit at non-zero offsets
            names = root[f"recon-1/labels/groundtruth/{crop}"].attrs["cellmap"]["annotation"]["class_names"]
            assert set(names) <= set(COSEM_IDS_BY_NAME) and "cyto" in names


def test_em_s1_is_the_2x_mean_of_s0(dataset):
    out, _ = dataset
    root = zarr.open_group(os.path.join(out, "cell_01.zarr"), mode="r")
    s0 = root[f"{EM}/s0"][...].astype(float)
    z, y, x = (n // 2 for n in s0.shape)
    mean = s0.reshape(z, 2, y, 2, x, 2).mean(axis=(1, 3, 5))
    np.testing.assert_array_equal(root[f"{EM}/s1"][...], np.rint(mean).astype(np.uint8))


def test_datalist_names_every_slice_and_loads(dataset):
    out, _ = dataset
    items, names = load_datalist(os.path.join(out, "datalist.json"), "data")
    assert names == list(HELA2_CLASS_NAMES)
    depth = CONFIG.crop_shape[0]
    assert len(items) == CONFIG.cells * CONFIG.crops_per_cell * depth
    subvolumes = [item["subvolume"] for item in items]
    assert len(set(subvolumes)) == CONFIG.cells * CONFIG.crops_per_cell
    assert all(subvolumes.count(s) == depth for s in set(subvolumes))
    reader = OMEZarrReader(class_names=names)
    item = items[depth + 1]  # second crop of cell_00, slice 1
    image, meta = reader.get_data(reader.read(item["image"]))
    root = zarr.open_group(os.path.join(out, "cell_00.zarr"), mode="r")
    start = meta["zarr_start"]
    expected = root[f"{EM}/s0"][start[0], start[1]:start[1] + 64, start[2]:start[2] + 64]
    np.testing.assert_array_equal(image, expected)
    label, _ = reader.get_data(reader.read(item["label"]))
    assert label.shape == image.shape == (64, 64)


def test_grey_levels_per_class_look_like_fib_sem(dataset):
    """Read through the reader, EM and labels must agree: bright ECS, dark membranes, dark lysosomes."""
    out, _ = dataset
    items, names = load_datalist(os.path.join(out, "datalist.json"))
    reader = OMEZarrReader(class_names=names)
    sums, counts = np.zeros(256), np.zeros(256)
    for item in items:
        image, _ = reader.get_data(reader.read(item["image"]))
        label, _ = reader.get_data(reader.read(item["label"]))
        sums += np.bincount(label.ravel(), weights=image.ravel().astype(float), minlength=256)
        counts += np.bincount(label.ravel(), minlength=256)
    assert np.all(counts[: len(names)] > 200), dict(zip(names, counts))
    mean = {name: sums[i] / counts[i] for i, name in enumerate(names)}
    assert mean["ecs"] > mean["cytosol"] + 40
    assert mean["plasma_membrane"] < mean["cytosol"] - 30
    assert mean["mito"] < mean["cytosol"] - 20
    assert mean["lysosome"] < mean["mvb"] - 20 and mean["lysosome"] < mean["vesicle"] - 40
    assert mean["er"] < mean["cytosol"] - 10


def test_class_frequencies_are_skewed(dataset):
    out, summary = dataset
    fractions = summary["class_fraction"]
    assert json.load(open(os.path.join(out, "stats.json")))["class_fraction"] == fractions
    assert sum(f > 0 for f in fractions.values()) >= 9
    assert max(fractions, key=fractions.get) == "cytosol" and fractions["cytosol"] > 0.4
    for thin in ("plasma_membrane", "er", "microtubule", "nuclear_envelope", "vesicle"):
        assert 0 < fractions[thin] < 0.03, thin
    present = [f for f in fractions.values() if f > 0]
    assert max(present) / min(present) > 50


def test_unknown_regions_become_ignore(tmp_path):
    config = SyntheticConfig(seed=2, cells=1, crops_per_cell=1, crop_shape=(3, 48, 48), unannotated_fraction=1.0,
                             unknown_band_fraction=1.0, generic_nucleus_fraction=0.0)
    generate_dataset(tmp_path, config, progress=False, contact_sheet=False)
    root = zarr.open_group(tmp_path / "cell_00.zarr", mode="r")
    crop = crops(root)[0]
    names = root[f"recon-1/labels/groundtruth/{crop}"].attrs["cellmap"]["annotation"]["class_names"]
    assert not {"er_mem", "er_lum", "mt_out", "mt_in"} & set(names)
    raw = root[f"recon-1/labels/groundtruth/{crop}/all/s1"][...]
    unknown = np.isin(raw, [16, 17, 30, 36, IGNORE_INDEX])
    assert (raw == IGNORE_INDEX).mean() > 0.05 and np.isin(raw, [16, 17, 30, 36]).any()
    reader = OMEZarrReader(class_names=HELA2_CLASS_NAMES)
    for z in range(3):
        label, _ = reader.get_data(reader.read(f"{tmp_path}/cell_00.zarr?crop={crop}&layer=label&axis=z&index={z}"))
        np.testing.assert_array_equal(label == IGNORE_INDEX, unknown[z])
        cytosol = HELA2_CLASS_NAMES.index("cytosol")
        np.testing.assert_array_equal(label == cytosol, raw[z] == 35)


def arrays(folder):
    root = zarr.open_group(os.path.join(folder, "cell_00.zarr"), mode="r")
    crop = crops(root)[0]
    return root[f"{EM}/s0"][...], root[f"recon-1/labels/groundtruth/{crop}/all/s0"][...]


def test_deterministic_per_seed(tmp_path):
    for name, config in (("a", TINY), ("b", TINY), ("c", SyntheticConfig(**{**TINY.__dict__, "seed": 6}))):
        generate_dataset(tmp_path / name, config, progress=False, contact_sheet=False)
    em_a, labels_a = arrays(tmp_path / "a")
    em_b, labels_b = arrays(tmp_path / "b")
    em_c, labels_c = arrays(tmp_path / "c")
    np.testing.assert_array_equal(em_a, em_b)
    np.testing.assert_array_equal(labels_a, labels_b)
    assert (tmp_path / "a" / "datalist.json").read_text() == (tmp_path / "b" / "datalist.json").read_text()
    assert (em_a != em_c).mean() > 0.5
    assert not np.array_equal(labels_a, labels_c)


def test_a_cell_does_not_depend_on_the_number_of_cells(tmp_path, dataset):
    out, _ = dataset
    generate_dataset(tmp_path, SyntheticConfig(**{**CONFIG.__dict__, "cells": 1}), progress=False,
                     contact_sheet=False)
    for one, two in zip(arrays(tmp_path), arrays(out)):
        np.testing.assert_array_equal(one, two)


def test_contact_sheet(dataset):
    out, _ = dataset
    with Image.open(os.path.join(out, "contact_sheet.png")) as sheet:
        width, height = sheet.size
        pixels = np.asarray(sheet.convert("RGB"))
    assert width > 4 * 2 * 64 and height > 2 * 64
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 1000  # real images, not a blank canvas


def test_ensure_default_dataset_is_idempotent_and_atomic(tmp_path, monkeypatch):
    path = ensure_default_dataset(tmp_path, TINY)
    assert path == os.path.join(synthetic.default_dataset_dir(tmp_path, TINY), "datalist.json")
    assert os.path.isfile(path) and not [n for n in os.listdir(tmp_path) if ".tmp-" in n]

    def fail(*args, **kwargs):
        raise RuntimeError("interrupted")

    monkeypatch.setattr(synthetic, "generate_dataset", fail)
    assert ensure_default_dataset(tmp_path, TINY) == path  # already there: nothing is regenerated
    other = SyntheticConfig(**{**TINY.__dict__, "seed": 9})
    with pytest.raises(RuntimeError, match="interrupted"):
        ensure_default_dataset(tmp_path, other)
    assert sorted(os.listdir(tmp_path)) == [os.path.basename(os.path.dirname(path))]  # no partial dataset left
    assert synthetic.default_dataset_dir(tmp_path).endswith(f"synthetic_fibsem_v{synthetic.GENERATOR_VERSION}_seed0")


def test_cli(tmp_path):
    args = ["--out", str(tmp_path / "out"), "--cells", "1", "--crops-per-cell", "2", "--crop-shape", "2", "32", "32",
            "--seed", "4", "--quiet", "--no-contact-sheet"]
    assert synthetic.main(args) == 0
    items, _ = load_datalist(tmp_path / "out" / "datalist.json")
    assert len(items) == 4 and items[0]["image"].endswith("cell_00.zarr?crop=crop1&layer=em&axis=z&index=0")
    assert not (tmp_path / "out" / "contact_sheet.png").exists()
    with pytest.raises(SystemExit):
        synthetic.main(args)  # refuses to write into a non-empty folder without --overwrite


@pytest.mark.parametrize(
    "options, message",
    [({"cells": 0}, "cells and crops_per_cell must be >= 1"), ({"crop_shape": (2, 32)}, "crop_shape must be three"),
     ({"em_scale": (1.0, 0.0, 1.0)}, "em_scale must be three positive")],
)
def test_config_validation(options, message):
    with pytest.raises(ValueError, match=message):
        SyntheticConfig(**options)
