"""A U-Net with auxiliary heads on its decoder (the point-distance branches of docs/methods.md)."""

from typing import Mapping, Sequence, Union

import torch
from monai.networks.layers.factories import Conv
from monai.networks.nets import BasicUNet
from torch import nn

__all__ = ["AuxiliaryHeadUNet", "basic_unet_decoder", "basic_unet_encoder"]


def basic_unet_encoder(unet: BasicUNet, images: torch.Tensor) -> list:
    """The feature maps of a MONAI BasicUNet's encoder, finest first: [x0, x1, x2, x3, x4 (the bottleneck)]."""
    features = [unet.conv_0(images)]
    for down in (unet.down_1, unet.down_2, unet.down_3, unet.down_4):
        features.append(down(features[-1]))
    return features


def basic_unet_decoder(unet: BasicUNet, encoder: Sequence[torch.Tensor]) -> torch.Tensor:
    """The BasicUNet decoder's last feature map (the input of its final convolution) from
    :func:`basic_unet_encoder`'s maps."""
    x0, x1, x2, x3, x4 = encoder
    u4 = unet.upcat_4(x4, x3)
    u3 = unet.upcat_3(u4, x2)
    u2 = unet.upcat_2(u3, x1)
    return unet.upcat_1(u2, x0)


class AuxiliaryHeadUNet(nn.Module):
    """MONAI's BasicUNet (the segmentation network, :attr:`segmentation`) with auxiliary heads, each a 1x1
    convolution of the decoder's last feature map (``features[5]`` channels), used in training only.

    ``forward(images)`` returns the segmentation logits, so inferers and metrics use it as the plain U-Net, and
    :attr:`segmentation` alone is the network to export (its state dict loads into a BasicUNet of the same
    arguments). ``forward(images, outputs=names)`` returns a dict of the named outputs among ``"logits"`` and the
    heads' names, from one pass of the U-Net.

    Args:
        spatial_dims: 2 or 3.
        in_channels: image channels.
        num_classes: segmentation classes C (the U-Net's out_channels).
        features: the BasicUNet's six feature sizes.
        heads: auxiliary head name -> its output channels (e.g. ``{"point_distance": C}``).
        **unet_kwargs: further BasicUNet arguments (act, norm, bias, dropout, upsample).

    Raises:
        ValueError: for no heads, a head named ``logits`` or with fewer than 1 channel.

    Example:
        >>> import torch
        >>> net = AuxiliaryHeadUNet(2, 1, 3, features=(4, 4, 8, 8, 16, 4), heads={"point_distance": 3})
        >>> out = net(torch.randn(2, 1, 32, 32), outputs=("logits", "point_distance"))
        >>> out["logits"].shape, out["point_distance"].shape
        (torch.Size([2, 3, 32, 32]), torch.Size([2, 3, 32, 32]))
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        num_classes: int,
        features: Sequence[int] = (32, 32, 64, 128, 256, 32),
        heads: Union[Mapping[str, int], None] = None,
        **unet_kwargs,
    ) -> None:
        super().__init__()
        if not heads:
            raise ValueError("AuxiliaryHeadUNet: heads must name at least one auxiliary head (name -> channels)")
        for name, channels in heads.items():
            if name == "logits" or isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
                raise ValueError(f"AuxiliaryHeadUNet: head {name!r} must have a name other than 'logits' and an "
                                 f"integer number of channels >= 1; got {channels!r}")
        self.segmentation = BasicUNet(spatial_dims=spatial_dims, in_channels=in_channels, out_channels=num_classes,
                                      features=features, **unet_kwargs)
        conv = Conv[Conv.CONV, spatial_dims]
        decoder_channels = self.segmentation.final_conv.in_channels
        self.heads = nn.ModuleDict({name: conv(decoder_channels, channels, kernel_size=1)
                                    for name, channels in heads.items()})

    @property
    def output_names(self) -> tuple:
        return ("logits", *self.heads)

    def decoder_features(self, images: torch.Tensor) -> torch.Tensor:
        """The U-Net decoder's last feature map (B, features[5], *spatial), the input of its final convolution."""
        return basic_unet_decoder(self.segmentation, basic_unet_encoder(self.segmentation, images))

    def forward(self, images: torch.Tensor, outputs: Union[Sequence[str], None] = None):
        """Segmentation logits (B, C, *spatial); with ``outputs`` a dict of the named outputs.

        Raises:
            ValueError: for an unknown output name.
        """
        if outputs is None:
            return self.segmentation(images)
        unknown = set(outputs) - set(self.output_names)
        if unknown:
            raise ValueError(f"AuxiliaryHeadUNet has the outputs {list(self.output_names)}; got {sorted(unknown)}")
        features = self.decoder_features(images)
        result = {name: self.heads[name](features) for name in outputs if name != "logits"}
        if "logits" in outputs:
            result["logits"] = self.segmentation.final_conv(features)
        return result
