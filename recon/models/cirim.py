"""Cascades of independently recurrent inference machines (CIRIM).

``num_cascades`` RIM blocks (:class:`recon.models.rim.RIMBlock`) with independent weights. The recurrent states are
carried from cascade to cascade; with ``keep_prediction`` a cascade starts from the previous cascade's last estimate
(else from the initial image). Data consistency is implicit (the log-likelihood gradient fed to each cell) and, with
``explicit_dc``, additionally explicit: after each cascade every estimate ``eta_t`` is mapped to k-space, corrected by
a learned soft DC ``k - lambda M (k - y)`` (one ``lambda`` per cascade, :class:`recon.layers.SoftDataConsistency`)
and mapped back with ``R F^-1``.

Source: Karkalousos et al., "Assessment of data consistency through cascades of independently recurrent inference
machines for fast and robust accelerated MRI reconstruction", Phys. Med. Biol. 67(12), 2022, arXiv 2111.15498;
structure as ATOMMIC ``nn/cirim.py`` and DIRECT ``nn/cirim``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from recon.layers.dc import SoftDataConsistency
from recon.models._common import ImageInit, check_inputs, coerce_enums, initial_image
from recon.models._fourier import FFT_NORMALIZATIONS, FourierOps, NativeData
from recon.models.blocks import CellType
from recon.models.rim import RIMBlock

__all__ = ["CIRIM", "CIRIMConfig"]


@dataclass
class CIRIMConfig:
    """Configuration of :class:`CIRIM` (defaults: ATOMMIC fastMRI-brain ``cirim.yaml``: IndRNN, 64 filters, 5x8).

    Attributes:
        num_cascades: number of RIM blocks with independent weights.
        num_steps: time steps ``T`` per cascade.
        hidden_channels: conv / recurrent channels ``f``.
        cell: ``"indrnn"`` (default), ``"gru"`` or ``"mgu"``.
        keep_prediction: start each cascade from the previous cascade's last estimate.
        explicit_dc: add the learned soft DC after each cascade (implicit DC is always on).
        sigma: noise scale of the log-likelihood gradient.
        image_init: initial estimate, ``"sense"``, ``"zero"``, ``"coil_sum"`` or ``"rss_parts"`` (:class:`ImageInit`).
        explicit_dc_form: ``"soft"`` (``R F^-1 (k - lambda M (k - y))`` with ``k = F E eta_t``) or
            ``"kspace_residual"``, DIRECT's / ATOMMIC's explicit DC as coded: ``k_t = y - lambda M (k_in - y) -
            F E eta_t`` with ``k_in`` the cascade's input k-space (``y`` for the first cascade, else the previous
            cascade's last ``k_t``), estimate ``R F^-1 k_t``, and the next cascade starts from it.
        carry_hidden: pass the recurrent states from cascade to cascade (False: every cascade starts from zero
            states, as DIRECT's CIRIM with ``no_parameter_sharing=True``).
        output_relu: ReLU after each block's output conv (DIRECT's CIRIM).
        fixed_step_input: within a cascade every time step updates the cascade's input estimate (DIRECT's CIRIM:
            ``eta_t = eta_in + delta_t``, see :class:`~recon.models.rim.RIMBlock`).
        fft_centered: centred FFT (as :mod:`recon.ops`); False for an uncentred one (ATOMMIC ``fft_centered``).
        fft_normalization: ``"ortho"``, ``"backward"`` or ``"forward"`` (ATOMMIC ``fft_normalization``).
    """

    num_cascades: int = 5
    num_steps: int = 8  # T
    hidden_channels: int = 64
    cell: CellType = field(default=CellType.INDRNN, metadata={"enum": CellType})
    keep_prediction: bool = True
    explicit_dc: bool = False
    sigma: float = 1.0
    image_init: ImageInit = field(default=ImageInit.SENSE, metadata={"enum": ImageInit})
    explicit_dc_form: str = "soft"
    carry_hidden: bool = True
    output_relu: bool = False
    fixed_step_input: bool = False
    fft_centered: bool = True
    fft_normalization: str = "ortho"

    def __post_init__(self) -> None:
        coerce_enums(self)
        choices = {"explicit_dc_form": ("soft", "kspace_residual"), "fft_normalization": FFT_NORMALIZATIONS}
        for name, valid in choices.items():
            if getattr(self, name) not in valid:
                raise ValueError(f"{name}={getattr(self, name)!r} is not valid; choose one of {list(valid)}")
        for name in ("num_cascades", "num_steps", "hidden_channels"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive; got {getattr(self, name)}")
        if self.sigma <= 0:
            raise ValueError(f"sigma must be positive; got {self.sigma}")


class CIRIM(nn.Module):
    """Cascades of independently recurrent inference machines.

    Args:
        config: the configuration; None uses the defaults of :class:`CIRIMConfig`.
    """

    def __init__(self, config: CIRIMConfig | None = None) -> None:
        super().__init__()
        self.config = config if config is not None else CIRIMConfig()
        c = self.config
        self.ops = FourierOps(c.fft_centered, c.fft_normalization)
        self.cascades = nn.ModuleList(
            [
                RIMBlock(c.num_steps, c.hidden_channels, c.cell, c.sigma, c.output_relu, self.ops, c.fixed_step_input)
                for _ in range(c.num_cascades)
            ]
        )
        self.dc = nn.ModuleList([SoftDataConsistency() for _ in range(c.num_cascades)]) if c.explicit_dc else None

    def predictions(
        self, masked_kspace: torch.Tensor, mask: torch.Tensor, sens_maps: torch.Tensor
    ) -> list[list[torch.Tensor]]:
        """Every intermediate estimate.

        Args:
            masked_kspace: complex k-space ``[B, C, H, W]``.
            mask: real mask ``[B|1, 1, 1|H, W]`` (float 0/1 or bool).
            sens_maps: complex coil maps ``[B, C, H, W]``.

        Returns:
            One list per cascade of the ``T`` complex estimates ``[B, H, W]`` (after explicit DC when enabled).
        """
        return self._run(masked_kspace, mask, sens_maps, every_step=True)

    def _run(
        self, masked_kspace: torch.Tensor, mask: torch.Tensor, sens_maps: torch.Tensor, every_step: bool
    ) -> list[list[torch.Tensor]]:
        """The cascades; with ``every_step=False`` explicit DC maps only each cascade's last estimate, the one
        the next cascade and the output use (the list then holds just that estimate)."""
        sampled = check_inputs(masked_kspace, mask, sens_maps)
        c = self.config
        ops = self.ops
        eta0 = initial_image(masked_kspace, sampled, sens_maps, c.image_init, ops)
        native = ops.native(masked_kspace, sampled, sens_maps)
        zero = native.kspace.new_zeros(())
        eta, hidden, kspace_in = eta0, None, native.kspace
        residual_form = self.dc is not None and c.explicit_dc_form == "kspace_residual"
        outputs: list[list[torch.Tensor]] = []
        for i, block in enumerate(self.cascades):
            etas, hidden = block(eta, masked_kspace, sampled, sens_maps, hidden if c.carry_hidden else None, native)
            if self.dc is not None and not every_step:
                etas = etas[-1:]
            if residual_form:
                # y - lambda M (k_in - y) - F E eta_t, the sign of the last term as in the reference code
                weight = self.dc[i].dc_weight
                base = native.kspace - weight * torch.where(native.mask, kspace_in - native.kspace, zero)
                kspaces = [base - ops.native_expand(ops.to_native(e), native.sens) for e in etas]
                etas = [ops.from_native(ops.native_reduce(k, native.sens)) for k in kspaces]
                kspace_in = kspaces[-1] if c.keep_prediction else native.kspace
            elif self.dc is not None:
                etas = [self._soft_dc(e, self.dc[i], native) for e in etas]
            outputs.append(etas)
            eta = etas[-1] if c.keep_prediction else eta0
        return outputs

    def _soft_dc(self, eta: torch.Tensor, dc: SoftDataConsistency, native: NativeData) -> torch.Tensor:
        """``R F^-1 (k - lambda M (k - y))`` with ``k = F E eta``; the data term is elementwise, so it reads the same
        on native-order k-space."""
        k = self.ops.native_expand(self.ops.to_native(eta), native.sens)
        return self.ops.from_native(self.ops.native_reduce(dc(k, native.kspace, native.mask), native.sens))

    def forward(self, masked_kspace: torch.Tensor, mask: torch.Tensor, sens_maps: torch.Tensor) -> torch.Tensor:
        """Reconstruct: the last estimate of the last cascade, complex ``[B, H, W]``."""
        return self._run(masked_kspace, mask, sens_maps, every_step=False)[-1][-1]
