"""Image readers for MONAI's ``LoadImage`` / ``LoadImaged``: OME-NGFF zarr crops, and dispatch by file suffix.

**Zarr selectors.** A datalist names a 2D slice (or a 3D crop) of an OpenOrganelle / CellMap zarr container with a
path followed by ``?`` and ``key=value`` pairs joined by ``&``::

    cell_00.zarr?crop=crop3&layer=em&axis=z&index=12      # EM of crop 3, z-slice 12 of the crop
    cell_00.zarr?crop=crop3&layer=label&axis=z&index=12   # its labels, mapped to class ids
    cell_00.zarr?crop=crop3&layer=em                      # the whole 3D crop
    image.zarr/volume?level=s1&axis=0&index=5             # any array or multiscale group ("plain" mode)

Keys (crop mode, when ``crop`` is given; the path is then the container itself):

- ``crop``: the label crop, ``crop3`` meaning ``<crop_root>/crop3/<crop_array>``
  (``recon-1/labels/groundtruth/crop3/all``), or a full group path inside the container.
- ``layer``: ``em`` (the EM region under the crop) or ``label`` (the crop's labels). Required.
- ``level``: the EM level (``s0`` by default); the label level is the one whose scale equals it.
- ``em``: the EM multiscale group (default ``recon-1/em/fibsem-uint8``).
- ``axis`` (``z``/``y``/``x`` or ``0``/``1``/``2``) and ``index`` (relative to the crop): cut one slice; both or
  neither.

EM and labels are aligned from the OME-NGFF 0.4 ``multiscales`` metadata (per level ``scale`` and ``translation``,
translations are pixel centres): the EM start index is ``(t_label - t_em) / scale_em`` per axis, which must be an
integer. In plain mode (no ``crop``) the path continues inside the container to an array or a multiscale group
(``level`` picks the dataset, default the first), ``layer=label`` maps ids through the table, and ``axis`` /
``index`` slice as above.

**Labels.** ``layer=label`` maps COSEM ids through a look-up table (default: the CNNectome merge of
:mod:`dsp_monai.data.label_tables`, restricted to ``class_names``). Ids of classes the crop does not list as
annotated (attribute ``cellmap.annotation.class_names`` on the crop group), 0 and 255 become the ignore value 255.

**Array order.** Arrays come back in storage order: zarr ``(z, y, x)`` (a z-slice is ``(y, x)``); PNG / JPEG / BMP
``(row, column)``; TIFF, NRRD, MHA through ITK in numpy order ``(z, y, x)`` / ``(row, column)``; NIfTI in nibabel's
voxel order ``(i, j, k)``. Boxes and points in a datalist use the same order.

**N5.** zarr 3 cannot read N5; an ``.n5`` path raises an error explaining how to convert it to zarr.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode

import numpy as np
from monai.data import ITKReader, NibabelReader, PILReader
from monai.data.image_reader import ImageReader
from monai.utils import ensure_tuple

from dsp_monai.data.datalist import split_selector
from dsp_monai.data.label_tables import (
    DEFAULT_CLASS_NAMES,
    MERGED_GROUPS,
    apply_lut,
    build_lut,
    ids_from_names,
)

ZARR_SUFFIXES = (".zarr", ".n5")
SELECTOR_KEYS = ("crop", "layer", "level", "em", "axis", "index")
LAYERS = ("em", "label")
DEFAULT_EM_GROUP = "recon-1/em/fibsem-uint8"
DEFAULT_CROP_ROOT = "recon-1/labels/groundtruth"
DEFAULT_CROP_ARRAY = "all"
_SCALE_RTOL = 1e-6
_ALIGN_TOL = 1e-3


@dataclass(frozen=True)
class ZarrSelector:
    """A parsed zarr path: the container, the path inside it, and the selector keys (see the module docstring)."""

    store: str
    inner: str = ""
    crop: str | None = None
    layer: str | None = None
    level: str | None = None
    em: str | None = None
    axis: str | None = None
    index: int | None = None


def _container_split(file_part: str) -> tuple[str, str] | None:
    """``/a/b.zarr/c/d`` -> (``/a/b.zarr``, ``c/d``); ``None`` when no component ends in a zarr suffix."""
    parts = file_part.replace("\\", "/").split("/")
    for position, part in enumerate(parts):
        if part.lower().endswith(ZARR_SUFFIXES):
            return "/".join(parts[: position + 1]), "/".join(p for p in parts[position + 1 :] if p)
    return None


def is_zarr_path(path: str | os.PathLike) -> bool:
    """Whether ``path`` (before any ``?``) lies in a ``.zarr`` or ``.n5`` container."""
    file_part, _ = split_selector(os.fspath(path))
    return _container_split(file_part) is not None


def parse_zarr_path(path: str | os.PathLike) -> ZarrSelector:
    """Parse ``container.zarr[/inner/path][?key=value&...]``.

    Args:
        path: the path with its optional selector.

    Returns:
        The parsed :class:`ZarrSelector`.

    Raises:
        ValueError: no ``.zarr`` / ``.n5`` component, an unknown or repeated key, a bad ``layer`` or ``index``,
            ``axis`` without ``index`` (or the reverse), or ``crop`` together with a path inside the container.
    """
    text = os.fspath(path)
    file_part, query = split_selector(text)
    split = _container_split(file_part)
    if split is None:
        raise ValueError(f"{text!r}: expected a path into a .zarr or .n5 container.")
    store, inner = split
    pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
    options: dict[str, str] = {}
    for key, value in pairs:
        if key not in SELECTOR_KEYS:
            raise ValueError(f"{text!r}: unknown selector key {key!r}; known keys are {list(SELECTOR_KEYS)}.")
        if key in options:
            raise ValueError(f"{text!r}: selector key {key!r} is given twice.")
        options[key] = value
    layer = options.get("layer")
    if layer is not None and layer not in LAYERS:
        raise ValueError(f"{text!r}: layer must be one of {list(LAYERS)}, got {layer!r}.")
    if ("axis" in options) != ("index" in options):
        raise ValueError(f"{text!r}: give both 'axis' and 'index' to cut a slice, or neither for the whole volume.")
    index = None
    if "index" in options:
        try:
            index = int(options["index"])
        except ValueError:
            raise ValueError(f"{text!r}: index must be an integer, got {options['index']!r}.") from None
    if "crop" in options:
        if inner:
            raise ValueError(
                f"{text!r}: with 'crop' the path must end at the container ({store!r}); "
                "name the EM group with 'em=' instead."
            )
        if layer is None:
            raise ValueError(f"{text!r}: crop selectors need 'layer=em' or 'layer=label'.")
    elif "em" in options:
        raise ValueError(f"{text!r}: 'em' only applies together with 'crop'.")
    return ZarrSelector(
        store=store,
        inner=inner,
        crop=options.get("crop"),
        layer=layer,
        level=options.get("level"),
        em=options.get("em"),
        axis=options.get("axis"),
        index=index,
    )


def format_zarr_path(
    store: str,
    inner: str = "",
    crop: str | None = None,
    layer: str | None = None,
    level: str | None = None,
    em: str | None = None,
    axis: str | int | None = None,
    index: int | None = None,
) -> str:
    """Write a zarr path with selector; the inverse of :func:`parse_zarr_path` (``None`` keys are left out).

    Example:
        >>> format_zarr_path("cell_00.zarr", crop="crop3", layer="label", axis="z", index=12)
        'cell_00.zarr?crop=crop3&layer=label&axis=z&index=12'
    """
    path = f"{store.rstrip('/')}/{inner.strip('/')}" if inner else store
    values = {"crop": crop, "layer": layer, "level": level, "em": em, "axis": axis, "index": index}
    query = urlencode([(k, str(v)) for k, v in values.items() if v is not None], safe="/")
    return f"{path}?{query}" if query else path


@dataclass(frozen=True)
class MultiscaleLevel:
    """One dataset of a multiscale group: its path, scale and translation (physical units, array axis order)."""

    path: str
    scale: np.ndarray
    translation: np.ndarray


@dataclass(frozen=True)
class Multiscale:
    """The parsed ``multiscales`` attribute of a group."""

    group: str
    axes: tuple[str, ...]
    units: tuple[str | None, ...]
    levels: tuple[MultiscaleLevel, ...]

    def level(self, name: str | None) -> MultiscaleLevel:
        """The level called ``name`` (``None``: the first, finest one)."""
        if name is None:
            return self.levels[0]
        for level in self.levels:
            if level.path == name:
                return level
        raise ValueError(f"{self.group}: no level {name!r}; levels are {[lvl.path for lvl in self.levels]}.")


def _vector(values: Any, ndim: int, what: str, where: str) -> np.ndarray:
    vector = np.asarray(values, dtype=float)
    if vector.shape != (ndim,):
        raise ValueError(f"{where}: {what} {values!r} must have {ndim} entries, one per axis.")
    return vector


def _transforms_of(entry: Mapping[str, Any], ndim: int, where: str) -> tuple[np.ndarray, np.ndarray]:
    """Compose an entry's ``coordinateTransformations`` (applied in order) into one scale and translation."""
    scale, translation = np.ones(ndim), np.zeros(ndim)
    if "coordinateTransformations" in entry:
        for transform in entry["coordinateTransformations"]:
            kind = transform.get("type")
            if kind == "scale":
                step = _vector(transform["scale"], ndim, "scale", where)
                scale, translation = scale * step, translation * step
            elif kind == "translation":
                translation = translation + _vector(transform["translation"], ndim, "translation", where)
            elif kind != "identity":
                raise ValueError(f"{where}: unsupported coordinate transformation {kind!r} (OME-NGFF 0.4 has "
                                 "scale and translation).")
    elif "transform" in entry:
        transform = entry["transform"]
        scale = _vector(transform.get("scale", scale), ndim, "scale", where)
        translation = _vector(transform.get("translate", translation), ndim, "translation", where)
    return scale, translation


