"""Centred, orthonormal 2-D Fourier transforms.

Complex representation, for all of ``recon``: native complex tensors (``torch.complex64``, or ``complex128`` in
tests). Real ``(..., 2)`` layouts (fastMRI, DIRECT, MONAI) are converted only at the data boundary with
:func:`to_complex` / :func:`to_real_pair`. Spatial dimensions are always the last two, ``[..., H, W]``.

The transform is ``F x = fftshift(fft2(ifftshift(x), norm="ortho"))`` (fastMRI's ``fft2c``), so ``F`` is unitary:
``ifft2c(fft2c(x)) == x`` and ``||F x|| == ||x||``.
"""

from __future__ import annotations

import torch

__all__ = ["fft2c", "ifft2c", "to_complex", "to_real_pair"]

_DIMS = (-2, -1)


def _check_complex(x: torch.Tensor, name: str) -> None:
    if not torch.is_complex(x):
        raise ValueError(f"{name} must be a complex tensor [..., H, W]; got dtype {x.dtype} (use to_complex first)")
    if x.ndim < 2:
        raise ValueError(f"{name} must have at least 2 dimensions [..., H, W]; got shape {tuple(x.shape)}")


def fft2c(image: torch.Tensor) -> torch.Tensor:
    """Centred orthonormal 2-D FFT over the last two dimensions: image ``[..., H, W]`` -> k-space ``[..., H, W]``."""
    _check_complex(image, "image")
    x = torch.fft.ifftshift(image, dim=_DIMS)
    x = torch.fft.fft2(x, dim=_DIMS, norm="ortho")
    return torch.fft.fftshift(x, dim=_DIMS)


def ifft2c(kspace: torch.Tensor) -> torch.Tensor:
    """Centred orthonormal inverse 2-D FFT: k-space ``[..., H, W]`` -> image ``[..., H, W]``."""
    _check_complex(kspace, "kspace")
    x = torch.fft.ifftshift(kspace, dim=_DIMS)
    x = torch.fft.ifft2(x, dim=_DIMS, norm="ortho")
    return torch.fft.fftshift(x, dim=_DIMS)


def to_complex(x: torch.Tensor) -> torch.Tensor:
    """Real ``[..., 2]`` (real, imaginary) -> complex ``[...]``."""
    if x.shape[-1] != 2 or torch.is_complex(x):
        raise ValueError(f"expected a real tensor with a trailing dimension of 2; got {x.dtype} {tuple(x.shape)}")
    return torch.view_as_complex(x.contiguous())


def to_real_pair(x: torch.Tensor) -> torch.Tensor:
    """Complex ``[...]`` -> real ``[..., 2]`` (real, imaginary)."""
    if not torch.is_complex(x):
        raise ValueError(f"expected a complex tensor; got {x.dtype}")
    return torch.view_as_real(x)
