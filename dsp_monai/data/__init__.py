"""Data: readers, datalists, the synthetic FIB-SEM dataset, scenarios, samplers and collation.

Modules:

- :mod:`dsp_monai.data.label_tables`: the 37 COSEM ids and their configurable merge into classes;
- :mod:`dsp_monai.data.datalist`: the datalist JSON format and its one validator (``read_datalist``,
  ``load_datalist``, ``save_datalist``);
- :mod:`dsp_monai.data.experiment`: datalist -> split -> items of one experiment, checked before training;
- :mod:`dsp_monai.data.readers`: MONAI readers (OME-NGFF zarr crops, dispatch to NIfTI / ITK / PIL readers);
- :mod:`dsp_monai.data.synthetic`: the synthetic dataset and its CLI ``python -m dsp_monai.data.synthetic``;
- :mod:`dsp_monai.data.scenarios`, :mod:`dsp_monai.data.samplers`, :mod:`dsp_monai.data.collate`: annotation
  scenarios and cross-sub-volume splits, stratified sampling, batch collation.
- :mod:`dsp_monai.data.files`: writing JSON and text so that a reader never sees half a file (datalists, split
  files, ``metrics.json``, ``test_metrics.json``).

Names below are imported on first use, so ``import dsp_monai.data`` stays cheap (the readers pull in MONAI).
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "IGNORE_INDEX": "label_tables",
    "DEFAULT_CLASS_NAMES": "label_tables",
    "HELA2_CLASS_NAMES": "label_tables",
    "MERGED_GROUPS": "label_tables",
    "COSEM_LABELS": "label_tables",
    "build_lut": "label_tables",
    "apply_lut": "label_tables",
    "DatalistError": "datalist",
    "DatalistNotFoundError": "datalist",
    "load_datalist": "datalist",
    "read_datalist": "datalist",
    "ExperimentError": "experiment",
    "prepare_experiment": "experiment",
    "save_datalist": "datalist",
    "validate_datalist": "datalist",
    "OMEZarrReader": "readers",
    "MultiFormatReader": "readers",
    "reader_for_path": "readers",
    "format_zarr_path": "readers",
    "parse_zarr_path": "readers",
    "SyntheticConfig": "synthetic",
    "generate_dataset": "synthetic",
    "ensure_default_dataset": "synthetic",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"dsp_monai.data.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'dsp_monai.data' has no attribute {name!r}")