def read_multiscales(group: Any, name: str = "") -> Multiscale:
    """Parse OME-NGFF 0.4 ``multiscales`` attributes (or the older COSEM ``transform`` form) of a zarr group.

    Args:
        group: an open ``zarr.Group``.
        name: how to call the group in error messages.

    Returns:
        The axes, units and per-level scale and translation (dataset transformations composed with any
        multiscale-wide ones).

    Raises:
        ValueError: the attribute is missing or malformed.
    """
    where = name or str(getattr(group, "path", "group"))
    attrs = dict(group.attrs)
    if "multiscales" not in attrs or not attrs["multiscales"]:
        raise ValueError(
            f"{where}: no 'multiscales' attribute (OME-NGFF 0.4); cannot place it in physical space. "
            f"Attributes present: {sorted(attrs)}."
        )
    spec = attrs["multiscales"][0]
    datasets = spec.get("datasets") or []
    if not datasets:
        raise ValueError(f"{where}: 'multiscales' lists no datasets.")
    raw_axes = spec.get("axes")
    if raw_axes is None:
        ndim = len(group[datasets[0]["path"]].shape)
        raw_axes = ["z", "y", "x"][-ndim:] if ndim <= 3 else [f"dim_{i}" for i in range(ndim)]
    axes = tuple(a["name"] if isinstance(a, Mapping) else str(a) for a in raw_axes)
    units = tuple(a.get("unit") if isinstance(a, Mapping) else None for a in raw_axes)
    global_scale, global_translation = _transforms_of(spec, len(axes), where)
    levels = []
    for entry in datasets:
        scale, translation = _transforms_of(entry, len(axes), f"{where}/{entry['path']}")
        levels.append(
            MultiscaleLevel(entry["path"], scale * global_scale, translation * global_scale + global_translation)
        )
    return Multiscale(where, axes, units, tuple(levels))


