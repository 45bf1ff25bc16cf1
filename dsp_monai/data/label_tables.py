"""Label look-up tables: the 37 COSEM organelle ids of OpenOrganelle and their merge into semantic classes.

OpenOrganelle / CellMap crops store a dense label map (``crop<N>/all``) whose values are the COSEM ids below
(0 carries no class, 255 means "unknown"). The DSP paper trains on merged classes following the CNNectome
hierarchy (saalfeldlab/CNNectome, ``CNNectome/utils/hierarchy.py``). The merge is shipped here as data, not code:

=====================  =================================  ==============================
merged class           COSEM ids                          CNNectome name
=====================  =================================  ==============================
ecs                    1                                  ecs
plasma_membrane        2                                  plasma_membrane
mito                   3, 4, 5                            mito
golgi                  6, 7                               golgi
vesicle                8, 9                               vesicle
mvb                    10, 11                             MVB
lysosome               12, 13                             lysosome
lipid_droplet          14, 15                             LD
er                     16-23                              er
nucleus                20-29, 37                          nucleus
nuclear_envelope       20-23                              NE
microtubule            30, 36                             microtubules
centrosome             31, 32, 33                         centrosome
distal_appendage       32                                 distal_app
subdistal_appendage    33                                 subdistal_app
ribosome               34                                 ribosomes
cytosol                35                                 (cytosol, not in the hierarchy)
=====================  =================================  ==============================

The groups overlap (the nuclear envelope 20-23 sits in ``er``, ``nucleus`` and ``nuclear_envelope``; the
appendages 32-33 in ``centrosome`` too), but a label map gives every voxel one class. **Priority rule:** among the
selected classes whose group contains an id, the one with the smallest group wins (the most specific class); ties
go to the class listed first. With all 17 classes the nuclear envelope therefore maps to ``nuclear_envelope``; with
a class list that lacks ``nuclear_envelope`` it maps to ``er`` (8 ids) before ``nucleus`` (11 ids). Pass an
explicit ``priority`` to :func:`build_lut` to decide otherwise.

COSEM ids that belong to no selected class (for example Golgi when the class list is the 11 HeLa-2 classes), the
id 0 and the unknown value 255 map to the ignore value 255: they are never background. Ids above 37 are not in
the table; reading them is an error unless a custom table covers them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from dsp_monai.annotations.vocabulary import IGNORE_VALUE

IGNORE_INDEX = IGNORE_VALUE
"""The label value that takes part in no loss or metric (unknown, unannotated, padding); the project's one ignore
value, :data:`dsp_monai.annotations.vocabulary.IGNORE_VALUE`."""

UNDEFINED = -1
"""Marks look-up-table entries for ids the table does not know; reading such an id raises."""

COSEM_LABELS: dict[int, tuple[str, str]] = {
    1: ("ecs", "extracellular space"),
    2: ("pm", "plasma membrane"),
    3: ("mito_mem", "mitochondrial membrane"),
    4: ("mito_lum", "mitochondrial lumen"),
    5: ("mito_ribo", "mitochondrial DNA / ribosomes"),
    6: ("golgi_mem", "Golgi membrane"),
    7: ("golgi_lum", "Golgi lumen"),
    8: ("ves_mem", "vesicle membrane"),
    9: ("ves_lum", "vesicle lumen"),
    10: ("endo_mem", "multivesicular body membrane"),
    11: ("endo_lum", "multivesicular body lumen"),
    12: ("lyso_mem", "lysosome membrane"),
    13: ("lyso_lum", "lysosome lumen"),
    14: ("ld_mem", "lipid droplet membrane"),
    15: ("ld_lum", "lipid droplet lumen"),
    16: ("er_mem", "endoplasmic reticulum membrane"),
    17: ("er_lum", "endoplasmic reticulum lumen"),
    18: ("eres_mem", "ER exit site membrane"),
    19: ("eres_lum", "ER exit site lumen"),
    20: ("ne_mem", "nuclear envelope membrane"),
    21: ("ne_lum", "nuclear envelope lumen"),
    22: ("np_out", "nuclear pore out"),
    23: ("np_in", "nuclear pore in"),
    24: ("hchrom", "heterochromatin"),
    25: ("nhchrom", "nuclear heterochromatin"),
    26: ("echrom", "euchromatin"),
    27: ("nechrom", "nuclear euchromatin"),
    28: ("nucpl", "nucleoplasm"),
    29: ("nucleo", "nucleolus"),
    30: ("mt_out", "microtubules out"),
    31: ("cent", "centrosome"),
    32: ("cent_dapp", "distal appendages"),
    33: ("cent_sdapp", "subdistal appendages"),
    34: ("ribo", "ribosomes"),
    35: ("cyto", "cytosol"),
    36: ("mt_in", "microtubules in"),
    37: ("nuc", "nucleus (generic)"),
}
"""COSEM id -> (CellMap short name, description). Crop attributes list annotated classes by short name."""

COSEM_IDS_BY_NAME: dict[str, int] = {short: cosem_id for cosem_id, (short, _) in COSEM_LABELS.items()}

MERGED_GROUPS: dict[str, tuple[int, ...]] = {
    "ecs": (1,),
    "plasma_membrane": (2,),
    "mito": (3, 4, 5),
    "golgi": (6, 7),
    "vesicle": (8, 9),
    "mvb": (10, 11),
    "lysosome": (12, 13),
    "lipid_droplet": (14, 15),
    "er": (16, 17, 18, 19, 20, 21, 22, 23),
    "nucleus": (20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 37),
    "nuclear_envelope": (20, 21, 22, 23),
    "microtubule": (30, 36),
    "centrosome": (31, 32, 33),
    "distal_appendage": (32,),
    "subdistal_appendage": (33,),
    "ribosome": (34,),
    "cytosol": (35,),
}
"""Merged class -> COSEM ids, after the CNNectome hierarchy (see the module docstring)."""

DEFAULT_CLASS_NAMES: tuple[str, ...] = tuple(MERGED_GROUPS)
"""All 17 merged classes, in the order of :data:`MERGED_GROUPS` (index = class id)."""

HELA2_CLASS_NAMES: tuple[str, ...] = (
    "ecs",
    "plasma_membrane",
    "mito",
    "vesicle",
    "mvb",
    "lysosome",
    "er",
    "nucleus",
    "nuclear_envelope",
    "microtubule",
    "cytosol",
)
"""The 11 classes the paper uses for HeLa-2 (supplement Figure 2); also the synthetic dataset's classes."""


