"""Small labelled datasets of other modalities than EM, built offline, as datalists with explicit sections.

Real images come only from files shipped *inside* pip packages (nothing is downloaded at run time); install them
with ``pip install --no-deps -r benchmarks/requirements-real-data.txt`` (benchmark-only, not a core dependency):

- ``nuclei``: the 2D fluorescence nuclei test image and its instance mask shipped with stardist
  (``stardist/data/images/img2d.tif``, ``mask2d.tif``, 512 x 512, from the DSB 2018 data), cut into 64 disjoint
  64 x 64 tiles; 2 classes (background, nucleus);
- ``brain``: axial slices of the MNI152 2009a T1 template with its grey- and white-matter probability maps shipped
  with nilearn (``nilearn/datasets/data/mni_icbm152_*``), downsampled 2x to 99 x 117; 4 classes (outside the head,
  other head tissue (skull, scalp, CSF), grey matter, white matter), each pixel labelled by the largest of the
  tissue probabilities. Slices are assigned to the parts in blocks of 5 neighbours, so no test slice has a
  training slice as its direct neighbour.

Synthetic variants (textured blobs on a noisy background, 64 x 64) that each isolate one property of the data:

- ``blobs_few``: 3 classes of medium blobs, no class dominant;
- ``blobs_dominant``: 3 classes, the background about 95% of the pixels;
- ``blobs_alltags``: 4 classes, every class in every image (image-level tags carry no information);
- ``blobs_many``: 3 classes, 25-40 small blobs per image (many boxes and points per image).

Every datalist has 40 training, 10 validation and 20 test items (``nuclei``: 14 test tiles), all with masks (the
experiment's ACR decides which training items keep theirs), 8-bit PNG images (the bundle's default
``intensity_range: [0, 255]`` is right for them) and 8-bit PNG label maps. They are written once under
``ROOT/<name>/datalist.json`` and reused.

    python benchmarks/real_datasets.py --root runs/no_harm/data            # builds every dataset, prints paths
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

REPO = Path(__file__).resolve().parent.parent
DEFAULT_ROOT = REPO / "runs" / "no_harm" / "data"
PARTS = {"training": 40, "validation": 10, "test": 20}
logger = logging.getLogger(__name__)


def package_file(package: str, *relative: str) -> Path:
    """A data file shipped inside an installed package, located without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            f"the {package!r} package is not installed; install the benchmark's data packages with "
            "`pip install --no-deps -r benchmarks/requirements-real-data.txt`"
        )
    path = Path(list(spec.submodule_search_locations)[0], *relative)
    if not path.exists():
        raise FileNotFoundError(f"{path}: not shipped by this version of {package!r}")
    return path


def _write(folder: Path, images, labels, class_names, description, parts) -> Path:
    from dsp_monai.data.datalist import save_datalist

    sections = {}
    (folder / "images").mkdir(parents=True, exist_ok=True)
    for part, indices in parts.items():
        items = []
        for index in indices:
            name = f"{part}_{index:03d}"
            Image.fromarray(images[index].astype(np.uint8)).save(folder / "images" / f"{name}.png")
            Image.fromarray(labels[index].astype(np.uint8)).save(folder / "images" / f"{name}_label.png")
            items.append({"image": f"images/{name}.png", "label": f"images/{name}_label.png", "id": name})
        sections[part] = items
    return Path(save_datalist(folder / "datalist.json", class_names, sections, description=description))


def _split(count: int, seed: int, block: int = 1) -> dict:
    """Indices of the parts: items in blocks of ``block`` neighbours, blocks shuffled and dealt out by PARTS."""
    blocks = [list(range(start, min(start + block, count))) for start in range(0, count, block)]
    order = np.random.default_rng(seed).permutation(len(blocks))
    flat = [i for b in order for i in blocks[b]]
    parts, start = {}, 0
    for part, size in PARTS.items():
        parts[part] = sorted(flat[start:start + size])
        start += size
    return parts


def build_nuclei(folder: Path) -> Path:
    import tifffile

    image = tifffile.imread(package_file("stardist", "data", "images", "img2d.tif")).astype(np.float64)
    mask = tifffile.imread(package_file("stardist", "data", "images", "mask2d.tif"))
    image = np.clip(255.0 * image / np.percentile(image, 99.9), 0, 255)
    tile = 64
    images, labels = [], []
    for r in range(0, image.shape[0], tile):
        for c in range(0, image.shape[1], tile):
            images.append(image[r:r + tile, c:c + tile])
            labels.append((mask[r:r + tile, c:c + tile] > 0).astype(np.uint8))
    return _write(folder, images, labels, ["background", "nucleus"],
                  "stardist's 2D nuclei test image (DSB 2018), 64 disjoint 64x64 tiles", _split(len(images), 0))