def _open_container(store: str) -> Any:
    import zarr

    if store.lower().endswith(".n5"):
        raise ValueError(
            f"{store}: N5 containers cannot be read with zarr {zarr.__version__} (zarr 3 dropped N5 support). "
            "Convert it to zarr once, for example with tensorstore, or in a separate environment with "
            "`pip install 'zarr<3'`: python -c \"import zarr; zarr.copy_store(zarr.N5FSStore('IN.n5'), "
            "zarr.DirectoryStore('OUT.zarr'))\" (then add OME-NGFF 'multiscales' attributes if the N5 only has "
            "COSEM 'transform' ones; the reader accepts both)."
        )
    if not os.path.isdir(store):
        raise FileNotFoundError(f"zarr container not found: {store}")
    return zarr.open(store, mode="r")


def _node(root: Any, path: str, store: str) -> Any:
    if not path:
        return root
    if hasattr(root, "shape"):
        raise FileNotFoundError(f"{store} is a single array; there is nothing at {path!r} inside it.")
    try:
        return root[path]
    except KeyError:
        raise FileNotFoundError(f"{store}: nothing at {path!r} inside the container.") from None


def _axis_number(axis: str | None, axes: Sequence[str], where: str) -> int | None:
    if axis is None:
        return None
    if axis in axes:
        return list(axes).index(axis)
    try:
        number = int(axis)
    except ValueError:
        raise ValueError(f"{where}: axis {axis!r} is neither an axis name {list(axes)} nor a number.") from None
    if not 0 <= number < len(axes):
        raise ValueError(f"{where}: axis {number} is outside 0..{len(axes) - 1}.")
    return number


