"""2-D convolutional GRU cell.

Two gate conventions are supported:

- ``reset_before_conv=False`` (ATOMMIC ``rnn_cells.ConvGRUCell``, PyTorch ``nn.GRUCell`` form):
  ``r = sigma(W_ir x + W_hr h)``, ``z = sigma(W_iz x + W_hz h)``, ``n = tanh(W_in x + r * (W_hn h))``,
  ``h' = (1 - z) n + z h``.
- ``reset_before_conv=True`` (DIRECT ``Conv2dGRU`` form): the reset gate multiplies the state before its
  convolution, ``n = tanh(W_in x + W_hn (r * h))``; the update is the same.

Source: Cho et al., arXiv 1406.1078; Ballas et al., "Delving deeper into convolutional networks for learning video
representations", arXiv 1511.06432.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["ConvGRUCell"]


class ConvGRUCell(nn.Module):
    """Convolutional GRU cell on ``[B, C, H, W]`` feature maps.

    Args:
        input_channels: channels of the input ``x``.
        hidden_channels: channels of the state ``h``.
        kernel_size: odd kernel size of both convolutions (zero padding ``dilation * (k - 1) // 2``).
        dilation: dilation of both convolutions.
        bias: whether the input convolution has a bias (the state convolution never has one).
        reset_before_conv: gate convention, see the module docstring.
        reset_gate_bias: initial bias of the reset gate (DIRECT uses -1).
        orthogonal_init: orthogonal initialisation of the weights (as ATOMMIC and DIRECT); else PyTorch's default.
    """

    def __init__(
        self,
        input_channels: int,
        hidden_channels: int,
        kernel_size: int = 1,
        dilation: int = 1,
        bias: bool = True,
        reset_before_conv: bool = False,
        reset_gate_bias: float = 0.0,
        orthogonal_init: bool = True,
    ) -> None:
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd; got {kernel_size}")
        padding = dilation * (kernel_size - 1) // 2
        self.input_channels = input_channels
        self.hidden_channels = hidden_channels
        self.reset_before_conv = reset_before_conv
        self.ih = nn.Conv2d(
            input_channels, 3 * hidden_channels, kernel_size, padding=padding, dilation=dilation, bias=bias
        )
        self.hh = nn.Conv2d(
            hidden_channels, 3 * hidden_channels, kernel_size, padding=padding, dilation=dilation, bias=False
        )
        self.reset_parameters(orthogonal_init, reset_gate_bias)

    def reset_parameters(self, orthogonal_init: bool = True, reset_gate_bias: float = 0.0) -> None:
        """Orthogonal gate weights (per gate), zero biases except the reset gate's ``reset_gate_bias``."""
        if orthogonal_init:
            for weight in (self.ih.weight, self.hh.weight):
                for chunk in weight.data.chunk(3, dim=0):
                    nn.init.orthogonal_(chunk)
        if self.ih.bias is not None:
            nn.init.zeros_(self.ih.bias)
            nn.init.constant_(self.ih.bias[: self.hidden_channels], reset_gate_bias)

    def forward(self, x: torch.Tensor, h: torch.Tensor | None = None) -> torch.Tensor:
        """One recurrence step.

        Args:
            x: input ``[B, input_channels, H, W]``.
            h: state ``[B, hidden_channels, H, W]``; None means zeros.

        Returns:
            The new state ``[B, hidden_channels, H, W]``.
        """
        i_r, i_z, i_n = self.ih(x).chunk(3, dim=1)
        if h is None and not torch.is_grad_enabled():
            # a zero state adds exactly nothing through the bias-free state convolution: skip it (with autograd
            # the convolution stays, so that the state weights get their zero gradient as before); "+ 0.0" makes
            # the dense sums the full step makes, on which sigmoid / tanh round as they do there
            z = (i_z + 0.0).sigmoid_()
            return (1 - z) * (i_n + 0.0).tanh_()
        if h is None:
            h = x.new_zeros(x.shape[0], self.hidden_channels, *x.shape[2:])
        w_r, w_z, w_n = self.hh.weight.chunk(3, dim=0)
        hh = self.hh
        h_rz = nn.functional.conv2d(h, torch.cat([w_r, w_z]), None, 1, hh.padding, hh.dilation)
        h_r, h_z = h_rz.chunk(2, dim=1)
        if not torch.is_grad_enabled():
            return self._step_in_place(h, i_r, i_z, i_n, h_r, h_z, w_n)
        r = torch.sigmoid(i_r + h_r)
        z = torch.sigmoid(i_z + h_z)
        if self.reset_before_conv:
            h_n = nn.functional.conv2d(r * h, w_n, None, 1, hh.padding, hh.dilation)
        else:
            h_n = r * nn.functional.conv2d(h, w_n, None, 1, hh.padding, hh.dilation)
        n = torch.tanh(i_n + h_n)
        return (1 - z) * n + z * h

    def _step_in_place(
        self,
        h: torch.Tensor,
        i_r: torch.Tensor,
        i_z: torch.Tensor,
        i_n: torch.Tensor,
        h_r: torch.Tensor,
        h_z: torch.Tensor,
        w_n: torch.Tensor,
    ) -> torch.Tensor:
        """The same step as :meth:`forward` when nothing is recorded for autograd, with the gates computed in the
        fewer new tensors: every operation and its operand order is kept (``1 - z`` as ``(-z) + 1``), so the result
        is bit-identical with less memory traffic."""
        hh = self.hh
        # sigmoid and tanh run on the same fresh sums as in forward (their vectorised kernels round differently
        # on strided views); the exactly rounded products and sums are done in place
        r = (i_r + h_r).sigmoid_()
        z = (i_z + h_z).sigmoid_()
        if self.reset_before_conv:
            h_n = nn.functional.conv2d(r * h, w_n, None, 1, hh.padding, hh.dilation)
        else:
            h_n = r * nn.functional.conv2d(h, w_n, None, 1, hh.padding, hh.dilation)
        n = (i_n + h_n).tanh_()
        zh = z * h
        return n.mul_(z.neg_().add_(1)).add_(zh)
