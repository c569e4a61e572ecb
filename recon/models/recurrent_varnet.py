"""Recurrent variational network (RecurrentVarNet): a k-space-domain recurrent unrolled scheme.

With ``y`` the measured k-space, ``M`` the mask, ``F`` the centred FFT, ``E`` / ``R`` SENSE expand / reduce:

    k^0 = y,    k^{t+1} = k^t - alpha_t M (k^t - y) + F E(w_t),    (w_t, h_{t+1}) = H_t(R F^-1 k^t, h_t)

``alpha_t`` is a learned scalar (initialised to 1) and ``H_t`` a convolutional GRU stack (:class:`ConvGRUStack`; one
per step, or one shared by all steps). ``h_0`` is zeros or, with ``learned_initializer``, the output of the recurrent
state initialiser (:class:`RecurrentInit`, a dilated conv stack on the SENSE image, optionally multiscale). The image
of step ``t`` is ``R F^-1 k^t``.

Source: Yiasemis et al., "Recurrent variational network: a deep learning inverse problem solver applied to the task of
accelerated MRI reconstruction", CVPR 2022, arXiv 2111.09639; structure as DIRECT ``nn/recurrentvarnet``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from recon.models._common import channels_to_complex, check_inputs, complex_to_channels
from recon.models._fourier import FFT_NORMALIZATIONS, FourierOps, NativeData
from recon.models.blocks import ConvGRUCell

__all__ = ["ConvGRUStack", "RecurrentInit", "RecurrentVarNet", "RecurrentVarNetBlock", "RecurrentVarNetConfig"]


def _padded_conv(cin: int, cout: int, kernel: int, dilation: int = 1) -> nn.Sequential:
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
            convs.append(_padded_conv(in_channels if i == 0 else hidden_channels, hidden_channels, kernel, dilation))
            cells.append(ConvGRUCell(hidden_channels, hidden_channels, 1, reset_before_conv=True, reset_gate_bias=-1.0))
        self.convs = nn.ModuleList(convs)
        self.cells = nn.ModuleList(cells)
        self.out = _padded_conv(hidden_channels, out_channels, 3)

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
            [_padded_conv(ci, co, 3, d) for ci, co, d in zip(cins, channels, dilations, strict=True)]
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


class RecurrentVarNetBlock(nn.Module):
    """One step ``k - alpha M (k - y) + F E(w)``, ``(w, h') = H(R F^-1 k, h)``.

    Args:
        hidden_channels: channels of the GRU stack.
        num_layers: recurrent layers of the GRU stack.
        state_relu: see :class:`ConvGRUStack`.
        norm_groups: see :class:`ConvGRUStack`.
        ops: the FFT convention (None: centred orthonormal, :mod:`recon.ops`).
    """

    def __init__(
        self,
        hidden_channels: int,
        num_layers: int,
        state_relu: bool = False,
        norm_groups: int = 0,
        ops: FourierOps | None = None,
    ) -> None:
        super().__init__()
        self.ops = ops or FourierOps()
        self.learning_rate = nn.Parameter(torch.tensor(1.0))  # alpha_t
        self.regularizer = ConvGRUStack(2, hidden_channels, 2, num_layers, state_relu, norm_groups)

    def forward(
        self,
        kspace: torch.Tensor,
        masked_kspace: torch.Tensor,
        mask: torch.Tensor,
        sens_maps: torch.Tensor,
        hidden: list[torch.Tensor] | None,
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """One step on complex k-space ``[B, C, H, W]``; returns ``(new k-space, new states)``."""
        native = self.ops.native(masked_kspace, mask, sens_maps)
        image = self.ops.reduce(kspace, sens_maps)
        kspace, hidden = self.native_step(self.ops.to_native(kspace), image, native, hidden)
        return self.ops.from_native(kspace), hidden

    def native_step(
        self, kspace: torch.Tensor, image: torch.Tensor, native: NativeData, hidden: list[torch.Tensor] | None
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """:meth:`forward` on native-order k-space ``[B, C, H, W]`` and data (:meth:`FourierOps.native`), given the
        centred image ``R F^-1 k`` ``[B, H, W]`` the caller has already computed; returns native-order k-space."""
        update, hidden = self.regularizer(complex_to_channels(image), hidden)
        dc = torch.where(native.mask, kspace - native.kspace, kspace.new_zeros(()))
        expanded = self.ops.native_expand(self.ops.to_native(channels_to_complex(update)), native.sens)
        return kspace - self.learning_rate * dc + expanded, hidden


@dataclass
class RecurrentVarNetConfig:
    """Configuration of :class:`RecurrentVarNet` (defaults: DIRECT ``RecurrentVarNetConfig``).

    Attributes:
        num_steps: number of recurrent steps ``T``.
        hidden_channels: channels of the GRU stacks.
        num_layers: recurrent layers per GRU stack.
        no_parameter_sharing: one block per step (True) or one block shared by all steps (False).
        learned_initializer: initialise the states with :class:`RecurrentInit` on the SENSE image (else zeros).
        initializer_channels: channels of the initialiser's conv stack.
        initializer_dilations: its dilations.
        initializer_multiscale: number of trailing initialiser feature maps concatenated.
        initializer_input: what the initialiser sees: ``"image"`` (the SENSE image ``R F^-1 y``), ``"sense_kspace"``
            (its k-space ``F R F^-1 y``, DIRECT's / ATOMMIC's ``initializer_initialization="sense"``) or
            ``"coil_sum_kspace"`` (``sum_c y_c``, their ``"zero_filled"``).
        gru_state_relu: ReLU on each GRU state before the next layer's conv (DIRECT / ATOMMIC ``Conv2dGRU``).
        normalized: group-normalise the input of each GRU stack (DIRECT ``NormConv2dGRU``, 2 groups).
        output: the image of each step, ``"sense"`` (``R F^-1 k^t``) or ``"rss_parts"`` (ATOMMIC's RSS of the
            real-pair coil images, :class:`recon.models.ImageInit`).
        fft_centered: centred FFT (as :mod:`recon.ops`); False for an uncentred one (ATOMMIC ``fft_centered``).
        fft_normalization: ``"ortho"``, ``"backward"`` or ``"forward"`` (ATOMMIC ``fft_normalization``).
    """

    num_steps: int = 15  # T
    hidden_channels: int = 64
    num_layers: int = 4
    no_parameter_sharing: bool = True
    learned_initializer: bool = True
    initializer_channels: tuple[int, ...] = field(default=(32, 32, 64, 64))
    initializer_dilations: tuple[int, ...] = field(default=(1, 1, 2, 4))
    initializer_multiscale: int = 1
    initializer_input: str = "image"
    gru_state_relu: bool = False
    normalized: bool = False
    output: str = "sense"
    fft_centered: bool = True
    fft_normalization: str = "ortho"

    def __post_init__(self) -> None:
        choices = {
            "initializer_input": ("image", "sense_kspace", "coil_sum_kspace"),
            "output": ("sense", "rss_parts"),
            "fft_normalization": FFT_NORMALIZATIONS,
        }
        for name, valid in choices.items():
            if getattr(self, name) not in valid:
                raise ValueError(f"{name}={getattr(self, name)!r} is not valid; choose one of {list(valid)}")
        for name in ("num_steps", "hidden_channels", "num_layers", "initializer_multiscale"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive; got {getattr(self, name)}")
        self.initializer_channels = tuple(self.initializer_channels)
        self.initializer_dilations = tuple(self.initializer_dilations)
        if len(self.initializer_channels) != len(self.initializer_dilations):
            raise ValueError(
                f"initializer_channels {self.initializer_channels} and initializer_dilations "
                f"{self.initializer_dilations} must have the same length"
            )
        if self.initializer_multiscale > len(self.initializer_channels):
            raise ValueError(
                f"initializer_multiscale must be at most {len(self.initializer_channels)}; "
                f"got {self.initializer_multiscale}"
            )


class RecurrentVarNet(nn.Module):
    """Recurrent variational network.

    Args:
        config: the configuration; None uses the defaults of :class:`RecurrentVarNetConfig`.
    """

    def __init__(self, config: RecurrentVarNetConfig | None = None) -> None:
        super().__init__()
        self.config = config if config is not None else RecurrentVarNetConfig()
        c = self.config
        num_blocks = c.num_steps if c.no_parameter_sharing else 1
        self.ops = FourierOps(c.fft_centered, c.fft_normalization)
        norm_groups = 2 if c.normalized else 0
        self.blocks = nn.ModuleList(
            [
                RecurrentVarNetBlock(c.hidden_channels, c.num_layers, c.gru_state_relu, norm_groups, self.ops)
                for _ in range(num_blocks)
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

    def predictions(
        self, masked_kspace: torch.Tensor, mask: torch.Tensor, sens_maps: torch.Tensor
    ) -> list[list[torch.Tensor]]:
        """Every intermediate estimate.

        Args:
            masked_kspace: complex k-space ``[B, C, H, W]``.
            mask: real mask ``[B|1, 1, 1|H, W]`` (float 0/1 or bool).
            sens_maps: complex coil maps ``[B, C, H, W]``.

        Returns:
            ``[[x_1, ..., x_T]]`` (one "cascade"), ``x_t = R F^-1 k^t`` complex ``[B, H, W]``.
        """
        sampled = check_inputs(masked_kspace, mask, sens_maps)
        ops = self.ops
        native = ops.native(masked_kspace, sampled, sens_maps)
        kspace = torch.where(native.mask, native.kspace, native.kspace.new_zeros(()))
        # R F^-1 k of the current k-space: the input of the next block and (output "sense") the step's estimate
        image = ops.from_native(ops.native_reduce(kspace, native.sens))
        hidden = None
        if self.initializer is not None:
            hidden = self.initializer(complex_to_channels(self._initializer_input(kspace, image)))
        images = []
        for t in range(self.config.num_steps):
            block = self.blocks[t if self.config.no_parameter_sharing else 0]
            kspace, hidden = block.native_step(kspace, image, native, hidden)
            image = ops.from_native(ops.native_reduce(kspace, native.sens))
            images.append(image if self.config.output == "sense" else self._rss_parts(kspace))
        return [images]

    def _initializer_input(self, kspace: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        """What the initialiser sees, from native-order k-space ``[B, C, H, W]`` and its image ``R F^-1 k``."""
        source = self.config.initializer_input
        if source == "coil_sum_kspace":
            return self.ops.from_native(kspace.sum(-3))
        return self.ops.fft(image) if source == "sense_kspace" else image

    def _rss_parts(self, kspace: torch.Tensor) -> torch.Tensor:
        """ATOMMIC's RSS of the real-pair coil images of native-order k-space ``[B, C, H, W]`` -> ``[B, H, W]``."""
        coil_images = self.ops.native_ifft(kspace)
        parts = torch.complex(coil_images.real.pow(2).sum(-3).sqrt(), coil_images.imag.pow(2).sum(-3).sqrt())
        return self.ops.from_native(parts)

    def forward(self, masked_kspace: torch.Tensor, mask: torch.Tensor, sens_maps: torch.Tensor) -> torch.Tensor:
        """Reconstruct: ``R F^-1 k^T``, complex ``[B, H, W]`` (arguments as :meth:`predictions`)."""
        return self.predictions(masked_kspace, mask, sens_maps)[-1][-1]
