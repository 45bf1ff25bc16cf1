"""Networks of dsp_monai: the DSP head and the networks built around it (method.md §2).

- :class:`DSPHead`: BatchNorm, 1x1 conv, LeakyReLU, 1x1 conv; K prototypes per class; fixed temperature.
- :class:`DSPNet`: any dense backbone + a DSPHead; ``forward`` gives logits (for MONAI inferers), ``embed`` the
  embeddings for the DSP loss.
- :class:`DSPBasicUNet`: MONAI's BasicUNet + a DSPHead, the paper's network.
"""

from .dsp import DSPBasicUNet, DSPHead, DSPNet

__all__ = ["DSPBasicUNet", "DSPHead", "DSPNet"]
