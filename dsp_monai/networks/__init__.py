"""Networks of dsp_monai: the DSP head and the networks built around it (docs/method.md), the U-Net with
auxiliary heads of the point-distance branches and the EMA teacher (docs/methods.md).

- :class:`DSPHead`: BatchNorm, 1x1 conv, LeakyReLU, 1x1 conv; K prototypes per class; fixed temperature.
- :class:`DSPNet`: any dense backbone + a DSPHead; ``forward`` gives logits (for MONAI inferers), or named outputs
  (``embeddings``, ``logits``) for the loss terms.
- :class:`DSPBasicUNet`: MONAI's BasicUNet + a DSPHead, the paper's network.
- :class:`AuxiliaryHeadUNet`: MONAI's BasicUNet with auxiliary 1x1-conv heads on its decoder.
- :class:`ClassificationBranchUNet`: MONAI's BasicUNet with an image-level tag branch on its bottleneck.
- :class:`EMATeacher` / :func:`ema_teacher`: the exponential-moving-average teacher of the pseudo-labels.

Networks with named outputs take ``forward(images, outputs=names)`` and list the names in ``output_names``.
"""

from .auxiliary import AuxiliaryHeadUNet
from .classification import ClassificationBranchUNet
from .dsp import DSPBasicUNet, DSPHead, DSPNet
from .ema import EMATeacher, ema_teacher

__all__ = ["AuxiliaryHeadUNet", "ClassificationBranchUNet", "DSPBasicUNet", "DSPHead", "DSPNet", "EMATeacher", "ema_teacher"]
