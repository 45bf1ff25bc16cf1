"""Readers: OME-NGFF zarr crops aligned to EM from multiscale metadata, the COSEM look-up table, and MONAI's own
readers for NIfTI, NRRD, TIFF and PNG in the project's array order. Fixtures are written here by hand with zarr,
so the expected arrays are known independently of the code under test."""

import json
import os
import re
import shutil

import nibabel as nib
import nrrd
import numpy as np
import pytest
import tifffile
import zarr
from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged
from PIL import Image

from dsp_monai.data.datalist import load_datalist
from dsp_monai.data.label_tables import (
    DEFAULT_CLASS_NAMES,
    HELA2_CLASS_NAMES,
    IGNORE_INDEX,
    MERGED_GROUPS,
    apply_lut,
    build_lut,
)
from dsp_monai.data.readers import (
    MultiFormatReader,
    OMEZarrReader,
    format_zarr_path,
    parse_zarr_path,
    reader_for_path,
    reader_kind,
)

EM_SCALE = np.array([4.0, 3.0, 3.0])
EM_T0 = np.array([2.0, 1.5, -10.5])  # pixel centre of EM voxel (0, 0, 0): non-zero, one negative
CROP_START = np.array([3, 5, 7])  # EM s0 index of the crop's first voxel
CROP_SHAPE = np.array([4, 6, 8])  # at EM s0 resolution
# Crop 1 annotates these COSEM classes; 16 (ER membrane) is present in the data but not annotated.
ANNOTATED = ["ecs", "mito_mem", "mito_lum", "nucpl", "ne_mem", "cyto"]
CLASSES = ["ecs", "mito", "nucleus", "nuclear_envelope", "cytosol"]
# Hand-written expectation of the merge for CLASSES: id -> class index.
EXPECTED = {1: 0, 3: 1, 4: 1, 28: 2, 20: 3, 35: 4}


def ome(scales, translations):
    datasets = [
        {
            "path": f"s{i}",
            "coordinateTransformations": [
                {"type": "scale", "scale": list(map(float, s))},
                {"type": "translation", "translation": list(map(float, t))},
            ],
        }
        for i, (s, t) in enumerate(zip(scales, translations))
    ]
    axes = [{"name": n, "type": "space", "unit": "nanometer"} for n in "zyx"]
    return {"multiscales": [{"version": "0.4", "axes": axes, "datasets": datasets}]}


def add_crop(root, name, label_s0, t_label_s0, class_names=None):
    """Label levels s0 (half the EM voxel), s1 (= EM s0) and s2 (= EM s1), translations as pixel centres."""
    crop = root.require_group(f"recon-1/labels/groundtruth/{name}")
    if class_names is not None:
        crop.attrs["cellmap"] = {"annotation": {"class_names": class_names}}
    group = crop.require_group("all")
    levels = [label_s0, label_s0[::2, ::2, ::2], label_s0[::4, ::4, ::4]]
    scales = [EM_SCALE / 2, EM_SCALE, EM_SCALE * 2]
    translations = [t_label_s0 + (s - EM_SCALE / 2) / 2 for s in scales]
    for i, level in enumerate(levels):
        group.create_array(f"s{i}", data=np.ascontiguousarray(level), chunks=(2, 4, 4))
    group.attrs.update(ome(scales, translations))
    return levels


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("zarr")
    rng = np.random.default_rng(0)
    root = zarr.open_group(tmp_path / "cell.zarr", mode="w", zarr_format=2)
    em_s0 = rng.integers(0, 256, size=(12, 20, 24), dtype=np.uint8)
    em_s1 = rng.integers(0, 256, size=(6, 10, 12), dtype=np.uint8)
    em = root.require_group("recon-1/em/fibsem-uint8")
    em.create_array("s0", data=em_s0, chunks=(4, 8, 8))
    em.create_array("s1", data=em_s1, chunks=(4, 8, 8))
    em.attrs.update(ome([EM_SCALE, EM_SCALE * 2], [EM_T0, EM_T0 + EM_SCALE / 2]))
    ids = np.array([0, 1, 3, 4, 16, 20, 28, 35, 255], dtype=np.uint8)
    label_s0 = ids[rng.integers(0, len(ids), size=tuple(CROP_SHAPE * 2))]
    # label s1 sits on EM s0 voxel CROP_START: its centre is EM_T0 + CROP_START * EM_SCALE.
    t_label_s0 = EM_T0 + CROP_START * EM_SCALE - EM_SCALE / 4
    levels = add_crop(root, "crop1", label_s0, t_label_s0, ANNOTATED)
    add_crop(root, "crop2", label_s0, t_label_s0 + EM_SCALE * 0.3)  # off the EM grid
    add_crop(root, "crop3", label_s0, t_label_s0 + EM_SCALE * np.array([0, 0, 12]))  # beyond the EM's x extent
    add_crop(root, "crop4", np.full_like(label_s0, 40), t_label_s0)  # an id beyond the COSEM table
    return {"path": str(tmp_path / "cell.zarr"), "em_s0": em_s0, "em_s1": em_s1, "labels": levels}


