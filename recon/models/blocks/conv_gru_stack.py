"""The convolutional GRU stack of RecurrentVarNet and DIRECT's RIM (DIRECT / ATOMMIC ``Conv2dGRU``), and the padded
convolution it and :class:`~recon.models.blocks.recurrent_init.RecurrentInit` are made of."""

from __future__ import annotations

import torch
from torch import nn

from recon.models.blocks.conv_gru import ConvGRUCell

__all__ = ["ConvGRUStack", "padded_conv"]


def padded_conv(cin: int, cout: int, kernel: int, dilation: int = 1) -> nn.Sequential:
    """A ``kernel`` x ``kernel`` conv after replication padding that keeps ``[H, W]`` (odd kernels)."""
    return nn.Sequential(
        nn.ReplicationPad2d(dilation * (kernel - 1) // 2), nn.Conv2d(cin, cout, kernel, dilation=dilation)
    )


class ConvGRUStack(nn.Module):
    """Stack of ``conv -> ReLU -> ConvGRU`` layers and an output conv (DIRECT ``Conv2dGRU``).

    Layer 0 uses a 5x5 conv, layer 1 a 3x3 conv with dilation 2, later layers 3x3 convs (replication padding); the
    GRU cells use 1x1 convolutions, the reset-before-conv convention and a reset-gate bias of -1. The output conv is
    3x3 to ``out_channels``.

    Args:
        in_channels: input channels.
        hidden_channels: channels of every layer and state.
        out_channels: output channels.
        num_layers: number of recurrent layers.
        state_relu: apply ReLU to each layer's new state before it feeds the next conv (and the output conv), as
            DIRECT's / ATOMMIC's ``Conv2dGRU`` do; the stored state itself stays un-rectified.
        norm_groups: 0 for none; else normalise the input per sample in ``norm_groups`` channel groups (mean and
            unbiased std over each group) and map the output back with the same statistics, the output channels
            split into the same number of groups (DIRECT ``NormConv2dGRU``, which uses 2 groups).
    """

    def __init__(
        self,
        in_channels: int,
        hidden_channels: int,
        out_channels: int,
        num_layers: int,
        state_relu: bool = False,
        norm_groups: int = 0,
    ) -> None:
        super().__init__()
        self.hidden_channels = hidden_channels
        self.num_layers = num_layers
        self.state_relu = state_relu
        self.norm_groups = norm_groups
        convs, cells = [], []
        for i in range(num_layers):
            kernel, dilation = (5, 1) if i == 0 else (3, 2) if i == 1 else (3, 1)
            convs.append(padded_conv(in_channels if i == 0 else hidden_channels, hidden_channels, kernel, dilation))
            cells.append(ConvGRUCell(hidden_channels, hidden_channels, 1, reset_before_conv=True, reset_gate_bias=-1.0))
        self.convs = nn.ModuleList(convs)
        self.cells = nn.ModuleList(cells)
        self.out = padded_conv(hidden_channels, out_channels, 3)

    def forward(
        self, x: torch.Tensor, hidden: list[torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Apply the stack.

        Args:
            x: input ``[B, in_channels, H, W]``.
            hidden: ``num_layers`` states ``[B, hidden_channels, H, W]``, or None for zeros.

        Returns:
            ``(output [B, out_channels, H, W], new states)``.
        """
        if hidden is None:
            hidden = [x.new_zeros(x.shape[0], self.hidden_channels, *x.shape[2:])] * self.num_layers
        if self.norm_groups:
            b = x.shape[0]
            grouped = x.reshape(b, self.norm_groups, -1)
            mean, std = grouped.mean(-1, keepdim=True), grouped.std(-1, keepdim=True)
            x = ((grouped - mean) / std).reshape(x.shape)
        new_hidden = []
        for conv, cell, h in zip(self.convs, self.cells, hidden, strict=True):
            x = cell(torch.relu(conv(x)), h)
            new_hidden.append(x)
            if self.state_relu:
                x = torch.relu(x)
        out = self.out(x)
        if self.norm_groups:
            out = (out.reshape(b, self.norm_groups, -1) * std + mean).reshape(out.shape)
        return out, new_hidden