def _annotated_ids(root: Any, label_path: str) -> list[int] | None:
    """Ids listed as annotated by ``cellmap.annotation.class_names`` on the label group or its parent crop."""
    candidates = [label_path, label_path.rpartition("/")[0]]
    for path in candidates:
        if not path:
            continue
        try:
            attrs = dict(root[path].attrs)
        except KeyError:
            continue
        names = attrs.get("cellmap", {}).get("annotation", {}).get("class_names")
        if names is None:
            continue
        ids = ids_from_names(names)
        for name in names:
            if name in MERGED_GROUPS:
                ids.extend(MERGED_GROUPS[name])
        if not ids:
            warnings.warn(
                f"{path}: none of the annotated class names {names} is a COSEM name; treating every id as annotated."
            )
            return None
        return sorted(set(ids))
    return None


@dataclass
class _ZarrImage:
    """What :meth:`OMEZarrReader.read` returns for one path: the array and its metadata."""

    array: np.ndarray
    meta: dict


def _meta(array: np.ndarray, scale: np.ndarray, translation: np.ndarray, start: np.ndarray, kept: list[int],
          store: str, array_path: str, axis: int | None, index: int | None, axes: Sequence[str]) -> dict:
    ndim = len(kept)
    affine = np.eye(ndim + 1)
    for row, axis_number in enumerate(kept):
        affine[row, row] = scale[axis_number]
        affine[row, ndim] = translation[axis_number] + start[axis_number] * scale[axis_number]
    return {
        "spatial_shape": np.asarray(array.shape),
        "original_channel_dim": float("nan"),
        "affine": affine,
        "original_affine": affine.copy(),
        "zarr_store": store,
        "zarr_array": array_path,
        "zarr_start": np.asarray(start),
        "axes": ",".join(axes[a] for a in kept),
        "slice_axis": -1 if axis is None else axis,
        "slice_index": -1 if index is None else index,
    }