def expected_classes(raw):
    out = np.full(raw.shape, IGNORE_INDEX, dtype=np.uint8)
    for cosem_id, class_index in EXPECTED.items():
        out[raw == cosem_id] = class_index
    return out


def read(path, **options):
    reader = OMEZarrReader(**options)
    return reader.get_data(reader.read(path))


@pytest.mark.parametrize("axis, index", [("z", 2), ("y", 0), ("x", 7), ("0", 3)])
def test_em_slice_is_the_region_under_the_crop(store, axis, index):
    array, meta = read(f"{store['path']}?crop=crop1&layer=em&axis={axis}&index={index}")
    number = "zyx".index(axis) if axis in "zyx" else int(axis)
    region = [slice(s, s + n) for s, n in zip(CROP_START, CROP_SHAPE)]
    region[number] = CROP_START[number] + index
    np.testing.assert_array_equal(array, store["em_s0"][tuple(region)])
    kept = [a for a in range(3) if a != number]
    first = CROP_START.copy()
    first[number] += index
    np.testing.assert_allclose(np.diag(meta["affine"])[:2], EM_SCALE[kept])
    np.testing.assert_allclose(meta["affine"][:2, 2], (EM_T0 + first * EM_SCALE)[kept])


def test_label_slice_uses_the_level_at_em_resolution_and_the_lut(store):
    array, meta = read(f"{store['path']}?crop=crop1&layer=label&axis=z&index=2", class_names=CLASSES)
    raw = store["labels"][1][2]
    np.testing.assert_array_equal(array, expected_classes(raw))
    assert (array[raw == 16] == IGNORE_INDEX).all() and (raw == 16).any()  # present but not annotated
    assert (array[raw == 0] == IGNORE_INDEX).all() and (array[raw == 255] == IGNORE_INDEX).all()
    assert meta["zarr_array"].endswith("crop1/all/s1")
    em, em_meta = read(f"{store['path']}?crop=crop1&layer=em&axis=z&index=2")
    np.testing.assert_allclose(meta["affine"], em_meta["affine"])  # image and label share physical space


def test_whole_crop_in_3d(store):
    array, meta = read(f"{store['path']}?crop=crop1&layer=em")
    start, stop = CROP_START, CROP_START + CROP_SHAPE
    np.testing.assert_array_equal(array, store["em_s0"][start[0]:stop[0], start[1]:stop[1], start[2]:stop[2]])
    assert meta["affine"].shape == (4, 4)


