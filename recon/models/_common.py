"""Helpers shared by the recurrent reconstruction models: input checks, complex <-> channel conversion, enums."""

from __future__ import annotations

import dataclasses
from enum import Enum
from typing import Any

import torch

from recon.models._fourier import FourierOps
from recon.ops.coils import sens_reduce
from recon.ops.forward import _check_mask, mask_kspace

__all__ = ["ImageInit", "check_inputs", "coerce_enums", "complex_to_channels", "channels_to_complex", "initial_image"]


class ImageInit(str, Enum):
    """Initial image estimate.

    ``sense``: the SENSE combination ``R F^-1 y``; ``zero``: zeros; ``coil_sum``: ``sum_c F^-1 y_c`` without the
    maps (DIRECT RIM ``image_initialization="zero_filled"``); ``rss_parts``: ``sqrt(sum_c Re(x_c)^2) +
    i sqrt(sum_c Im(x_c)^2)`` with ``x_c = F^-1 y_c``, the real and imaginary parts root-sum-of-squared separately
    (ATOMMIC ``coil_combination_method="RSS"`` applied to a real-pair tensor).
    """

    SENSE = "sense"
    ZERO = "zero"
    COIL_SUM = "coil_sum"
    RSS_PARTS = "rss_parts"


def complex_to_channels(x: torch.Tensor) -> torch.Tensor:
    """Complex ``[B, H, W]`` -> real ``[B, 2, H, W]`` (real, imaginary)."""
    return torch.stack([x.real, x.imag], dim=1)


def channels_to_complex(x: torch.Tensor) -> torch.Tensor:
    """Real ``[B, 2, H, W]`` -> complex ``[B, H, W]`` (complex64 for low-precision input, e.g. a bf16 conv output
    under autocast: FFTs and data consistency stay in full precision)."""
    if x.dtype in (torch.bfloat16, torch.float16):
        x = x.float()
    return torch.complex(x[:, 0], x[:, 1])


def check_inputs(masked_kspace: torch.Tensor, mask: torch.Tensor, sens_maps: torch.Tensor) -> torch.Tensor:
    """Validate the model inputs and return the mask as bool.

    Args:
        masked_kspace: complex k-space ``[B, C, H, W]``.
        mask: real mask broadcastable to it, e.g. ``[B|1, 1, 1|H, W]``.
        sens_maps: complex coil maps ``[B, C, H, W]``.

    Raises:
        ValueError: naming the argument whose type or shape is wrong.
    """
    for name, value in (("masked_kspace", masked_kspace), ("sens_maps", sens_maps)):
        if not isinstance(value, torch.Tensor) or not torch.is_complex(value) or value.ndim != 4:
            raise ValueError(
                f"{name} must be a complex tensor [B, C, H, W]; got "
                f"{getattr(value, 'dtype', type(value).__name__)} {tuple(getattr(value, 'shape', ()))}"
            )
    if sens_maps.shape != masked_kspace.shape:
        raise ValueError(
            f"sens_maps {tuple(sens_maps.shape)} must have the shape of masked_kspace {tuple(masked_kspace.shape)}"
        )
    return _check_mask(mask, masked_kspace.shape)


def initial_image(
    masked_kspace: torch.Tensor,
    mask: torch.Tensor,
    sens_maps: torch.Tensor,
    init: ImageInit,
    ops: FourierOps | None = None,
) -> torch.Tensor:
    """The initial complex image ``[B, H, W]`` (``ops``: the model's FFT convention; None = centred ortho)."""
    if init == ImageInit.ZERO:
        return masked_kspace.new_zeros(masked_kspace.shape[:1] + masked_kspace.shape[2:])
    kspace = mask_kspace(masked_kspace, mask)
    if init == ImageInit.SENSE:
        return sens_reduce(kspace, sens_maps) if ops is None else ops.reduce(kspace, sens_maps)
    coil_images = (ops or FourierOps()).ifft(kspace)
    if init == ImageInit.COIL_SUM:
        return coil_images.sum(-3)
    return torch.complex(coil_images.real.pow(2).sum(-3).sqrt(), coil_images.imag.pow(2).sum(-3).sqrt())


def coerce_enums(config: Any) -> None:
    """Convert the str values of a config dataclass's enum-typed fields to their enum (ValueError lists choices)."""
    for field in dataclasses.fields(config):
        enum_type = field.metadata.get("enum")
        if enum_type is None:
            continue
        value = getattr(config, field.name)
        try:
            setattr(config, field.name, enum_type(value))
        except ValueError:
            raise ValueError(
                f"{field.name}={value!r} is not valid; choose one of {[e.value for e in enum_type]}"
            ) from None