class OMEZarrReader(ImageReader):
    """MONAI reader for OME-NGFF zarr arrays and OpenOrganelle / CellMap crops (EM aligned to labels).

    Paths carry a selector after ``?`` (module docstring): ``cell.zarr?crop=crop3&layer=label&axis=z&index=12``.

    Args:
        class_names: merged classes the labels map to (index = class id); names of
            :data:`~dsp_monai.data.label_tables.MERGED_GROUPS`. Default: all 17 merged classes. The table is
            built when a label is first read, so other names only fail for zarr labels.
        lut: a ready look-up table (array, ``lut[id]`` = class index, 255 = ignore, -1 = error) used instead of
            ``class_names``.
        em_group: default EM multiscale group inside a container.
        crop_root: where crops live; ``crop=crop3`` means ``<crop_root>/crop3/<crop_array>``.
        crop_array: the dense label multiscale group inside a crop.
        level: default EM level in crop mode.

    Example:
        >>> from monai.transforms import LoadImaged
        >>> load = LoadImaged(["image", "label"], reader=OMEZarrReader(class_names=["mito", "cytosol"]))
        >>> item = {"image": "c.zarr?crop=crop1&layer=em&axis=z&index=0",
        ...         "label": "c.zarr?crop=crop1&layer=label&axis=z&index=0"}  # doctest: +SKIP
    """

    def __init__(
        self,
        class_names: Sequence[str] | None = None,
        lut: Sequence[int] | np.ndarray | None = None,
        em_group: str = DEFAULT_EM_GROUP,
        crop_root: str = DEFAULT_CROP_ROOT,
        crop_array: str = DEFAULT_CROP_ARRAY,
        level: str = "s0",
    ):
        super().__init__()
        if lut is not None and class_names is not None:
            raise ValueError("give class_names or lut, not both: the table already fixes the classes.")
        self.class_names = None if class_names is None else list(class_names)
        self._lut = None if lut is None else np.asarray(lut, dtype=np.int16)
        self.em_group = em_group
        self.crop_root = crop_root
        self.crop_array = crop_array
        self.level = level

    @property
    def lut(self) -> np.ndarray:
        """The look-up table, built from ``class_names`` when a label is first read.

        Raises:
            ValueError: a class name is not a merged class of the group table (pass ``lut=`` instead).
        """
        if self._lut is None:
            self._lut = build_lut(DEFAULT_CLASS_NAMES if self.class_names is None else self.class_names)
        return self._lut

    def verify_suffix(self, filename: Sequence[str | os.PathLike] | str | os.PathLike) -> bool:
        """Whether every name lies in a ``.zarr`` or ``.n5`` container (N5 then fails in :meth:`read`)."""
        return all(is_zarr_path(name) for name in ensure_tuple(filename))

    def read(self, data: Sequence[str | os.PathLike] | str | os.PathLike, **kwargs) -> Any:
        """Load the selected arrays (one object per path; several paths become channels in :meth:`get_data`).

        Raises:
            ValueError: a malformed selector, misaligned metadata, a slice outside the crop, label ids outside
                the table.
            FileNotFoundError: the container or a group inside it does not exist.
        """
        if kwargs:
            raise ValueError(f"OMEZarrReader.read takes no keyword arguments, got {sorted(kwargs)}.")
        images = [self._load(os.fspath(name)) for name in ensure_tuple(data)]
        return images if len(images) > 1 else images[0]

    def get_data(self, img: Any) -> tuple[np.ndarray, dict]:
        """Array and metadata (``affine`` in physical units of the returned axes, ``spatial_shape``, origin)."""
        images = ensure_tuple(img)
        if len(images) == 1:
            return images[0].array, dict(images[0].meta)
        shapes = {image.array.shape for image in images}
        if len(shapes) != 1:
            raise ValueError(f"cannot stack zarr selections of different shapes {sorted(shapes)} as channels.")
        meta = dict(images[0].meta)
        meta["original_channel_dim"] = 0
        return np.stack([image.array for image in images]), meta

    def _load(self, path: str) -> _ZarrImage:
        selector = parse_zarr_path(path)
        root = _open_container(selector.store)
        if selector.crop is not None:
            return self._load_crop(root, selector, path)
        return self._load_plain(root, selector, path)

    def _crop_path(self, crop: str) -> str:
        return crop.strip("/") if "/" in crop else f"{self.crop_root}/{crop}/{self.crop_array}"

    def _load_crop(self, root: Any, selector: ZarrSelector, path: str) -> _ZarrImage:
        em_path = (selector.em or self.em_group).strip("/")
        label_path = self._crop_path(selector.crop)
        em = read_multiscales(_node(root, em_path, selector.store), f"{selector.store}/{em_path}")
        labels = read_multiscales(_node(root, label_path, selector.store), f"{selector.store}/{label_path}")
        em_level = em.level(selector.level or self.level)
        if len(em.axes) != len(labels.axes) or em.axes != labels.axes:
            raise ValueError(f"{path}: EM axes {list(em.axes)} differ from label axes {list(labels.axes)}.")
        if any(a is not None and b is not None and a != b for a, b in zip(em.units, labels.units)):
            raise ValueError(f"{path}: EM units {list(em.units)} differ from label units {list(labels.units)}.")
        matching = [lvl for lvl in labels.levels if np.allclose(lvl.scale, em_level.scale, rtol=_SCALE_RTOL)]
        if not matching:
            available = {lvl.path: lvl.scale.tolist() for lvl in labels.levels}
            raise ValueError(
                f"{path}: the crop has no label level at the EM level's scale {em_level.scale.tolist()} "
                f"({em.group}/{em_level.path}); label levels: {available}. Choose another EM level with 'level='."
            )
        label_level = matching[0]
        exact = (label_level.translation - em_level.translation) / em_level.scale
        start = np.rint(exact).astype(int)
        if np.any(np.abs(exact - start) > _ALIGN_TOL):
            raise ValueError(
                f"{path}: the crop does not sit on the EM grid: (t_label - t_em) / scale_em = {exact.tolist()} is "
                f"not integral (label translation {label_level.translation.tolist()}, EM translation "
                f"{em_level.translation.tolist()}, EM scale {em_level.scale.tolist()})."
            )
        em_array = root[f"{em_path}/{em_level.path}"]
        label_array = root[f"{label_path}/{label_level.path}"]
        stop = start + np.asarray(label_array.shape)
        if np.any(start < 0) or np.any(stop > np.asarray(em_array.shape)):
            raise ValueError(
                f"{path}: the crop covers EM indices {start.tolist()}..{stop.tolist()} (exclusive) but the EM "
                f"array {em.group}/{em_level.path} has shape {list(em_array.shape)}."
            )
        axis = _axis_number(selector.axis, em.axes, path)
        region = self._region(np.asarray(label_array.shape), axis, selector.index, path)
        region_start = np.asarray([r if isinstance(r, int) else r.start for r in region])
        if selector.layer == "label":
            array = apply_lut(np.asarray(label_array[region]), self.lut, _annotated_ids(root, label_path), source=path)
            level, array_path, origin = label_level, f"{label_path}/{label_level.path}", region_start
        else:
            origin = start + region_start
            em_region = tuple(
                int(o) if isinstance(r, int) else slice(int(o), int(o) + r.stop - r.start)
                for r, o in zip(region, origin)
            )
            array = np.asarray(em_array[em_region])
            level, array_path = em_level, f"{em_path}/{em_level.path}"
        kept = [a for a in range(len(em.axes)) if a != axis]
        meta = _meta(array, level.scale, level.translation, origin, kept, selector.store, array_path, axis,
                     selector.index, em.axes)
        return _ZarrImage(array, meta)

    def _load_plain(self, root: Any, selector: ZarrSelector, path: str) -> _ZarrImage:
        node = _node(root, selector.inner, selector.store)
        if hasattr(node, "shape"):
            array_node, array_path = node, selector.inner
            ndim = len(node.shape)
            scale, translation = np.ones(ndim), np.zeros(ndim)
            names = tuple("zyx"[-ndim:]) if ndim <= 3 else tuple(f"dim_{i}" for i in range(ndim))
            parent_path, _, name = selector.inner.rpartition("/")
            parent = _node(root, parent_path, selector.store) if selector.inner else None
            if parent is not None and "multiscales" in parent.attrs:
                multiscale = read_multiscales(parent, f"{selector.store}/{parent_path}")
                for level in multiscale.levels:
                    if level.path == name:
                        scale, translation, names = level.scale, level.translation, multiscale.axes
            label_group = parent_path
        else:
            multiscale = read_multiscales(node, f"{selector.store}/{selector.inner}")
            level = multiscale.level(selector.level)
            array_path = f"{selector.inner}/{level.path}".strip("/")
            array_node, scale, translation, names = root[array_path], level.scale, level.translation, multiscale.axes
            label_group = selector.inner
        axis = _axis_number(selector.axis, names, path)
        region = self._region(np.asarray(array_node.shape), axis, selector.index, path)
        array = np.asarray(array_node[region])
        if selector.layer == "label":
            array = apply_lut(array, self.lut, _annotated_ids(root, label_group), source=path)
        kept = [a for a in range(len(names)) if a != axis]
        start = np.asarray([r if isinstance(r, int) else r.start for r in region])
        meta = _meta(array, scale, translation, start, kept, selector.store, array_path, axis, selector.index, names)
        return _ZarrImage(array, meta)

    @staticmethod
    def _region(shape: np.ndarray, axis: int | None, index: int | None, path: str) -> tuple:
        region: list = [slice(0, int(n)) for n in shape]
        if axis is not None:
            if not 0 <= index < shape[axis]:
                raise ValueError(f"{path}: index {index} is outside the volume's {int(shape[axis])} slices along "
                                 f"axis {axis}.")
            region[axis] = int(index)
        return tuple(region)


