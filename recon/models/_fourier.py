"""Fourier conventions of the recurrent models: the operators a model uses for ``F``, expand, reduce and the
log-likelihood gradient.

All of ``recon`` uses the centred orthonormal FFT (:mod:`recon.ops.fft`). Checkpoints trained elsewhere may assume
another convention: ATOMMIC's ``fft_centered`` / ``fft_normalization`` settings (its CC359 configs use an
uncentred FFT with ``"backward"`` normalisation). :class:`FourierOps` gives a model the operators of one
convention; the default ``(centered=True, normalization="ortho")`` calls :mod:`recon.ops` unchanged, so models
built with the defaults compute exactly what they did before these options existed.

Centring: ``F x = fftshift(fft2(ifftshift(x)))`` when centred, plain ``fft2`` otherwise (same shifts as
numpy / fastMRI / DIRECT / ATOMMIC, so odd sizes agree too). Normalisation: ``torch.fft`` ``norm`` argument.

Native order: a shift is a permutation of the pixels, so it commutes exactly with every elementwise operation and with
sums over coils. The recurrent models therefore shift the multi-coil data (``y``, ``S``, ``M``) once per forward
(:meth:`FourierOps.native`) and inside the loop shift only single-coil images: :meth:`FourierOps.native_gradient`
and :meth:`FourierOps.native_expand` / :meth:`FourierOps.native_reduce` compute bit for bit what
:meth:`FourierOps.log_likelihood_gradient`, :meth:`FourierOps.expand` and :meth:`FourierOps.reduce` compute,
without shifting the ``C`` coil images twice per transform.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from recon.ops.coils import sens_expand, sens_reduce
from recon.ops.forward import log_likelihood_gradient, mask_kspace

__all__ = ["FFT_NORMALIZATIONS", "FourierOps", "NativeData"]

FFT_NORMALIZATIONS = ("ortho", "backward", "forward")
_DIMS = (-2, -1)


class NativeData(NamedTuple):
    """The measured data of one forward pass in the FFT's native (uncentred) order (:meth:`FourierOps.native`).

    Attributes:
        kspace: complex ``y`` ``[B, C, H, W]``, zero off the mask.
        mask: bool mask broadcastable to the k-space, e.g. ``[B|1, 1, 1|H, W]``.
        sens: complex coil maps ``[B, C, H, W]``.
    """

    kspace: torch.Tensor
    mask: torch.Tensor
    sens: torch.Tensor


class FourierOps:
    """FFT, SENSE expand / reduce and the RIM log-likelihood gradient under one FFT convention.

    Args:
        centered: shift the zero frequency to the centre (``ifftshift`` before and ``fftshift`` after the FFT).
        normalization: ``torch.fft`` norm of the forward transform (``"ortho"``, ``"backward"`` or ``"forward"``).
    """

    def __init__(self, centered: bool = True, normalization: str = "ortho") -> None:
        if normalization not in FFT_NORMALIZATIONS:
            raise ValueError(f"fft_normalization must be one of {FFT_NORMALIZATIONS}; got {normalization!r}")
        self.centered = bool(centered)
        self.normalization = normalization
        self.is_default = self.centered and normalization == "ortho"

    def __repr__(self) -> str:
        return f"FourierOps(centered={self.centered}, normalization={self.normalization!r})"

    def fft(self, x: torch.Tensor) -> torch.Tensor:
        """Forward 2-D FFT over the last two dimensions of a complex tensor."""
        if self.centered:
            x = torch.fft.ifftshift(x, dim=_DIMS)
        x = torch.fft.fft2(x, dim=_DIMS, norm=self.normalization)
        return torch.fft.fftshift(x, dim=_DIMS) if self.centered else x

    def ifft(self, x: torch.Tensor) -> torch.Tensor:
        """Inverse 2-D FFT over the last two dimensions of a complex tensor."""
        if self.centered:
            x = torch.fft.ifftshift(x, dim=_DIMS)
        x = torch.fft.ifft2(x, dim=_DIMS, norm=self.normalization)
        return torch.fft.fftshift(x, dim=_DIMS) if self.centered else x

    def expand(self, image: torch.Tensor, sens: torch.Tensor) -> torch.Tensor:
        """``{F (S_c x)}_c``: image ``[B, H, W]`` -> k-space ``[B, C, H, W]``."""
        if self.is_default:
            return sens_expand(image, sens)
        return self.fft(image.unsqueeze(-3) * sens)

    def reduce(self, kspace: torch.Tensor, sens: torch.Tensor) -> torch.Tensor:
        """``sum_c conj(S_c) F^-1 k_c``: k-space ``[B, C, H, W]`` -> image ``[B, H, W]``."""
        if self.is_default:
            return sens_reduce(kspace, sens)
        return (sens.conj() * self.ifft(kspace)).sum(-3)

    def log_likelihood_gradient(
        self,
        eta: torch.Tensor,
        kspace: torch.Tensor,
        sens: torch.Tensor,
        mask: torch.Tensor,
        sigma: float | torch.Tensor = 1.0,
    ) -> torch.Tensor:
        """``(1/sigma) sum_c conj(S_c) F^-1 M (F S_c eta - y_c)`` (:func:`recon.ops.log_likelihood_gradient`)."""
        if self.is_default:
            return log_likelihood_gradient(eta, kspace, sens, mask, sigma)
        return self.reduce(mask_kspace(self.expand(eta, sens) - kspace, mask), sens) / sigma

    # --- native order: the same results without shifting multi-coil tensors inside the loop -------------------

    def to_native(self, x: torch.Tensor) -> torch.Tensor:
        """Centred order -> the FFT's native order (``ifftshift`` over the last two dimensions when centred)."""
        return torch.fft.ifftshift(x, dim=_DIMS) if self.centered else x

    def from_native(self, x: torch.Tensor) -> torch.Tensor:
        """Native order -> centred order (``fftshift`` when centred); inverse of :meth:`to_native`."""
        return torch.fft.fftshift(x, dim=_DIMS) if self.centered else x

    def native(self, kspace: torch.Tensor, mask: torch.Tensor, sens: torch.Tensor) -> NativeData:
        """Shift ``y`` ``[B, C, H, W]``, the bool ``mask`` and ``S`` ``[B, C, H, W]`` to native order, once."""
        return NativeData(self.to_native(kspace), self.to_native(mask), self.to_native(sens))

    def native_ifft(self, kspace: torch.Tensor) -> torch.Tensor:
        """Inverse 2-D FFT of native-order k-space ``[..., H, W]`` to native-order images ``[..., H, W]``."""
        return torch.fft.ifft2(kspace, dim=_DIMS, norm=self.normalization)

    def native_expand(self, image: torch.Tensor, sens: torch.Tensor) -> torch.Tensor:
        """``{F (S_c x)}_c`` in native order: native image ``[B, H, W]`` -> native k-space ``[B, C, H, W]``."""
        return torch.fft.fft2(image.unsqueeze(-3) * sens, dim=_DIMS, norm=self.normalization)

    def native_reduce(self, kspace: torch.Tensor, sens: torch.Tensor) -> torch.Tensor:
        """``sum_c conj(S_c) F^-1 k_c`` in native order: k-space ``[B, C, H, W]`` -> image ``[B, H, W]``."""
        return (sens.conj() * self.native_ifft(kspace)).sum(-3)

    def native_gradient(self, eta: torch.Tensor, data: NativeData, sigma: float | torch.Tensor = 1.0) -> torch.Tensor:
        """:meth:`log_likelihood_gradient` of a centred-order image ``eta`` ``[B, H, W]`` (result in centred order,
        ``[B, H, W]``) on data from :meth:`native`; bit for bit the same values."""
        predicted = self.native_expand(self.to_native(eta), data.sens)
        residual = torch.where(data.mask, predicted - data.kspace, predicted.new_zeros(()))
        return self.from_native(self.native_reduce(residual, data.sens)) / sigma
