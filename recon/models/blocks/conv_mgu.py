"""2-D convolutional minimal gated unit (MGU) cell.

``f = sigma(W_if x + W_hf h)``, ``c = tanh(W_ic x + f * (W_hc h))``, ``h' = c + f (h - c)`` (ATOMMIC
``rnn_cells.ConvMGUCell``). Source: Zhou et al., "Minimal gated unit for recurrent neural networks", arXiv 1603.09420.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["ConvMGUCell"]


class ConvMGUCell(nn.Module):
    """Convolutional MGU cell on ``[B, C, H, W]`` feature maps.

    Args:
        input_channels: channels of the input ``x``.
        hidden_channels: channels of the state ``h``.
        kernel_size: odd kernel size (zero padding ``dilation * (k - 1) // 2``).
        dilation: dilation of both convolutions.
        bias: whether the input convolution has a bias (the state convolution never has one).
        orthogonal_init: orthogonal initialisation of the weights per gate; else PyTorch's default.
    """

    def __init__(
        self,
        input_channels: int,
        hidden_channels: int,
        kernel_size: int = 1,
        dilation: int = 1,
        bias: bool = True,
        orthogonal_init: bool = True,
    ) -> None:
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd; got {kernel_size}")
        padding = dilation * (kernel_size - 1) // 2
        self.input_channels = input_channels
        self.hidden_channels = hidden_channels
        self.ih = nn.Conv2d(
            input_channels, 2 * hidden_channels, kernel_size, padding=padding, dilation=dilation, bias=bias
        )
        self.hh = nn.Conv2d(
            hidden_channels, 2 * hidden_channels, kernel_size, padding=padding, dilation=dilation, bias=False
        )
        if orthogonal_init:
            for weight in (self.ih.weight, self.hh.weight):
                for chunk in weight.data.chunk(2, dim=0):
                    nn.init.orthogonal_(chunk)
        if self.ih.bias is not None:
            nn.init.zeros_(self.ih.bias)

    def forward(self, x: torch.Tensor, h: torch.Tensor | None = None) -> torch.Tensor:
        """One recurrence step.

        Args:
            x: input ``[B, input_channels, H, W]``.
            h: state ``[B, hidden_channels, H, W]``; None means zeros.

        Returns:
            The new state ``[B, hidden_channels, H, W]``.
        """
        if h is None:
            h = x.new_zeros(x.shape[0], self.hidden_channels, *x.shape[2:])
        i_f, i_c = self.ih(x).chunk(2, dim=1)
        h_f, h_c = self.hh(h).chunk(2, dim=1)
        f = torch.sigmoid(i_f + h_f)
        c = torch.tanh(i_c + f * h_c)
        return c + f * (h - c)
