"""Loads the compiled library ``dsp_monai._C`` and reports what it was built with."""

import json

import torch  # noqa: F401  (loaded before _C, whose symbols it provides)

try:
    from .. import _C  # importing registers the torch.ops.dsp_monai operators
except ImportError as error:  # pragma: no cover - depends on the installation
    raise ImportError(
        "dsp_monai's compiled operators (dsp_monai._C) are not built. From the repository root run "
        "`make build` (or `pip install --no-build-isolation -e .`); set FORCE_CUDA=1 to include the CUDA kernels. "
        f"Original error: {error}"
    ) from error


def build_info() -> dict:
    """What the loaded binary contains: ``{"cpu": bool, "cuda": bool, "cuda_version": str | None,
    "cuda_archs": [str], "openmp": bool, ...}``."""
    return json.loads(_C.BUILD_INFO)