def build_lut(
    class_names: Sequence[str] = DEFAULT_CLASS_NAMES,
    groups: Mapping[str, Sequence[int]] = MERGED_GROUPS,
    priority: Sequence[str] | None = None,
    size: int = 256,
) -> np.ndarray:
    """Build the table that maps COSEM ids to class indices.

    Args:
        class_names: the classes to keep; class ``i`` of the output is ``class_names[i]``. Every name must be a
            key of ``groups``. At most 255 classes (255 is the ignore value).
        groups: class name -> the source ids it covers. Groups may overlap.
        priority: class names, most important first, deciding which class an id covered by several selected
            groups maps to. Default: smallest group first, ties in ``class_names`` order.
        size: length of the table; ids ``>= size`` cannot be mapped.

    Returns:
        An ``int16`` array of length ``size``: ``lut[id]`` is the class index, :data:`IGNORE_INDEX` for ids that
        are known but belong to no selected class (and for 0 and 255), :data:`UNDEFINED` for unknown ids.

    Raises:
        ValueError: a class name is not in ``groups``, names repeat, too many classes, or ``priority`` does not
            list exactly the selected classes.

    Example:
        >>> lut = build_lut(["mito", "nucleus", "nuclear_envelope"])
        >>> [int(lut[i]) for i in (4, 20, 28, 35)]
        [0, 2, 1, 255]
    """
    names = list(class_names)
    if not names:
        raise ValueError("class_names is empty: give at least one class name.")
    if len(set(names)) != len(names):
        repeated = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"class_names repeats {repeated}; every class must appear once.")
    if len(names) >= IGNORE_INDEX:
        raise ValueError(f"at most {IGNORE_INDEX - 1} classes fit next to the ignore value; got {len(names)}.")
    unknown = [n for n in names if n not in groups]
    if unknown:
        raise ValueError(f"class names {unknown} are not in the group table; known names: {sorted(groups)}.")
    if priority is None:
        order = sorted(range(len(names)), key=lambda i: (len(groups[names[i]]), i))
    else:
        if sorted(priority) != sorted(names):
            raise ValueError(
                f"priority must list exactly the selected classes {names}; got {list(priority)}."
            )
        order = [names.index(n) for n in priority]
    known_ids = {i for ids in groups.values() for i in ids} | {0, IGNORE_INDEX}
    too_large = sorted(i for i in known_ids if not 0 <= i < size)
    if too_large:
        raise ValueError(f"group ids {too_large} do not fit a table of size {size}; pass a larger size.")
    lut = np.full(size, UNDEFINED, dtype=np.int16)
    lut[sorted(known_ids)] = IGNORE_INDEX
    for class_index in reversed(order):
        lut[list(groups[names[class_index]])] = class_index
    return lut