SUFFIX_READERS: dict[str, str] = {
    ".nii": "nibabel",
    ".nii.gz": "nibabel",
    ".png": "pil",
    ".jpg": "pil",
    ".jpeg": "pil",
    ".bmp": "pil",
    ".tif": "itk",
    ".tiff": "itk",
    ".nrrd": "itk",
    ".nhdr": "itk",
    ".mha": "itk",
    ".mhd": "itk",
}
"""File suffix -> MONAI reader kind (zarr containers are recognised by a ``.zarr`` / ``.n5`` path component)."""


def reader_kind(path: str | os.PathLike) -> str:
    """``"zarr"``, ``"nibabel"``, ``"pil"`` or ``"itk"`` for ``path``.

    Raises:
        ValueError: the suffix is not supported; the message lists the supported ones.
    """
    if is_zarr_path(path):
        return "zarr"
    name = os.fspath(path).lower()
    for suffix in sorted(SUFFIX_READERS, key=len, reverse=True):
        if name.endswith(suffix):
            return SUFFIX_READERS[suffix]
    raise ValueError(
        f"{os.fspath(path)!r}: unsupported file type; supported are {sorted(SUFFIX_READERS)} and paths into "
        ".zarr containers."
    )


def reader_for_path(
    path: str | os.PathLike, class_names: Sequence[str] | None = None, lut: Sequence[int] | None = None
) -> ImageReader:
    """A MONAI reader for ``path``'s format, configured for this project's array order (module docstring).

    Args:
        path: the file (or zarr path with selector).
        class_names: passed to :class:`OMEZarrReader` for zarr paths.
        lut: passed to :class:`OMEZarrReader` for zarr paths.

    Returns:
        :class:`OMEZarrReader`, ``NibabelReader()``, ``PILReader(reverse_indexing=False)`` or
        ``ITKReader(reverse_indexing=True)``.
    """
    kind = reader_kind(path)
    if kind == "zarr":
        return OMEZarrReader(class_names=class_names, lut=lut)
    return _MONAI_READERS[kind]()


