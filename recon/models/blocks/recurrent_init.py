"""The recurrent state initialiser (RSI) of RecurrentVarNet and DIRECT's RIM (DIRECT / ATOMMIC ``RecurrentInit``)."""

from __future__ import annotations

import torch
from torch import nn

from recon.models.blocks.conv_gru_stack import padded_conv

__all__ = ["RecurrentInit"]


class RecurrentInit(nn.Module):
    """Recurrent state initialiser (RSI): dilated 3x3 conv stack -> one 1x1 conv + ReLU per recurrent layer.

    With ``multiscale_depth > 1`` the last ``multiscale_depth`` feature maps are concatenated before the 1x1 convs.

    Args:
        in_channels: input channels (2 for a complex image).
        out_channels: channels of each produced state.
        channels: channels of the conv stack.
        dilations: dilation of each conv of the stack (same length as ``channels``).
        num_layers: number of states to produce.
        multiscale_depth: number of trailing feature maps concatenated.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        channels: tuple[int, ...],
        dilations: tuple[int, ...],
        num_layers: int,
        multiscale_depth: int = 1,
    ) -> None:
        super().__init__()
        if len(channels) != len(dilations):
            raise ValueError(f"channels {channels} and dilations {dilations} must have the same length")
        if not 1 <= multiscale_depth <= len(channels):
            raise ValueError(f"multiscale_depth must be in [1, {len(channels)}]; got {multiscale_depth}")
        self.multiscale_depth = multiscale_depth
        cins = (in_channels, *channels[:-1])
        self.convs = nn.ModuleList(
            [padded_conv(ci, co, 3, d) for ci, co, d in zip(cins, channels, dilations, strict=True)]
        )
        fused = sum(channels[-multiscale_depth:])
        self.heads = nn.ModuleList([nn.Conv2d(fused, out_channels, 1) for _ in range(num_layers)])

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Map ``x`` ``[B, in_channels, H, W]`` to ``num_layers`` states ``[B, out_channels, H, W]``."""
        features = []
        for conv in self.convs:
            x = torch.relu(conv(x))
            features.append(x)
        x = torch.cat(features[-self.multiscale_depth :], dim=1)
        return [torch.relu(head(x)) for head in self.heads]
