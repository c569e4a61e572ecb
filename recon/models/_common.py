"""Helpers shared by the recurrent reconstruction models: input checks, complex <-> channel conversion, enums."""

from __future__ import annotations

import dataclasses
from enum import Enum
from typing import Any

import torch

from recon.ops.coils import sens_reduce
from recon.ops.forward import _check_mask, mask_kspace

__all__ = ["ImageInit", "check_inputs", "coerce_enums", "complex_to_channels", "channels_to_complex", "initial_image"]


class ImageInit(str, Enum):
    """Initial image estimate: SENSE combination ``R F^-1 y`` or zeros."""

    SENSE = "sense"
    ZERO = "zero"


def complex_to_channels(x: torch.Tensor) -> torch.Tensor:
    """Complex ``[B, H, W]`` -> real ``[B, 2, H, W]`` (real, imaginary)."""
    return torch.stack([x.real, x.imag], dim=1)


def channels_to_complex(x: torch.Tensor) -> torch.Tensor:
    """Real ``[B, 2, H, W]`` -> complex ``[B, H, W]``."""
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
    masked_kspace: torch.Tensor, mask: torch.Tensor, sens_maps: torch.Tensor, init: ImageInit
) -> torch.Tensor:
    """The initial complex image ``[B, H, W]``."""
    if init == ImageInit.ZERO:
        return masked_kspace.new_zeros(masked_kspace.shape[:1] + masked_kspace.shape[2:])
    return sens_reduce(mask_kspace(masked_kspace, mask), sens_maps)


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
