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

from recon.layers.dc import soft_data_consistency
from recon.models._common import channels_to_complex, check_inputs, complex_to_channels
from recon.models._fourier import FFT_NORMALIZATIONS, FourierOps, NativeData
from recon.models.blocks import ConvGRUStack, RecurrentInit

__all__ = ["RecurrentVarNet", "RecurrentVarNetBlock", "RecurrentVarNetConfig"]


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
        # the data term is elementwise, so it reads the same in native order
        dc = soft_data_consistency(kspace, native.kspace, native.mask, self.learning_rate)
        expanded = self.ops.native_expand(self.ops.to_native(channels_to_complex(update)), native.sens)
        return dc + expanded, hidden


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