def ids_from_names(names: Sequence[str]) -> list[int]:
    """COSEM ids of CellMap short names (``"mito_mem"`` -> 3), in the given order.

    Args:
        names: short names as listed in a crop's ``cellmap.annotation.class_names`` attribute.

    Returns:
        The ids; names that are not atomic COSEM classes (group names such as ``"mito"``, or ``"all"``) are skipped.
    """
    return [COSEM_IDS_BY_NAME[n] for n in names if n in COSEM_IDS_BY_NAME]


def apply_lut(
    labels: np.ndarray,
    lut: np.ndarray,
    annotated_ids: Sequence[int] | None = None,
    source: str = "label array",
) -> np.ndarray:
    """Map raw label ids through a look-up table; unannotated and unknown ids become the ignore value.

    Args:
        labels: integer array of raw ids (any shape). Not modified.
        lut: table from :func:`build_lut` (``int`` array; :data:`UNDEFINED` marks ids it cannot map).
        annotated_ids: ids that were annotated in this crop; any other id (except 255) maps to
            :data:`IGNORE_INDEX`. ``None``: every id was annotated.
        source: what ``labels`` is, for error messages (a path).

    Returns:
        A ``uint8`` array of the same shape holding class indices and :data:`IGNORE_INDEX`.

    Raises:
        ValueError: ``labels`` is not an integer array, or holds ids that are negative, beyond the table or marked
            :data:`UNDEFINED` in it.
    """
    labels = np.asarray(labels)
    if not (np.issubdtype(labels.dtype, np.integer) or labels.dtype == np.bool_):
        raise ValueError(f"{source}: label ids must be integers, got dtype {labels.dtype}.")
    if labels.size == 0:
        return np.zeros(labels.shape, dtype=np.uint8)
    low, high = int(labels.min()), int(labels.max())
    if low < 0 or high >= len(lut):
        bad = low if low < 0 else high
        raise ValueError(
            f"{source}: label id {bad} is outside the look-up table (ids 0..{len(lut) - 1}); "
            "pass a table that covers it (readers take lut=...)."
        )
    table = np.asarray(lut).astype(np.int16, copy=True)
    if annotated_ids is not None:
        keep = np.zeros(len(table), dtype=bool)
        keep[[i for i in annotated_ids if 0 <= i < len(table)]] = True
        table[~keep & (table != UNDEFINED)] = IGNORE_INDEX
    mapped = table[labels]
    if (mapped == UNDEFINED).any():
        bad_ids = np.unique(labels[mapped == UNDEFINED])[:10].tolist()
        raise ValueError(
            f"{source}: label ids {bad_ids} are not in the look-up table; extend the groups "
            "(label_tables.build_lut(groups=...)) or pass lut=... to the reader."
        )
    return mapped.astype(np.uint8)
