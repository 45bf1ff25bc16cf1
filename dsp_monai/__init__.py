"""dsp_monai: Decoupled Semantic Prototypes (DSP, CVPR 2023) for segmentation from mixed annotations.

Subpackages (each imports only the ones listed before it):

- ``dsp_monai.ops``: the compiled operators (``prototype_logsumexp``, distance maps) and their references;
- ``dsp_monai.annotations``: the per-image annotation record, validation and collation;
- ``dsp_monai.data``: readers, datalists, the synthetic FIB-SEM dataset, scenarios and samplers;
- ``dsp_monai.transforms``, ``dsp_monai.networks``, ``dsp_monai.losses``: MONAI-style building blocks;
- ``dsp_monai.engines``: trainers and evaluators used by the MONAI bundle in ``bundle/``.

Importing ``dsp_monai`` itself loads nothing heavy; the compiled library is loaded by ``dsp_monai.ops``.
"""

__version__ = "0.1.0"