def test_load_imaged_with_ensure_channel_first(store):
    item = {
        "image": f"{store['path']}?crop=crop1&layer=em&axis=z&index=1",
        "label": f"{store['path']}?crop=crop1&layer=label&axis=z&index=1",
    }
    out = LoadImaged(["image", "label"], reader=OMEZarrReader(class_names=CLASSES))(item)
    out = EnsureChannelFirstd(["image", "label"])(out)
    assert tuple(out["image"].shape) == (1, 6, 8) and tuple(out["label"].shape) == (1, 6, 8)
    np.testing.assert_array_equal(out["image"][0].numpy(), store["em_s0"][4, 5:11, 7:15])
    np.testing.assert_array_equal(out["label"][0].numpy(), expected_classes(store["labels"][1][1]))


def test_misaligned_crop_is_refused(store):
    with pytest.raises(ValueError, match=r"does not sit on the EM grid: .* is not integral"):
        read(f"{store['path']}?crop=crop2&layer=em&axis=z&index=0")


def test_coarser_em_level_needs_an_integral_offset(store):
    # Label s2 has EM s1's scale, but the crop starts on odd EM s0 voxels: half a voxel off at s1.
    with pytest.raises(ValueError, match=r"not integral"):
        read(f"{store['path']}?crop=crop1&layer=em&level=s1")


def test_missing_level_and_outside_crop(store, tmp_path):
    copy = str(tmp_path / "copy.zarr")
    shutil.copytree(store["path"], copy)
    root = zarr.open_group(copy, mode="r+")
    em = root["recon-1/em/fibsem-uint8"]
    attrs = dict(em.attrs)
    attrs["multiscales"][0]["datasets"][1]["coordinateTransformations"][0]["scale"] = [5.0, 5.0, 5.0]
    em.attrs.update(attrs)
    with pytest.raises(ValueError, match=r"no label level at the EM level's scale \[5.0, 5.0, 5.0\]"):
        read(f"{copy}?crop=crop1&layer=em&level=s1")
    with pytest.raises(ValueError, match=r"covers EM indices \[3, 5, 19\]\.\.\[7, 11, 27\] .* shape \[12, 20, 24\]"):
        read(f"{store['path']}?crop=crop3&layer=em")
    with pytest.raises(ValueError, match=r"index 4 is outside the volume's 4 slices along axis 0"):
        read(f"{store['path']}?crop=crop1&layer=em&axis=z&index=4")
    with pytest.raises(FileNotFoundError, match=r"nothing at 'recon-1/labels/groundtruth/crop9/all'"):
        read(f"{store['path']}?crop=crop9&layer=em")


def test_ids_outside_the_table(store):
    with pytest.raises(ValueError, match=r"label ids \[40\] are not in the look-up table"):
        read(f"{store['path']}?crop=crop4&layer=label&axis=z&index=0")
    reader = OMEZarrReader(class_names=["liver"])  # other names are fine until a zarr label is read
    with pytest.raises(ValueError, match=r"class names \['liver'\] are not in the group table"):
        reader.read(f"{store['path']}?crop=crop1&layer=label&axis=z&index=0")


def test_plain_mode_reads_arrays_and_multiscale_groups(store):
    array, meta = read(f"{store['path']}/recon-1/em/fibsem-uint8?level=s1&axis=z&index=1")
    np.testing.assert_array_equal(array, store["em_s1"][1])
    np.testing.assert_allclose(meta["affine"][:2, 2], (EM_T0 + EM_SCALE / 2)[1:])
    array, _ = read(f"{store['path']}/recon-1/em/fibsem-uint8/s0?axis=x&index=3")
    np.testing.assert_array_equal(array, store["em_s0"][:, :, 3])
    array, _ = read(f"{store['path']}/recon-1/labels/groundtruth/crop1/all?level=s1&layer=label",
                    class_names=CLASSES)
    np.testing.assert_array_equal(array, expected_classes(store["labels"][1]))


def test_plain_array_container(tmp_path):
    image = np.arange(35, dtype=np.uint16).reshape(5, 7)
    zarr.create_array(tmp_path / "plane.zarr", data=image, zarr_format=2)
    array, meta = read(str(tmp_path / "plane.zarr"))
    np.testing.assert_array_equal(array, image)
    assert meta["axes"] == "y,x" and meta["affine"].shape == (3, 3)
    with pytest.raises(FileNotFoundError, match=r"is a single array; there is nothing at 'raw'"):
        read(str(tmp_path / "plane.zarr" / "raw"))