def build_brain(folder: Path) -> Path:
    import nibabel as nib

    def volume(name):
        path = package_file("nilearn", "datasets", "data", f"mni_icbm152_{name}_tal_nlin_sym_09a_converted.nii.gz")
        return np.asarray(nib.load(str(path)).dataobj).astype(np.float64) / 255.0

    t1, gm, wm = volume("t1"), volume("gm"), volume("wm")
    head = ndimage.binary_fill_holes(ndimage.binary_closing(t1 > 0.08, iterations=2), structure=np.ones((3, 3, 1)))
    other = np.clip(1.0 - gm - wm, 0.0, 1.0)
    label = np.where(head, 1 + np.argmax(np.stack([other, gm, wm]), axis=0), 0).astype(np.uint8)
    slices = list(range(25, 165, 2))  # 70 axial slices holding brain
    images = [np.clip(255.0 * t1[::2, ::2, z], 0, 255) for z in slices]
    labels = [label[::2, ::2, z] for z in slices]
    return _write(folder, images, labels, ["outside", "head_other", "grey_matter", "white_matter"],
                  "MNI152 2009a T1 template (nilearn), axial slices downsampled 2x, tissue labels from the GM/WM maps",
                  _split(len(images), 0, block=5))


def _blobs(rng, size, classes, count, radius, all_classes=False):
    """One textured-blob image and its labels: ``count`` ellipses of the classes 1..classes-1 on background 0."""
    label = np.zeros((size, size), np.uint8)
    rows, cols = np.mgrid[0:size, 0:size]
    order = list(range(1, classes)) if all_classes else []
    for index in range(count):
        cls = order[index] if index < len(order) else int(rng.integers(1, classes))
        r, c = rng.uniform(0, size, 2)
        a, b = rng.uniform(*radius, 2)
        angle = rng.uniform(0, np.pi)
        dr, dc = rows - r, cols - c
        u = dr * np.cos(angle) + dc * np.sin(angle)
        v = -dr * np.sin(angle) + dc * np.cos(angle)
        label[(u / a) ** 2 + (v / b) ** 2 <= 1.0] = cls
    means = np.linspace(60, 200, classes)
    texture = ndimage.gaussian_filter(rng.normal(0, 1, (size, size)), 2.0)
    image = means[label] + 25.0 * texture * (1 + (label % 2)) + rng.normal(0, 18, (size, size))
    return np.clip(ndimage.gaussian_filter(image, 0.8), 0, 255), label


SYNTHETIC = {
    "blobs_few": dict(classes=3, count=(4, 7), radius=(5, 12)),
    "blobs_dominant": dict(classes=3, count=(1, 3), radius=(3, 6)),
    "blobs_alltags": dict(classes=4, count=(4, 7), radius=(5, 10), all_classes=True),
    "blobs_many": dict(classes=3, count=(25, 40), radius=(1.5, 3.5)),
}


def build_synthetic(folder: Path, name: str) -> Path:
    spec = SYNTHETIC[name]
    rng = np.random.default_rng(sum(map(ord, name)))
    images, labels = [], []
    total = sum(PARTS.values())
    while len(images) < total:
        count = int(rng.integers(spec["count"][0], spec["count"][1] + 1))
        image, label = _blobs(rng, 64, spec["classes"], count, spec["radius"], spec.get("all_classes", False))
        if spec.get("all_classes") and len(np.unique(label)) < spec["classes"]:
            continue
        images.append(image)
        labels.append(label)
    names = ["background", *[f"class_{c}" for c in range(1, spec["classes"])]]
    return _write(folder, images, labels, names, f"synthetic variant {name}: {spec}", _split(total, 0))


BUILDERS = {"nuclei": build_nuclei, "brain": build_brain,
            **{name: (lambda folder, name=name: build_synthetic(folder, name)) for name in SYNTHETIC}}


def ensure_dataset(name: str, root: Path | str = DEFAULT_ROOT) -> Path:
    """The datalist of dataset ``name`` under ``root``, built on first use."""
    if name not in BUILDERS:
        raise ValueError(f"unknown dataset {name!r}; known: {sorted(BUILDERS)}")
    folder = Path(root) / name
    path = folder / "datalist.json"
    if not path.exists():
        logger.info("building dataset %s in %s", name, folder)
        path = BUILDERS[name](folder)
    return path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default=str(DEFAULT_ROOT))
    parser.add_argument("--datasets", nargs="+", default=list(BUILDERS))
    args = parser.parse_args(argv)
    for name in args.datasets:
        print(name, ensure_dataset(name, args.root))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
