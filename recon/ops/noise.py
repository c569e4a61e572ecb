"""Receiver noise: its level estimated from the measured k-space, and the noise floor of a root-sum-of-squares image.

fastMRI's multi-coil target is the RSS of the fully sampled, *noisy* coil images, ``sqrt(sum_c |S_c x + n_c|^2)``.
With complex Gaussian noise of standard deviation ``sigma_c`` per real / imaginary part and maps normalised to
``sum_c |S_c|^2 = 1``, its expected square is ``|x|^2 + sum_c 2 sigma_c^2``: the target carries a noise floor that a
reconstruction of ``x`` alone does not have (about 4 ``sigma`` with 8 coils, in the air as well as in the object). A
method that estimates ``x`` matches the target's definition by reporting ``sqrt(|x|^2 + b^2)`` with
``b^2 = sum_c 2 sigma_c^2`` (:func:`add_noise_floor`); ``sigma_c`` is measured on the acquired data, in the corners of
k-space where the object has almost no energy (:func:`estimate_noise_std`), the way noise is read off the periphery of
a scan without a noise pre-scan.
"""

from __future__ import annotations

import math

import torch

__all__ = ["add_noise_floor", "estimate_noise_std", "rss_noise_floor"]


def estimate_noise_std(kspace: torch.Tensor, mask: torch.Tensor | None = None, fraction: float = 0.125) -> torch.Tensor:
    """Per-coil noise standard deviation (per real / imaginary part) from the corners of k-space.

    The samples used are the acquired ones (``mask`` non-zero, or non-zero columns without a mask) in the outer
    ``fraction`` of rows at the top and bottom and the outer quarter of columns at each side (wide enough to hold
    acquired columns at any line-mask acceleration). For complex Gaussian
    noise ``|y|^2`` is exponential with mean ``2 sigma^2``, so ``sigma^2 = median(|y|^2) / (2 ln 2)``; the median
    ignores the few corner samples where the object still has energy.

    Args:
        kspace: complex k-space ``[..., C, H, W]`` (undersampled: zeros off the mask).
        mask: line or 2-D mask broadcastable to ``[..., 1, H, W]``; None uses the columns that hold non-zero samples.
        fraction: share of rows (each side) counted as the corners, in ``(0, 0.5]``.

    Returns:
        Real ``[..., C]``: ``sigma_c``.

    Raises:
        ValueError: for real input, fewer than 3 dimensions or a ``fraction`` outside ``(0, 0.5]``.
    """
    if not torch.is_complex(kspace) or kspace.ndim < 3:
        raise ValueError(f"kspace must be complex [..., C, H, W]; got {kspace.dtype} {tuple(kspace.shape)}")
    if not 0 < fraction <= 0.5:
        raise ValueError(f"fraction must be in (0, 0.5]; got {fraction}")
    height, width = kspace.shape[-2:]
    rows = max(1, math.floor(height * fraction))
    cols = max(1, width // 4)
    corner_rows = torch.zeros(height, dtype=torch.bool, device=kspace.device)
    corner_rows[:rows] = True
    corner_rows[height - rows :] = True
    corner_cols = torch.zeros(width, dtype=torch.bool, device=kspace.device)
    corner_cols[:cols] = True
    corner_cols[width - cols :] = True
    if mask is None:
        acquired = (kspace != 0).flatten(0, -2).any(dim=0)  # [W]: columns with any sample
        region = corner_rows[:, None] & (corner_cols & acquired)[None, :]
    else:
        sampled = torch.broadcast_to(mask.to(kspace.device) != 0, (*mask.shape[:-2], height, width))
        sampled = sampled.reshape(-1, height, width).any(dim=0)
        region = corner_rows[:, None] & corner_cols[None, :] & sampled
    power = kspace.abs().square()[..., region]  # [..., C, N]
    if power.shape[-1] == 0:
        return torch.zeros(kspace.shape[:-2], dtype=power.dtype, device=kspace.device)
    return torch.sqrt(power.median(dim=-1).values / (2.0 * math.log(2.0)))


def rss_noise_floor(kspace: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """``b = sqrt(sum_c 2 sigma_c^2)``: the noise floor of the RSS of the fully sampled data, ``[...]``.

    Args:
        kspace: complex k-space ``[..., C, H, W]``.
        mask: as :func:`estimate_noise_std`.
    """
    sigma = estimate_noise_std(kspace, mask)
    return torch.sqrt((2.0 * sigma.square()).sum(dim=-1))


def add_noise_floor(magnitude: torch.Tensor, floor: torch.Tensor | float) -> torch.Tensor:
    """``sqrt(|m|^2 + b^2)``, elementwise (differentiable everywhere, also at ``m = b = 0``).

    Args:
        magnitude: image ``[B, H, W]``, real (a magnitude) or complex.
        floor: ``b``, a float or ``[B]``.

    Returns:
        Real ``[B, H, W]``.
    """
    power = magnitude.real.square() + magnitude.imag.square() if torch.is_complex(magnitude) else magnitude.square()
    floor = torch.as_tensor(floor, dtype=power.dtype, device=power.device)
    if floor.ndim == 1:
        floor = floor[:, None, None]
    # the tiny constant keeps the gradient finite where both terms vanish (noise-free data, empty background)
    return torch.sqrt(power + floor.square() + 1e-12)
