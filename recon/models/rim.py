"""Recurrent inference machine (RIM) for multi-coil MRI reconstruction.

At every time step the block sees ``[Re eta, Im eta, Re grad, Im grad]`` (``grad`` = gradient of the log-likelihood,
:func:`recon.ops.log_likelihood_gradient`, i.e. implicit data consistency), runs conv(5x5) -> cell ->
dilated conv(3x3, d=2) -> cell -> conv(3x3) -> 2 channels, and updates ``eta <- eta + delta``.

Sources: Putzky & Welling, arXiv 1706.04008; Lønning et al., "Recurrent inference machines for reconstructing
heterogeneous MRI data", MedIA 53:64-78 (2019); Karkalousos et al., arXiv 2012.07819 (GRU / MGU / IndRNN cells).
Structure as in ATOMMIC ``rim_base/rim_block.py`` and DIRECT ``nn/rim``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from recon.models._common import (
    ImageInit,
    channels_to_complex,
    check_inputs,
    coerce_enums,
    complex_to_channels,
    initial_image,
)
from recon.models.blocks import CellType, make_cell
from recon.ops.forward import log_likelihood_gradient

__all__ = ["RIM", "RIMBlock", "RIMConfig"]

Hidden = list[torch.Tensor | None]


class _PaddedConv(nn.Module):
    """Replication-padded conv (+ optional ReLU) with Kaiming-normal weights (ATOMMIC ``ConvNonlinear``)."""

    def __init__(self, cin: int, cout: int, kernel: int, dilation: int, bias: bool, relu: bool) -> None:
        super().__init__()
        self.pad = nn.ReplicationPad2d(dilation * (kernel - 1) // 2)
        self.conv = nn.Conv2d(cin, cout, kernel, dilation=dilation, bias=bias)
        self.relu = relu
        nn.init.kaiming_normal_(self.conv.weight, nonlinearity="relu")
        if bias:
            nn.init.zeros_(self.conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(self.pad(x))
        return torch.relu(x) if self.relu else x


class RIMBlock(nn.Module):
    """One RIM: a two-layer conv-RNN applied for ``num_steps`` time steps with shared weights.

    Args:
        num_steps: time steps ``T``.
        hidden_channels: channels of the convs and of the recurrent states.
        cell: recurrent cell type.
        sigma: noise scale of the log-likelihood gradient.
    """

    def __init__(self, num_steps: int, hidden_channels: int, cell: CellType, sigma: float = 1.0) -> None:
        super().__init__()
        f = hidden_channels
        self.num_steps = num_steps
        self.sigma = sigma
        self.convs = nn.ModuleList(
            [_PaddedConv(4, f, 5, 1, bias=True, relu=True), _PaddedConv(f, f, 3, 2, bias=True, relu=True)]
        )
        self.cells = nn.ModuleList([make_cell(cell, f, f, kernel_size=1), make_cell(cell, f, f, kernel_size=1)])
        self.out = _PaddedConv(f, 2, 3, 1, bias=False, relu=False)

    def forward(
        self,
        eta: torch.Tensor,
        masked_kspace: torch.Tensor,
        mask: torch.Tensor,
        sens_maps: torch.Tensor,
        hidden: Hidden | None = None,
    ) -> tuple[list[torch.Tensor], Hidden]:
        """Run the time steps.

        Args:
            eta: complex initial image ``[B, H, W]``.
            masked_kspace: complex k-space ``y`` ``[B, C, H, W]``.
            mask: bool mask broadcastable to the k-space.
            sens_maps: complex coil maps ``[B, C, H, W]``.
            hidden: one state ``[B, f, H, W]`` (or None = zeros) per recurrent layer.

        Returns:
            ``(etas, hidden)``: the ``T`` complex estimates ``[B, H, W]`` and the final states.
        """
        hidden = list(hidden) if hidden is not None else [None] * len(self.cells)
        etas = []
        for _ in range(self.num_steps):
            grad = log_likelihood_gradient(eta, masked_kspace, sens_maps, mask, self.sigma)
            x = torch.cat([complex_to_channels(eta), complex_to_channels(grad)], dim=1)
            for i, (conv, cell) in enumerate(zip(self.convs, self.cells, strict=True)):
                hidden[i] = cell(conv(x), hidden[i])
                x = hidden[i]
            eta = eta + channels_to_complex(self.out(x))
            etas.append(eta)
        return etas, hidden


@dataclass
class RIMConfig:
    """Configuration of :class:`RIM` (defaults: ATOMMIC CC359 ``rim.yaml``: GRU, 64 filters, 8 steps).

    Attributes:
        num_steps: time steps ``T``.
        hidden_channels: conv / recurrent channels ``f``.
        cell: ``"gru"``, ``"mgu"`` or ``"indrnn"``.
        sigma: noise scale of the log-likelihood gradient.
        image_init: initial estimate, ``"sense"`` or ``"zero"``.
    """

    num_steps: int = 8  # T
    hidden_channels: int = 64
    cell: CellType = field(default=CellType.GRU, metadata={"enum": CellType})
    sigma: float = 1.0
    image_init: ImageInit = field(default=ImageInit.SENSE, metadata={"enum": ImageInit})

    def __post_init__(self) -> None:
        coerce_enums(self)
        if self.num_steps < 1 or self.hidden_channels < 1:
            raise ValueError(
                f"num_steps and hidden_channels must be positive; got {self.num_steps}, {self.hidden_channels}"
            )
        if self.sigma <= 0:
            raise ValueError(f"sigma must be positive; got {self.sigma}")


class RIM(nn.Module):
    """Recurrent inference machine with implicit data consistency.

    Args:
        config: the configuration; None uses the defaults of :class:`RIMConfig`.
    """

    def __init__(self, config: RIMConfig | None = None) -> None:
        super().__init__()
        self.config = config if config is not None else RIMConfig()
        c = self.config
        self.block = RIMBlock(c.num_steps, c.hidden_channels, c.cell, c.sigma)

    def predictions(
        self, masked_kspace: torch.Tensor, mask: torch.Tensor, sens_maps: torch.Tensor
    ) -> list[list[torch.Tensor]]:
        """Every intermediate estimate.

        Args:
            masked_kspace: complex k-space ``[B, C, H, W]``.
            mask: real mask ``[B|1, 1, 1|H, W]`` (float 0/1 or bool).
            sens_maps: complex coil maps ``[B, C, H, W]``.

        Returns:
            ``[[eta_1, ..., eta_T]]`` (one "cascade"), each a complex image ``[B, H, W]``.
        """
        sampled = check_inputs(masked_kspace, mask, sens_maps)
        eta = initial_image(masked_kspace, sampled, sens_maps, self.config.image_init)
        etas, _ = self.block(eta, masked_kspace, sampled, sens_maps)
        return [etas]

    def forward(self, masked_kspace: torch.Tensor, mask: torch.Tensor, sens_maps: torch.Tensor) -> torch.Tensor:
        """Reconstruct: the last estimate ``eta_T`` as a complex image ``[B, H, W]``."""
        return self.predictions(masked_kspace, mask, sens_maps)[-1][-1]
