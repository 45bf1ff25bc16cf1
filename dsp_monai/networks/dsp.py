"""The DSP head (projection + class prototypes, docs/method.md) and the network wrappers around it."""

import math
from typing import Sequence, Union

import torch
from monai.networks.layers.factories import Conv, Norm
from monai.networks.nets import BasicUNet
from torch import nn

from ..ops import MAX_CLASSES, prototype_logsumexp

__all__ = ["DSPBasicUNet", "DSPHead", "DSPNet"]


def _positive_int(name: str, value, upper: Union[int, None] = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1 or (upper is not None and value > upper):
        bound = f" and at most {upper}" if upper is not None else ""
        raise ValueError(f"{name} must be an integer >= 1{bound}; got {value!r}")
    return value


class DSPHead(nn.Module):
    """Projection head and class prototypes of Decoupled Semantic Prototypes (docs/method.md).

    ``embed``: BatchNorm, 1x1 conv in_channels -> D, LeakyReLU, 1x1 conv D -> D (the pixel embeddings; normalised
    where they are scored). ``forward``: the class scores ``s_c = mean_k cos(f, P[c, k]) / temperature``.

    Args:
        spatial_dims: 2 or 3.
        in_channels: channels of the backbone's feature map.
        num_classes: C, at most 63.
        embedding_dim: D; default ``in_channels``.
        num_prototypes: K prototypes per class.
        temperature: tau > 0, fixed (not learned).
        negative_slope: slope of the LeakyReLU.

    Raises:
        ValueError: for a non-positive size, C > 63, spatial_dims not 2 or 3, or temperature <= 0.

    Example:
        >>> import torch
        >>> from dsp_monai.networks import DSPHead
        >>> head = DSPHead(spatial_dims=2, in_channels=16, num_classes=4, embedding_dim=8)
        >>> head(torch.randn(2, 16, 12, 10)).shape
        torch.Size([2, 4, 12, 10])
        >>> head.embed(torch.randn(2, 16, 12, 10)).shape, head.prototypes.shape
        (torch.Size([2, 8, 12, 10]), torch.Size([4, 5, 8]))
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        num_classes: int,
        embedding_dim: Union[int, None] = None,
        num_prototypes: int = 5,
        temperature: float = 0.05,
        negative_slope: float = 0.1,
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3; got {spatial_dims!r}")
        in_channels = _positive_int("in_channels", in_channels)
        num_classes = _positive_int("num_classes", num_classes, MAX_CLASSES)
        embedding_dim = _positive_int("embedding_dim", in_channels if embedding_dim is None else embedding_dim)
        num_prototypes = _positive_int("num_prototypes", num_prototypes)
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not (
            math.isfinite(temperature) and temperature > 0
        ):
            raise ValueError(f"temperature must be a finite number > 0; got {temperature!r}")
        conv = Conv[Conv.CONV, spatial_dims]
        self.spatial_dims = spatial_dims
        self.temperature = float(temperature)
        self.projection = nn.Sequential(
            Norm[Norm.BATCH, spatial_dims](in_channels),
            conv(in_channels, embedding_dim, kernel_size=1),
            nn.LeakyReLU(negative_slope),
            conv(embedding_dim, embedding_dim, kernel_size=1),
        )
        self.prototypes = nn.Parameter(torch.randn(num_classes, num_prototypes, embedding_dim))

    @property
    def num_classes(self) -> int:
        """C."""
        return self.prototypes.shape[0]

    def embed(self, features: torch.Tensor) -> torch.Tensor:
        """Pixel embeddings (B, D, *spatial) of backbone features (B, in_channels, *spatial), unnormalised."""
        if features.dim() != self.spatial_dims + 2:
            raise ValueError(
                f"features must have shape (B, C, *spatial) with {self.spatial_dims} spatial dims; got shape "
                f"{list(features.shape)}"
            )
        return self.projection(features)

    def score(self, embeddings: torch.Tensor) -> torch.Tensor:
        """Class scores (B, C, *spatial) of embeddings (B, D, *spatial): mean cosine to the prototypes / tau."""
        logits, _ = prototype_logsumexp(embeddings, self.prototypes.to(_prototype_dtype(embeddings)), self.temperature)
        return logits

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Class scores (B, C, *spatial) of backbone features (B, in_channels, *spatial)."""
        return self.score(self.embed(features))


def _prototype_dtype(embeddings: torch.Tensor) -> torch.dtype:
    """The operator takes float32 prototypes with half-precision embeddings, else the embeddings' dtype."""
    return torch.float32 if embeddings.dtype in (torch.float16, torch.bfloat16) else embeddings.dtype


class DSPNet(nn.Module):
    """A dense backbone followed by a :class:`DSPHead`.

    ``forward(images)`` returns the logits only, so MONAI inferers (sliding windows) and metrics use it as any
    segmentation network; ``forward(images, outputs=("embeddings",))`` (the form a trainer calls through
    DistributedDataParallel, so that DDP's forward bookkeeping runs) returns named outputs, the embeddings the DSP
    loss takes with :attr:`prototypes` and :attr:`temperature`, and / or the logits.

    Args:
        backbone: maps (B, in, *spatial) images to (B, head in_channels, *spatial) features.
        head: the :class:`DSPHead`.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from dsp_monai.networks import DSPHead, DSPNet
        >>> net = DSPNet(nn.Conv2d(1, 16, 3, padding=1), DSPHead(2, 16, num_classes=3))
        >>> net(torch.randn(2, 1, 8, 8)).shape
        torch.Size([2, 3, 8, 8])
    """

    def __init__(self, backbone: nn.Module, head: DSPHead) -> None:
        super().__init__()
        if not isinstance(head, DSPHead):
            raise TypeError(f"head must be a DSPHead; got {type(head).__name__}")
        self.backbone = backbone
        self.head = head

    @property
    def prototypes(self) -> nn.Parameter:
        """The head's (C, K, D) prototypes."""
        return self.head.prototypes

    @property
    def temperature(self) -> float:
        """The head's temperature tau."""
        return self.head.temperature

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Pixel embeddings (B, D, *spatial) of images (B, in, *spatial), for the DSP loss."""
        return self.head.embed(self.backbone(images))

    output_names = ("embeddings", "logits")

    def forward(self, images: torch.Tensor, outputs: Union[Sequence[str], None] = None):
        """Logits (B, C, *spatial) of images (B, in, *spatial); with ``outputs`` (names among
        :attr:`output_names`) a dict of those outputs: ``embeddings`` (B, D, *spatial), ``logits``.

        Raises:
            ValueError: for an unknown output name.
        """
        if outputs is None:
            return self.head(self.backbone(images))
        unknown = set(outputs) - set(self.output_names)
        if unknown:
            raise ValueError(f"{type(self).__name__} has the outputs {list(self.output_names)}; got {sorted(unknown)}")
        embeddings = self.embed(images)
        result = {}
        if "embeddings" in outputs:
            result["embeddings"] = embeddings
        if "logits" in outputs:
            result["logits"] = self.head.score(embeddings)
        return result


class DSPBasicUNet(DSPNet):
    """MONAI's BasicUNet feeding a :class:`DSPHead`: the paper's network (docs/method.md).

    The U-Net's last 1x1 convolution maps its decoder output (``features[5]`` channels) to ``backbone_channels``
    channels, the head's input; the head projects them to ``embedding_dim``.

    Args:
        spatial_dims: 2 or 3.
        in_channels: image channels.
        num_classes: C, at most 63.
        features: the BasicUNet's six feature sizes; the paper's U-Net is (64, 128, 256, 512, 1024, 64).
        embedding_dim: D.
        backbone_channels: channels of the backbone output fed to the head; default ``embedding_dim``.
        num_prototypes: K.
        temperature: tau.
        negative_slope: slope of the head's LeakyReLU.
        **unet_kwargs: further BasicUNet arguments (act, norm, bias, dropout, upsample).

    Example:
        >>> import torch
        >>> from dsp_monai.networks import DSPBasicUNet
        >>> net = DSPBasicUNet(2, 1, num_classes=3, features=(8, 8, 16, 16, 32, 8), embedding_dim=16)
        >>> net(torch.randn(1, 1, 32, 32)).shape, net.embed(torch.randn(1, 1, 32, 32)).shape
        (torch.Size([1, 3, 32, 32]), torch.Size([1, 16, 32, 32]))
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        num_classes: int,
        features: Sequence[int] = (64, 128, 256, 512, 1024, 64),
        embedding_dim: int = 64,
        backbone_channels: Union[int, None] = None,
        num_prototypes: int = 5,
        temperature: float = 0.05,
        negative_slope: float = 0.1,
        **unet_kwargs,
    ) -> None:
        backbone_channels = embedding_dim if backbone_channels is None else backbone_channels
        head = DSPHead(
            spatial_dims, backbone_channels, num_classes, embedding_dim, num_prototypes, temperature, negative_slope
        )
        backbone = BasicUNet(
            spatial_dims=spatial_dims,
            in_channels=in_channels,
            out_channels=backbone_channels,
            features=features,
            **unet_kwargs,
        )
        super().__init__(backbone, head)
