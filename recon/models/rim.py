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

from recon.layers.dc import LogLikelihoodGradient
from recon.models._common import (
    ImageInit,
    channels_to_complex,
    check_inputs,
    coerce_enums,
    complex_to_channels,
    initial_image,
)
from recon.models._fourier import FFT_NORMALIZATIONS, FourierOps, NativeData
from recon.models.blocks import CellType, ConvGRUStack, RecurrentInit, make_cell

__all__ = ["GRUStackRIMBlock", "RIM", "RIMBlock", "RIMConfig"]

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
        output_relu: ReLU after the output conv (DIRECT's CIRIM applies one, so its updates are non-negative).
        ops: the FFT convention (None: centred orthonormal, :mod:`recon.ops`).
        fixed_step_input: every step updates the block's INPUT estimate, ``eta_t = eta_in + delta_t`` with
            ``delta_t`` computed from ``[eta_in, grad(eta_in)]`` and the evolving states (DIRECT's CIRIM block);
            default: ``eta_t = eta_{t-1} + delta_t``.
    """

    def __init__(
        self,
        num_steps: int,
        hidden_channels: int,
        cell: CellType,
        sigma: float = 1.0,
        output_relu: bool = False,
        ops: FourierOps | None = None,
        fixed_step_input: bool = False,
    ) -> None:
        super().__init__()
        f = hidden_channels
        self.num_steps = num_steps
        self.fixed_step_input = fixed_step_input
        self.sigma = sigma
        self.ops = ops or FourierOps()
        self.data_term = LogLikelihoodGradient(sigma, ops=self.ops)
        self.convs = nn.ModuleList(
            [_PaddedConv(4, f, 5, 1, bias=True, relu=True), _PaddedConv(f, f, 3, 2, bias=True, relu=True)]
        )
        self.cells = nn.ModuleList([make_cell(cell, f, f, kernel_size=1), make_cell(cell, f, f, kernel_size=1)])
        self.out = _PaddedConv(f, 2, 3, 1, bias=False, relu=output_relu)

    def forward(
        self,
        eta: torch.Tensor,
        masked_kspace: torch.Tensor,
        mask: torch.Tensor,
        sens_maps: torch.Tensor,
        hidden: Hidden | None = None,
        native: NativeData | None = None,
    ) -> tuple[list[torch.Tensor], Hidden]:
        """Run the time steps.

        Args:
            eta: complex initial image ``[B, H, W]``.
            masked_kspace: complex k-space ``y`` ``[B, C, H, W]``.
            mask: bool mask broadcastable to the k-space.
            sens_maps: complex coil maps ``[B, C, H, W]``.
            hidden: one state ``[B, f, H, W]`` (or None = zeros) per recurrent layer.
            native: ``(masked_kspace, mask, sens_maps)`` in native order (:meth:`FourierOps.native`), when the
                caller has them already (CIRIM: once for all cascades).

        Returns:
            ``(etas, hidden)``: the ``T`` complex estimates ``[B, H, W]`` and the final states.
        """
        hidden = list(hidden) if hidden is not None else [None] * len(self.cells)
        if native is None:
            native = self.ops.native(masked_kspace, mask, sens_maps)
        etas = []
        eta_in = eta
        for _ in range(self.num_steps):
            grad = self.data_term(eta, masked_kspace, sens_maps, mask, native)
            x = torch.cat([complex_to_channels(eta), complex_to_channels(grad)], dim=1)
            for i, (conv, cell) in enumerate(zip(self.convs, self.cells, strict=True)):
                hidden[i] = cell(conv(x), hidden[i])
                x = hidden[i]
            eta = (eta_in if self.fixed_step_input else eta) + channels_to_complex(self.out(x))
            etas.append(eta)
            if self.fixed_step_input:
                eta = eta_in
        return etas, hidden


class GRUStackRIMBlock(nn.Module):
    """A RIM whose recurrent unit is a :class:`~recon.models.blocks.ConvGRUStack` (DIRECT ``nn/rim``).

    Each step feeds ``[Re eta, Im eta, Re grad, Im grad]`` to a GRU stack (``num_layers`` layers, ReLU on the states
    between layers as DIRECT's ``Conv2dGRU``) that outputs 2 channels; ``eta <- eta + out`` (or ``eta <- out``
    without skip connections). One stack per step (``no_parameter_sharing``) or one shared; the states start at
    zero or, with ``learned_initializer``, from a :class:`~recon.models.blocks.RecurrentInit` applied to
    the initial image (DIRECT ``RIMInit``).

    Args:
        config: the model's :class:`RIMConfig` (fields ``num_steps``, ``hidden_channels``, ``num_layers``,
            ``no_parameter_sharing``, ``skip_connections``, ``learned_initializer``, ``initializer_*``,
            ``normalized``, ``sigma``).
        ops: the FFT convention.
    """

    def __init__(self, config: RIMConfig, ops: FourierOps) -> None:
        super().__init__()
        c = config
        self.num_steps = c.num_steps
        self.sigma = c.sigma
        self.ops = ops
        self.data_term = LogLikelihoodGradient(c.sigma, ops=ops)
        self.skip_connections = c.skip_connections
        self.no_parameter_sharing = c.no_parameter_sharing
        norm_groups = 2 if c.normalized else 0
        self.stacks = nn.ModuleList(
            [
                ConvGRUStack(4, c.hidden_channels, 2, c.num_layers, state_relu=True, norm_groups=norm_groups)
                for _ in range(c.num_steps if c.no_parameter_sharing else 1)
            ]
        )
        self.initializer = (
            RecurrentInit(
                2,
                c.hidden_channels,
                c.initializer_channels,
                c.initializer_dilations,
                c.num_layers,
                c.initializer_multiscale,
            )
            if c.learned_initializer
            else None
        )

    def forward(
        self,
        eta: torch.Tensor,
        masked_kspace: torch.Tensor,
        mask: torch.Tensor,
        sens_maps: torch.Tensor,
        hidden: list[torch.Tensor] | None = None,
        native: NativeData | None = None,
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Run the time steps (arguments and result as :meth:`RIMBlock.forward`)."""
        if hidden is None and self.initializer is not None:
            hidden = self.initializer(complex_to_channels(eta))
        if native is None:
            native = self.ops.native(masked_kspace, mask, sens_maps)
        etas = []
        for t in range(self.num_steps):
            stack = self.stacks[t if self.no_parameter_sharing else 0]
            grad = self.data_term(eta, masked_kspace, sens_maps, mask, native)
            out, hidden = stack(torch.cat([complex_to_channels(eta), complex_to_channels(grad)], dim=1), hidden)
            eta = eta + channels_to_complex(out) if self.skip_connections else channels_to_complex(out)
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
        image_init: initial estimate, ``"sense"``, ``"zero"``, ``"coil_sum"`` or ``"rss_parts"`` (:class:`ImageInit`).
        output_relu: ReLU after the output conv of the ``"conv_rnn"`` block.
        fft_centered: centred FFT (as :mod:`recon.ops`); False for an uncentred one (ATOMMIC ``fft_centered``).
        fft_normalization: ``"ortho"``, ``"backward"`` or ``"forward"`` (ATOMMIC ``fft_normalization``).
        regularizer: ``"conv_rnn"`` (:class:`RIMBlock`: conv -> cell -> conv -> cell -> conv, ATOMMIC) or
            ``"gru_stack"`` (:class:`GRUStackRIMBlock`, DIRECT's RIM). The fields below apply to ``"gru_stack"``.
        num_layers: GRU layers of the stack (DIRECT ``depth``; at least 2).
        no_parameter_sharing: one GRU stack per time step instead of one shared by all.
        skip_connections: ``eta <- eta + out`` (else ``eta <- out``).
        learned_initializer: initialise the states with :class:`RecurrentInit` on the initial image.
        initializer_channels: channels of the initialiser's conv stack.
        initializer_dilations: its dilations.
        initializer_multiscale: number of trailing initialiser feature maps concatenated.
        normalized: group-normalised GRU stacks (DIRECT ``NormConv2dGRU``).
    """

    num_steps: int = 8  # T
    hidden_channels: int = 64
    cell: CellType = field(default=CellType.GRU, metadata={"enum": CellType})
    sigma: float = 1.0
    image_init: ImageInit = field(default=ImageInit.SENSE, metadata={"enum": ImageInit})
    output_relu: bool = False
    fft_centered: bool = True
    fft_normalization: str = "ortho"
    regularizer: str = "conv_rnn"
    num_layers: int = 2
    no_parameter_sharing: bool = False
    skip_connections: bool = True
    learned_initializer: bool = False
    initializer_channels: tuple[int, ...] = (32, 32, 64, 64)
    initializer_dilations: tuple[int, ...] = (1, 1, 2, 4)
    initializer_multiscale: int = 1
    normalized: bool = False

    def __post_init__(self) -> None:
        coerce_enums(self)
        for name, valid in (("regularizer", ("conv_rnn", "gru_stack")), ("fft_normalization", FFT_NORMALIZATIONS)):
            if getattr(self, name) not in valid:
                raise ValueError(f"{name}={getattr(self, name)!r} is not valid; choose one of {list(valid)}")
        self.initializer_channels = tuple(self.initializer_channels)
        self.initializer_dilations = tuple(self.initializer_dilations)
        if self.num_layers < 2:
            raise ValueError(f"num_layers must be at least 2; got {self.num_layers}")
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
        self.ops = FourierOps(c.fft_centered, c.fft_normalization)
        if c.regularizer == "gru_stack":
            self.block: nn.Module = GRUStackRIMBlock(c, self.ops)
        else:
            self.block = RIMBlock(c.num_steps, c.hidden_channels, c.cell, c.sigma, c.output_relu, self.ops)

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
        eta = initial_image(masked_kspace, sampled, sens_maps, self.config.image_init, self.ops)
        etas, _ = self.block(eta, masked_kspace, sampled, sens_maps)
        return [etas]

    def forward(self, masked_kspace: torch.Tensor, mask: torch.Tensor, sens_maps: torch.Tensor) -> torch.Tensor:
        """Reconstruct: the last estimate ``eta_T`` as a complex image ``[B, H, W]``."""
        return self.predictions(masked_kspace, mask, sens_maps)[-1][-1]