_MONAI_READERS = {
    "nibabel": NibabelReader,
    "pil": lambda: PILReader(reverse_indexing=False),
    "itk": lambda: ITKReader(reverse_indexing=True),
}


class MultiFormatReader(ImageReader):
    """One reader for every supported format: picks zarr, nibabel, PIL or ITK by each path's suffix.

    Use it when a datalist mixes formats: ``LoadImaged(["image", "label"], reader=MultiFormatReader(...))``.

    Args:
        class_names: passed to the zarr reader (label mapping of OpenOrganelle crops).
        lut: passed to the zarr reader instead of ``class_names``.
        zarr_options: further :class:`OMEZarrReader` arguments (``em_group``, ``crop_root``, ...).
    """

    def __init__(
        self,
        class_names: Sequence[str] | None = None,
        lut: Sequence[int] | None = None,
        **zarr_options: Any,
    ):
        super().__init__()
        self._readers: dict[str, ImageReader] = {"zarr": OMEZarrReader(class_names=class_names, lut=lut,
                                                                       **zarr_options)}

    def _reader(self, kind: str) -> ImageReader:
        if kind not in self._readers:
            self._readers[kind] = _MONAI_READERS[kind]()
        return self._readers[kind]

    def verify_suffix(self, filename: Sequence[str | os.PathLike] | str | os.PathLike) -> bool:
        """Whether every name has a supported suffix."""
        try:
            return all(reader_kind(name) for name in ensure_tuple(filename))
        except ValueError:
            return False

    def read(self, data: Sequence[str | os.PathLike] | str | os.PathLike, **kwargs) -> Any:
        """Read with the reader of the files' format (all files of one call must share it)."""
        names = ensure_tuple(data)
        kinds = {reader_kind(name) for name in names}
        if len(kinds) != 1:
            raise ValueError(f"files of one image must share a format; got {sorted(kinds)} for {list(names)}.")
        reader = self._reader(kinds.pop())
        return reader, reader.read(data, **kwargs)

    def get_data(self, img: Any) -> tuple[np.ndarray, dict]:
        """Delegate to the reader that read ``img``."""
        reader, loaded = img
        return reader.get_data(loaded)


__all__ = [
    "Multiscale",
    "MultiscaleLevel",
    "MultiFormatReader",
    "OMEZarrReader",
    "SUFFIX_READERS",
    "ZarrSelector",
    "format_zarr_path",
    "is_zarr_path",
    "parse_zarr_path",
    "read_multiscales",
    "reader_for_path",
    "reader_kind",
]
