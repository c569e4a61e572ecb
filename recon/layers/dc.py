"""Data-consistency (DC) layers for unrolled and recurrent MRI reconstruction.

All layers use the conventions of :mod:`recon.ops`: complex tensors, coils at dimension ``-3``, spatial dimensions
last, the centred orthonormal FFT ``F``, coil maps ``S`` and real 0/1 masks ``M`` broadcastable to the k-space
(applied with ``torch.where``). ``A = M F S`` is the multi-coil forward model and ``y`` the measured k-space.

| layer | update | source |
|---|---|---|
| :class:`SoftDataConsistency` | ``k - lambda M (k - y)`` | VarNet (Sriram et al., arXiv 2004.06688) |
| :class:`HardDataConsistency` | ``(1 - M) k + M y`` | DC-CNN (Schlemper et al., IEEE TMI 2018) |
| :class:`LogLikelihoodGradient` | ``(1/sigma) A^H (A eta - y)`` | RIM (Putzky & Welling; Lønning et al. 2019) |
| :class:`ConjugateGradientDC` | ``(A^H A + mu I)^-1 (A^H y + mu z)`` | MoDL (Aggarwal et al., arXiv 1712.02862) |
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import nn

from recon.ops.forward import (
    _check_mask,
    conjugate_gradient,
    log_likelihood_gradient,
    mask_kspace,
    sense_adjoint,
    sense_normal,
)

if TYPE_CHECKING:
    from recon.models._fourier import FourierOps, NativeData

__all__ = [
    "ConjugateGradientDC",
    "HardDataConsistency",
    "LogLikelihoodGradient",
    "SoftDataConsistency",
    "soft_data_consistency",
]


def _check_kspace_pair(kspace: torch.Tensor, ref_kspace: torch.Tensor) -> None:
    for name, value in (("kspace", kspace), ("ref_kspace", ref_kspace)):
        if not isinstance(value, torch.Tensor) or not torch.is_complex(value):
            raise ValueError(f"{name} must be a complex tensor [..., C, H, W]; got {getattr(value, 'dtype', value)}")
    if kspace.shape != ref_kspace.shape:
        raise ValueError(
            f"kspace {tuple(kspace.shape)} and ref_kspace {tuple(ref_kspace.shape)} must have the same shape"
        )


def soft_data_consistency(
    kspace: torch.Tensor, ref_kspace: torch.Tensor, mask: torch.Tensor, weight: torch.Tensor | float
) -> torch.Tensor:
    """``k - weight * M (k - y)``: the update of :class:`SoftDataConsistency`, for models that keep the weight
    under their own name (RecurrentVarNet's per-step ``learning_rate``).

    Args:
        kspace: current complex k-space estimate ``k`` ``[..., C, H, W]``.
        ref_kspace: measured complex k-space ``y`` ``[..., C, H, W]`` (zero off the mask).
        mask: real sampling mask broadcastable to the k-space, e.g. ``[1, W]``.
        weight: ``lambda``, a scalar.

    Returns:
        Complex k-space ``[..., C, H, W]``.
    """
    _check_kspace_pair(kspace, ref_kspace)
    return kspace - weight * mask_kspace(kspace - ref_kspace, mask)


class SoftDataConsistency(nn.Module):
    """Soft k-space data consistency with a learned weight (VarNet style).

    ``k_out = k - lambda * M (k - y)``, with ``M (k - y)`` computed as ``where(M, k - y, 0)`` and a learned scalar
    ``lambda`` (``dc_weight``, initialised to 1). With ``lambda = 1`` the sampled entries are replaced by ``y``.
    The refinement term of a VarNet cascade, ``F E(net(R F^-1 k))``, is subtracted by the caller.

    Source: Sriram et al., "End-to-end variational networks for accelerated MRI reconstruction", arXiv 2004.06688,
    eq. (5); fastMRI ``VarNetBlock``; MONAI ``VarNetBlock``.

    Args:
        init_weight: initial value of ``lambda``.
        learnable: whether ``lambda`` is a trainable parameter (else a buffer).
    """

    def __init__(self, init_weight: float = 1.0, learnable: bool = True) -> None:
        super().__init__()
        weight = torch.tensor(float(init_weight))
        if learnable:
            self.dc_weight = nn.Parameter(weight)
        else:
            self.register_buffer("dc_weight", weight)

    def forward(self, kspace: torch.Tensor, ref_kspace: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Apply soft DC.

        Args:
            kspace: current complex k-space estimate ``k`` ``[..., C, H, W]``.
            ref_kspace: measured complex k-space ``y`` ``[..., C, H, W]`` (zero off the mask).
            mask: real sampling mask broadcastable to the k-space, e.g. ``[1, W]``.

        Returns:
            Complex k-space ``[..., C, H, W]``.
        """
        return soft_data_consistency(kspace, ref_kspace, mask, self.dc_weight)


class HardDataConsistency(nn.Module):
    """Hard k-space data consistency: the acquired samples replace the estimate.

    Noise-free (``noise_level=None``): ``k_out = where(M, y, k)``, so the sampled entries equal ``y`` bit for bit.
    Noisy variant (``noise_level = nu > 0``): ``k_out = where(M, (k + nu y) / (1 + nu), k)``.

    Source: Schlemper et al., "A deep cascade of convolutional neural networks for dynamic MR image reconstruction",
    IEEE TMI 37(2), 2018, eq. (8) (arXiv 1704.02422).

    Args:
        noise_level: ``None`` for exact replacement, or the weight ``nu`` of the measurements.
    """

    def __init__(self, noise_level: float | None = None) -> None:
        super().__init__()
        if noise_level is not None and noise_level <= 0:
            raise ValueError(f"noise_level must be positive or None; got {noise_level}")
        self.noise_level = noise_level

    def forward(self, kspace: torch.Tensor, ref_kspace: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Apply hard DC.

        Args:
            kspace: current complex k-space estimate ``[..., C, H, W]``.
            ref_kspace: measured complex k-space ``y`` ``[..., C, H, W]``.
            mask: real sampling mask broadcastable to the k-space; non-zero = acquired.

        Returns:
            Complex k-space ``[..., C, H, W]``.
        """
        _check_kspace_pair(kspace, ref_kspace)
        sampled = _check_mask(mask, kspace.shape)
        if self.noise_level is None:
            return torch.where(sampled, ref_kspace, kspace)
        nu = self.noise_level
        return torch.where(sampled, (kspace + nu * ref_kspace) / (1 + nu), kspace)

    def extra_repr(self) -> str:
        return f"noise_level={self.noise_level}"


class LogLikelihoodGradient(nn.Module):
    """Gradient of the Gaussian log-likelihood, the data term fed to recurrent inference machines.

    ``grad = (1/sigma) sum_c S_c^H F^-1 M (F S_c eta - y_c)``, the gradient of ``||A eta - y||^2 / (2 sigma)``
    (``y`` zero off the mask). A RIM's cell takes ``[Re eta, Im eta, Re grad, Im grad]`` as input.

    Source: Putzky & Welling, "Recurrent inference machines for solving inverse problems", arXiv 1706.04008;
    Lønning et al., "Recurrent inference machines for reconstructing heterogeneous MRI data", MedIA 53 (2019);
    ATOMMIC ``rim_utils.log_likelihood_gradient``.

    Args:
        sigma: noise scale ``sigma > 0``.
        learnable: train ``log(sigma)`` (keeps sigma positive) instead of keeping it fixed.
        ops: the FFT convention of the model (``recon.models._fourier.FourierOps``); None: centred orthonormal,
            :mod:`recon.ops`.
    """

    def __init__(self, sigma: float = 1.0, learnable: bool = False, ops: FourierOps | None = None) -> None:
        super().__init__()
        if sigma <= 0:
            raise ValueError(f"sigma must be positive; got {sigma}")
        self.ops = ops
        self.learnable = learnable
        self.log_sigma = nn.Parameter(torch.tensor(math.log(sigma))) if learnable else None
        self._sigma = float(sigma)

    @property
    def sigma(self) -> torch.Tensor | float:
        """The current noise scale (a Python float when fixed, so it adds no rounding)."""
        return self.log_sigma.exp() if self.log_sigma is not None else self._sigma

    def extra_repr(self) -> str:
        return f"sigma={float(self.sigma):.4g}, learnable={self.learnable}"

    def forward(
        self,
        eta: torch.Tensor,
        ref_kspace: torch.Tensor,
        sens: torch.Tensor,
        mask: torch.Tensor,
        native: NativeData | None = None,
    ) -> torch.Tensor:
        """Compute the gradient.

        Args:
            eta: current complex image estimate ``[..., H, W]``.
            ref_kspace: measured complex k-space ``y`` ``[..., C, H, W]``.
            sens: complex coil maps ``[..., C, H, W]``.
            mask: real sampling mask broadcastable to the k-space.
            native: ``(ref_kspace, mask, sens)`` already in the FFT's native order (``FourierOps.native``), when
                the caller reuses them across steps; the same values, fewer shifts. Needs ``ops``.

        Returns:
            Complex gradient ``[..., H, W]``.
        """
        if native is not None:
            if self.ops is None:
                raise ValueError("LogLikelihoodGradient: native-order data needs the model's FourierOps (ops=...)")
            return self.ops.native_gradient(eta, native, self.sigma)
        if self.ops is not None:
            return self.ops.log_likelihood_gradient(eta, ref_kspace, sens, mask, self.sigma)
        return log_likelihood_gradient(eta, ref_kspace, sens, mask, self.sigma)


class ConjugateGradientDC(nn.Module):
    """MoDL data consistency: solve ``(A^H A + mu I) x = A^H y + mu z`` by conjugate gradients.

    ``z`` is the denoiser's output; ``x`` minimises ``||A x - y||^2 + mu ||x - z||^2``. The CG runs a fixed number of
    iterations from ``x0 = z``, so the layer is differentiable end to end (by unrolling) with respect to ``z``,
    ``y``, the maps and ``mu``. ``mu`` is learned as ``log(mu)`` to stay positive (initialised to 0.05 as in
    ATOMMIC's MoDL).

    Source: Aggarwal, Mani & Jacob, "MoDL: model-based deep learning architecture for inverse problems",
    IEEE TMI 38(2), 2019, arXiv 1712.02862, eqs. (8)-(9).

    Args:
        mu: initial regularisation weight ``mu > 0``.
        num_iterations: number of CG iterations (fixed).
        learnable: whether ``mu`` is trained.
    """

    def __init__(self, mu: float = 0.05, num_iterations: int = 10, learnable: bool = True) -> None:
        super().__init__()
        if mu <= 0:
            raise ValueError(f"mu must be positive; got {mu}")
        if isinstance(num_iterations, bool) or not isinstance(num_iterations, int) or num_iterations < 0:
            raise ValueError(f"num_iterations must be a non-negative int; got {num_iterations!r}")
        log_mu = torch.tensor(math.log(mu))
        if learnable:
            self.log_mu = nn.Parameter(log_mu)
        else:
            self.register_buffer("log_mu", log_mu)
        self.num_iterations = num_iterations

    @property
    def mu(self) -> torch.Tensor:
        """The current regularisation weight."""
        return self.log_mu.exp()

    def forward(
        self, z: torch.Tensor, ref_kspace: torch.Tensor, sens: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        """Solve the DC problem.

        Args:
            z: complex prior image (denoiser output) ``[..., H, W]``.
            ref_kspace: measured complex k-space ``y`` ``[..., C, H, W]``.
            sens: complex coil maps ``[..., C, H, W]``.
            mask: real sampling mask broadcastable to the k-space.

        Returns:
            Complex image ``[..., H, W]``.
        """
        if not isinstance(z, torch.Tensor) or not torch.is_complex(z):
            raise ValueError(f"z must be a complex tensor [..., H, W]; got {getattr(z, 'dtype', type(z).__name__)}")
        adjoint = sense_adjoint(ref_kspace, sens, mask)
        if adjoint.shape != z.shape:
            raise ValueError(f"z of shape {tuple(z.shape)} must match A^H y of shape {tuple(adjoint.shape)}")
        mu = self.mu.to(z.real.dtype)
        rhs = adjoint + mu * z

        def normal(x: torch.Tensor) -> torch.Tensor:
            return sense_normal(x, sens, mask) + mu * x

        return conjugate_gradient(normal, rhs, x0=z, num_iterations=self.num_iterations)

    def extra_repr(self) -> str:
        return f"num_iterations={self.num_iterations}"
