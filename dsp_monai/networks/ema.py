"""An exponential-moving-average (EMA) copy of a network, the teacher of ``pseudo_label_source: ema``."""

import copy

import torch
from torch import nn

__all__ = ["EMATeacher", "ema_teacher"]

PSEUDO_LABEL_SOURCES = ("student", "ema")


class EMATeacher(nn.Module):
    """A frozen copy of a network, always in eval mode, whose weights follow the network's as an exponential moving
    average: after each optimiser step, ``teacher = decay * teacher + (1 - decay) * network`` for the parameters,
    and the buffers (BatchNorm statistics) copied. ``forward`` is the copy's (logits).

    It is a module: checkpoint it with the network (``state_dict`` / ``load_state_dict``), so that a resumed run
    continues with the same teacher.

    Args:
        network: the network being trained (copied now; pass the module, not a DistributedDataParallel wrapper).
        decay: in [0, 1); 0 makes the teacher the current weights in eval mode.

    Raises:
        ValueError: for a decay outside [0, 1).
    """

    def __init__(self, network: nn.Module, decay: float = 0.99) -> None:
        super().__init__()
        if isinstance(decay, bool) or not isinstance(decay, (int, float)) or not 0.0 <= decay < 1.0:
            raise ValueError(f"EMATeacher: decay must be in [0, 1); got {decay!r}")
        self.decay = float(decay)
        self.model = copy.deepcopy(network)
        for parameter in self.model.parameters():
            parameter.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True) -> "EMATeacher":
        """Stays in eval mode whatever ``mode`` says (the teacher's BatchNorm uses the copied statistics)."""
        return super().train(False)

    @torch.no_grad()
    def update(self, network: nn.Module) -> None:
        """One EMA step towards ``network``'s current weights (its module if wrapped by DistributedDataParallel)."""
        network = network.module if hasattr(network, "module") else network
        for mine, theirs in zip(self.model.parameters(), network.parameters()):
            mine.mul_(self.decay).add_(theirs.detach(), alpha=1.0 - self.decay)
        for mine, theirs in zip(self.model.buffers(), network.buffers()):
            mine.copy_(theirs)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images)


def ema_teacher(source: str, network: nn.Module, decay: float = 0.99):
    """The pseudo-label teacher a configuration asks for: None for ``source="student"`` (the network's own
    prediction), an :class:`EMATeacher` of ``network`` for ``"ema"``.

    Raises:
        ValueError: for another source.
    """
    if source not in PSEUDO_LABEL_SOURCES:
        raise ValueError(f"pseudo_label_source must be one of {PSEUDO_LABEL_SOURCES}; got {source!r}")
    return EMATeacher(network, decay) if source == "ema" else None
