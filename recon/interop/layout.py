"""Data-layout conversions at the boundary with DIRECT / ATOMMIC.

Both projects store complex data as real pairs with a trailing dimension of 2: k-space and coil maps
``(N, coil, H, W, 2)``, masks ``(N, 1, H, W, 1)`` (DIRECT) or broadcastable to the k-space (ATOMMIC), images
``(N, H, W, 2)``. Our models take complex ``[N, C, H, W]`` k-space and maps and a real mask ``[N|1, 1, 1|H, W]``.
FFT conventions are not changed here: DIRECT's (centred, orthonormal) are ours; an ATOMMIC model's own
``fft_centered`` / ``fft_normalization`` become config fields of our model (see :mod:`recon.interop.atommic`), so
its k-space and mask are used as they are.
"""

from __future__ import annotations

import torch

__all__ = ["from_real_pair", "to_real_pair_image"]


def from_real_pair(
    masked_kspace: torch.Tensor, mask: torch.Tensor, sens_maps: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """DIRECT / ATOMMIC inputs -> ours.

    Args:
        masked_kspace: real ``(N, C, H, W, 2)``.
        mask: real or bool ``(N, 1, H, W, 1)`` (any shape broadcastable to ``(N, C, H, W, 1)``).
        sens_maps: real ``(N, C, H, W, 2)``.

    Returns:
        ``(masked_kspace [N, C, H, W] complex, mask [N, 1, H, W] float, sens_maps [N, C, H, W] complex)``.

    Raises:
        ValueError: naming the argument whose shape is wrong.
    """
    for name, value in (("masked_kspace", masked_kspace), ("sens_maps", sens_maps)):
        if torch.is_complex(value) or value.ndim != 5 or value.shape[-1] != 2:
            raise ValueError(f"{name} must be a real tensor (N, coil, H, W, 2); got {value.dtype} {tuple(value.shape)}")
    if mask.ndim != 5 or mask.shape[-1] != 1:
        raise ValueError(f"mask must be (N, 1, H, W, 1); got {tuple(mask.shape)}")
    kspace = torch.view_as_complex(masked_kspace.contiguous())
    sens = torch.view_as_complex(sens_maps.contiguous())
    return kspace, mask[..., 0].to(masked_kspace.dtype), sens


def to_real_pair_image(image: torch.Tensor) -> torch.Tensor:
    """Our complex image ``[N, H, W]`` -> DIRECT / ATOMMIC ``(N, H, W, 2)``."""
    if not torch.is_complex(image):
        raise ValueError(f"image must be complex [N, H, W]; got {image.dtype}")
    return torch.view_as_real(image)
