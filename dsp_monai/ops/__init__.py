"""The compiled operators of dsp_monai as plain torch functions.

Importing this package loads the compiled library ``dsp_monai._C``, which registers the operators under
``torch.ops.dsp_monai``; the functions here add argument checks, fake-tensor (meta) kernels and autograd.

- :func:`prototype_logsumexp`: cosine prototype scores fused with the decoupled log-sum-exp of the DSP loss.
- :func:`pack_allowed` / :func:`unpack_allowed`: possible-class masks to and from their int64 bit-mask form.
- :func:`prototype_logsumexp_reference`: a readable pure-PyTorch statement of the same function (the test oracle).
- :func:`geodesic_distance` / :func:`euclidean_distance`: exact distance maps from seed points, all maps of a batch
  in one call (and their pure-PyTorch references); :func:`normalise_distance` makes regression targets of them.
"""

from . import _library  # noqa: F401  (loads dsp_monai._C on its own line so a missing build says so)
from .geodesic_distance import (
    euclidean_distance,
    euclidean_distance_reference,
    geodesic_distance,
    geodesic_distance_reference,
    normalise_distance,
)
from .prototype_logsumexp import MAX_CLASSES, pack_allowed, prototype_logsumexp, unpack_allowed
from .reference import prototype_logsumexp_reference

__all__ = [
    "MAX_CLASSES",
    "euclidean_distance",
    "euclidean_distance_reference",
    "geodesic_distance",
    "geodesic_distance_reference",
    "normalise_distance",
    "pack_allowed",
    "prototype_logsumexp",
    "prototype_logsumexp_reference",
    "unpack_allowed",
]
