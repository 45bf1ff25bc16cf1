"""A U-Net with an image-level classification branch on its bottleneck (the classification-branch baseline, Mlynarski
et al. 2019; docs/methods.md)."""

from typing import Sequence, Union

import torch
from monai.networks.layers.factories import Conv, Pool
from monai.networks.nets import BasicUNet
from torch import nn

from .auxiliary import basic_unet_decoder, basic_unet_encoder

__all__ = ["ClassificationBranchUNet"]


class ClassificationBranchUNet(nn.Module):
    """MONAI's BasicUNet (:attr:`segmentation`) with a branch predicting image-level tags from its bottleneck.

    The branch: mean pooling of the bottleneck (``features[4]`` channels) to ``branch_size + 2`` pixels per axis,
    four 3x3 convolutions with ReLU (padding 1), one 3x3 convolution without padding down to ``branch_size`` per
    axis (11 x 11 as in the paper's supplement), then linear layers: ``h = relu(W1 x)``, ``h = h + relu(W2 h)``
    (the residual connection), ``tag_logits = W3 h`` (one logit per class, for a per-class sigmoid).

    ``forward(images)`` returns the segmentation logits (the plain U-Net, for inferers and export);
    ``forward(images, outputs=names)`` a dict of ``"logits"`` (B, C, *spatial) and / or ``"tag_logits"`` (B, C)
    from one pass of the encoder.

    Args:
        spatial_dims: 2 or 3.
        in_channels: image channels.
        num_classes: C.
        features: the BasicUNet's six feature sizes.
        branch_channels: channels of the branch's convolutions.
        branch_size: spatial size per axis after the branch's last convolution.
        hidden: width of the linear layers.
        **unet_kwargs: further BasicUNet arguments.

    Raises:
        ValueError: for a branch size, channel count or width below 1.

    Example:
        >>> import torch
        >>> net = ClassificationBranchUNet(2, 1, 3, features=(4, 4, 8, 8, 16, 4), branch_channels=4, hidden=8)
        >>> out = net(torch.randn(2, 1, 32, 32), outputs=("logits", "tag_logits"))
        >>> out["logits"].shape, out["tag_logits"].shape
        (torch.Size([2, 3, 32, 32]), torch.Size([2, 3]))
    """

    output_names = ("logits", "tag_logits")

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        num_classes: int,
        features: Sequence[int] = (32, 32, 64, 128, 256, 32),
        branch_channels: int = 32,
        branch_size: int = 11,
        hidden: int = 128,
        **unet_kwargs,
    ) -> None:
        super().__init__()
        for name, value in (("branch_channels", branch_channels), ("branch_size", branch_size), ("hidden", hidden)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"ClassificationBranchUNet: {name} must be an integer >= 1; got {value!r}")
        self.segmentation = BasicUNet(spatial_dims=spatial_dims, in_channels=in_channels, out_channels=num_classes,
                                      features=features, **unet_kwargs)
        conv = Conv[Conv.CONV, spatial_dims]
        layers = [Pool[Pool.ADAPTIVEAVG, spatial_dims](branch_size + 2)]
        channels = int(features[4])
        for _ in range(4):
            layers += [conv(channels, branch_channels, kernel_size=3, padding=1), nn.ReLU()]
            channels = branch_channels
        layers += [conv(channels, branch_channels, kernel_size=3), nn.Flatten()]
        self.branch = nn.Sequential(*layers)
        self.fc_in = nn.Linear(branch_channels * branch_size**spatial_dims, hidden)
        self.fc_residual = nn.Linear(hidden, hidden)
        self.fc_out = nn.Linear(hidden, num_classes)

    def tag_logits(self, bottleneck: torch.Tensor) -> torch.Tensor:
        """(B, C) tag logits of the bottleneck features (B, features[4], *spatial)."""
        h = torch.relu(self.fc_in(self.branch(bottleneck)))
        h = h + torch.relu(self.fc_residual(h))
        return self.fc_out(h)

    def forward(self, images: torch.Tensor, outputs: Union[Sequence[str], None] = None):
        """Segmentation logits (B, C, *spatial); with ``outputs`` a dict of the named outputs.

        Raises:
            ValueError: for an unknown output name.
        """
        if outputs is None:
            return self.segmentation(images)
        unknown = set(outputs) - set(self.output_names)
        if unknown:
            raise ValueError(f"ClassificationBranchUNet has the outputs {list(self.output_names)}; got "
                             f"{sorted(unknown)}")
        encoder = basic_unet_encoder(self.segmentation, images)
        result = {}
        if "tag_logits" in outputs:
            result["tag_logits"] = self.tag_logits(encoder[-1])
        if "logits" in outputs:
            result["logits"] = self.segmentation.final_conv(basic_unet_decoder(self.segmentation, encoder))
        return result