@pytest.mark.parametrize(
    "suffix, message",
    [
        ("?crop=crop1&axis=z&index=0", r"crop selectors need 'layer=em' or 'layer=label'"),
        ("?crop=crop1&layer=em&axis=z", r"give both 'axis' and 'index'"),
        ("?crop=crop1&layer=em&colour=red", r"unknown selector key 'colour'"),
        ("?crop=crop1&layer=mask", r"layer must be one of \['em', 'label'\]"),
        ("?crop=crop1&layer=em&axis=w&index=0", r"axis 'w' is neither an axis name"),
        ("/recon-1?crop=crop1&layer=em", r"with 'crop' the path must end at the container"),
    ],
)
def test_selector_errors(store, suffix, message):
    with pytest.raises(ValueError, match=message):
        read(store["path"] + suffix)


def test_selector_round_trip():
    path = format_zarr_path("/d/cell.zarr", crop="crop3", layer="label", axis="z", index=12)
    assert path == "/d/cell.zarr?crop=crop3&layer=label&axis=z&index=12"
    parsed = parse_zarr_path(path)
    assert (parsed.store, parsed.crop, parsed.layer, parsed.axis, parsed.index) == (
        "/d/cell.zarr", "crop3", "label", "z", 12)
    assert parse_zarr_path("/d/c.zarr/a/b?level=s1").inner == "a/b"


def test_n5_gives_conversion_advice(tmp_path):
    (tmp_path / "cell.n5").mkdir()
    with pytest.raises(ValueError, match=r"N5 containers cannot be read with zarr .* Convert it to zarr"):
        read(f"{tmp_path / 'cell.n5'}?crop=crop1&layer=em")


def test_default_lut_follows_the_cnnectome_hierarchy():
    lut = build_lut()
    index = {name: i for i, name in enumerate(DEFAULT_CLASS_NAMES)}
    assert len(DEFAULT_CLASS_NAMES) == 17
    assert [int(lut[i]) for i in (3, 4, 5)] == [index["mito"]] * 3
    assert [int(lut[i]) for i in (16, 17, 18, 19)] == [index["er"]] * 4
    assert [int(lut[i]) for i in (20, 21, 22, 23)] == [index["nuclear_envelope"]] * 4  # most specific wins
    assert [int(lut[i]) for i in (24, 28, 29, 37)] == [index["nucleus"]] * 4
    assert [int(lut[i]) for i in (31, 32, 33)] == [index["centrosome"], index["distal_appendage"],
                                                   index["subdistal_appendage"]]
    assert int(lut[0]) == IGNORE_INDEX and int(lut[255]) == IGNORE_INDEX and int(lut[38]) == -1
    # Without the envelope class, the envelope falls to the smaller of its two other groups: ER (8 ids).
    no_envelope = build_lut(["er", "nucleus"])
    assert int(no_envelope[20]) == 0 and int(no_envelope[28]) == 1
    assert int(build_lut(["er", "nucleus"], priority=["nucleus", "er"])[20]) == 1
    hela = build_lut(HELA2_CLASS_NAMES)
    assert int(hela[6]) == IGNORE_INDEX  # Golgi: not a HeLa-2 class -> ignored, never background
    assert set(MERGED_GROUPS) == set(DEFAULT_CLASS_NAMES)


def test_lut_errors():
    with pytest.raises(ValueError, match=r"class names \['golgi_apparatus'\] are not in the group table"):
        build_lut(["mito", "golgi_apparatus"])
    with pytest.raises(ValueError, match=r"label id 300 is outside the look-up table"):
        apply_lut(np.array([1, 300]), build_lut())
    with pytest.raises(ValueError, match=r"must be integers, got dtype float"):
        apply_lut(np.array([1.0]), build_lut())


