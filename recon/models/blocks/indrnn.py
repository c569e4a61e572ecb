"""2-D convolutional independently recurrent (IndRNN) cell.

``h' = ReLU(W_ih * x + w_hh ⊙ h)`` with a per-channel recurrent weight ``w_hh`` of shape ``[1, C, 1, 1]``
(ATOMMIC ``rnn_cells.IndRNNCell``; DIRECT ``cirim.IndRNNCell``). ``W_ih`` is initialised orthogonally and ``w_hh`` from
``N(0, std^2)`` with ``std = 1 / (C (1 + k^2))`` as in the reference code.
Source: Li et al., "Independently recurrent neural network (IndRNN)", arXiv 1803.04831.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["IndRNNCell"]


class IndRNNCell(nn.Module):
    """Convolutional IndRNN cell on ``[B, C, H, W]`` feature maps.

    Args:
        input_channels: channels of the input ``x``.
        hidden_channels: channels of the state ``h``.
        kernel_size: odd kernel size of the input convolution (zero padding ``dilation * (k - 1) // 2``).
        dilation: dilation of the input convolution.
        bias: whether the input convolution has a bias.
        orthogonal_init: orthogonal initialisation of ``W_ih``; else PyTorch's default.
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
        self.ih = nn.Conv2d(input_channels, hidden_channels, kernel_size, padding=padding, dilation=dilation, bias=bias)
        self.hh = nn.Parameter(torch.empty(1, hidden_channels, 1, 1))
        if orthogonal_init:
            nn.init.orthogonal_(self.ih.weight)
        if self.ih.bias is not None:
            nn.init.zeros_(self.ih.bias)
        nn.init.normal_(self.hh, std=1.0 / (hidden_channels * (1 + kernel_size**2)))

    def forward(self, x: torch.Tensor, h: torch.Tensor | None = None) -> torch.Tensor:
        """One recurrence step.

        Args:
            x: input ``[B, input_channels, H, W]``.
            h: state ``[B, hidden_channels, H, W]``; None means zeros.

        Returns:
            The new state ``[B, hidden_channels, H, W]``.
        """
        out = self.ih(x)
        if h is not None:
            out = out + self.hh * h
        return torch.relu(out)