def test_monai_readers_in_storage_order(tmp_path):
    rng = np.random.default_rng(1)
    volume = rng.integers(0, 200, size=(3, 5, 7)).astype(np.uint8)
    plane = rng.integers(0, 200, size=(5, 7)).astype(np.uint8)
    nib.save(nib.Nifti1Image(volume, np.diag([0.5, 0.5, 2.0, 1.0])), tmp_path / "v.nii.gz")
    nrrd.write(str(tmp_path / "v.nrrd"), volume, index_order="C")
    tifffile.imwrite(tmp_path / "v.tif", volume, photometric="minisblack")
    tifffile.imwrite(tmp_path / "p.tif", plane, photometric="minisblack")
    Image.fromarray(plane).save(tmp_path / "p.png")
    load = LoadImaged(["image"], reader=MultiFormatReader(), image_only=True)
    for name, expected in (("v.nii.gz", volume), ("v.nrrd", volume), ("v.tif", volume), ("p.tif", plane),
                           ("p.png", plane)):
        loaded = load({"image": str(tmp_path / name)})["image"].numpy()
        np.testing.assert_array_equal(loaded, expected, err_msg=name)
    assert reader_kind(tmp_path / "v.nii.gz") == "nibabel" and reader_kind("x.mha") == "itk"
    assert type(reader_for_path("a.png")).__name__ == "PILReader"
    assert isinstance(reader_for_path("a.zarr?crop=c&layer=em"), OMEZarrReader)
    with pytest.raises(ValueError, match=r"'scan\.dcm': unsupported file type; supported are"):
        reader_kind("scan.dcm")
    assert not MultiFormatReader().verify_suffix("scan.dcm")


def test_docs_example_datalist_loads(tmp_path):
    """The example of docs/datalist.md validates and every item loads with the documented transforms."""
    docs = open(os.path.join(os.path.dirname(__file__), "..", "..", "docs", "datalist.md")).read()
    example = json.loads(re.search(r"```json\n(.*?)```", docs, re.S).group(1))
    rng = np.random.default_rng(3)
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    (tmp_path / "slices").mkdir()
    for case in range(1, 7):
        volume = rng.integers(0, 255, size=(100, 100, 40)).astype(np.uint8)
        nib.save(nib.Nifti1Image(volume, np.eye(4)), tmp_path / "images" / f"case{case:02d}.nii.gz")
        mask = rng.choice(np.array([0, 1, 2, 255], dtype=np.uint8), size=(100, 100, 40))
        nib.save(nib.Nifti1Image(mask, np.eye(4)), tmp_path / "labels" / f"case{case:02d}.nii.gz")
    tifffile.imwrite(tmp_path / "slices" / "slide7.tif", rng.integers(0, 255, (64, 80)).astype(np.uint8),
                     photometric="minisblack")
    Image.fromarray(rng.choice(np.array([0, 2, 255], dtype=np.uint8), size=(64, 80))).save(
        tmp_path / "slices" / "slide7_mask.png")
    (tmp_path / "datalist.json").write_text(json.dumps(example))
    items, class_names = load_datalist(tmp_path / "datalist.json")
    assert class_names == ["background", "liver", "tumour"] and len(items) == 7
    load = Compose([
        LoadImaged(["image", "label"], reader=MultiFormatReader(class_names=class_names), allow_missing_keys=True),
        EnsureChannelFirstd(["image", "label"], allow_missing_keys=True),
    ])
    for item in items:
        sample = load(item)
        shape = tuple(sample["image"].shape[1:])
        if "label" in item:
            assert tuple(sample["label"].shape[1:]) == shape
            assert set(np.unique(sample["label"].numpy())) <= {0, 1, 2, 255}
        for box in item.get("boxes", []):
            assert all(0 <= box[d] < box[d + len(shape)] <= shape[d] for d in range(len(shape)))
        for point in item.get("points", []):
            assert all(0 <= point[d] < shape[d] for d in range(len(shape)))
