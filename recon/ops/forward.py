"""Multi-coil forward model ``A = M F S``, its adjoint, the normal operator, the RIM log-likelihood gradient and CG.

``A x = {M F (S_c x)}_c`` maps a complex image ``[..., H, W]`` to masked multi-coil k-space ``[..., C, H, W]``;
``A^H k = sum_c conj(S_c) F^-1 (M k_c)`` maps back. ``F`` is the centred orthonormal FFT of :mod:`recon.ops.fft`.

Masks are real (float 0/1 or bool) tensors broadcastable to the k-space, e.g. ``[1, W]`` for fastMRI line masks
(or fastMRI's ``[1, ..., W, 1]`` squeezed of its trailing 1). A sample is *acquired* where the mask is non-zero.
Masks are applied with ``torch.where``, never by multiplication, so unsampled entries are exactly ``+0`` and no
``-0.0`` leaks the sampling pattern (fastMRI test-set note, ``.github/old_discussion_posts/fastmri_test_set.md``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from recon.ops._shapes import broadcast_shape
from recon.ops.coils import sens_expand, sens_reduce

__all__ = [
    "conjugate_gradient",
    "log_likelihood_gradient",
    "mask_kspace",
    "sense_adjoint",
    "sense_forward",
    "sense_normal",
]


def _check_mask(mask: torch.Tensor, kspace_shape: torch.Size, name: str = "mask") -> torch.Tensor:
    """Validate ``mask`` against a k-space shape and return it as a bool tensor."""
    if not isinstance(mask, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor broadcastable to the k-space; got {type(mask).__name__}")
    if torch.is_complex(mask):
        raise ValueError(f"{name} must be real (float 0/1 or bool); got dtype {mask.dtype}")
    if broadcast_shape(mask.shape, kspace_shape) != tuple(kspace_shape):
        raise ValueError(
            f"{name} of shape {tuple(mask.shape)} does not broadcast to the k-space shape {tuple(kspace_shape)}"
        )
    return mask if mask.dtype == torch.bool else mask != 0


def mask_kspace(kspace: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Keep the acquired samples and set the others to exactly zero (``torch.where``, no ``-0.0``).

    Args:
        kspace: complex k-space ``[..., H, W]`` (any number of coil/batch dimensions).
        mask: real mask broadcastable to ``kspace``, e.g. ``[1, W]``; non-zero = acquired.

    Returns:
        Masked k-space, same shape as ``kspace``.

    Raises:
        ValueError: if ``kspace`` is not complex or ``mask`` does not broadcast to it.
    """
    if not isinstance(kspace, torch.Tensor) or not torch.is_complex(kspace):
        raise ValueError(f"kspace must be a complex tensor; got {getattr(kspace, 'dtype', type(kspace).__name__)}")
    sampled = _check_mask(mask, kspace.shape)
    return torch.where(sampled, kspace, torch.zeros((), dtype=kspace.dtype, device=kspace.device))


def sense_forward(image: torch.Tensor, sens: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Forward model ``A x = M F (S_c x)``.

    Args:
        image: complex image ``[..., H, W]``.
        sens: complex coil maps ``[..., C, H, W]``.
        mask: real sampling mask broadcastable to ``[..., C, H, W]`` (e.g. ``[1, W]``), or None for full sampling.

    Returns:
        Masked multi-coil k-space ``[..., C, H, W]``.

    Raises:
        ValueError: naming the argument whose type or shape is wrong.
    """
    kspace = sens_expand(image, sens)
    return kspace if mask is None else mask_kspace(kspace, mask)


def sense_adjoint(kspace: torch.Tensor, sens: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Adjoint ``A^H k = sum_c conj(S_c) F^-1 (M k_c)``.

    Args:
        kspace: complex multi-coil k-space ``[..., C, H, W]``.
        sens: complex coil maps ``[..., C, H, W]``.
        mask: real sampling mask broadcastable to ``kspace``, or None for full sampling.

    Returns:
        Complex image ``[..., H, W]``.

    Raises:
        ValueError: naming the argument whose type or shape is wrong.
    """
    if mask is not None:
        kspace = mask_kspace(kspace, mask)
    return sens_reduce(kspace, sens)


def sense_normal(image: torch.Tensor, sens: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Normal operator ``A^H A x`` (``M^H M = M`` for a 0/1 mask).

    Args:
        image: complex image ``[..., H, W]``.
        sens: complex coil maps ``[..., C, H, W]``.
        mask: real sampling mask broadcastable to ``[..., C, H, W]``, or None.

    Returns:
        Complex image ``[..., H, W]``.
    """
    return sense_adjoint(sense_forward(image, sens, mask), sens)


def log_likelihood_gradient(
    eta: torch.Tensor,
    kspace: torch.Tensor,
    sens: torch.Tensor,
    mask: torch.Tensor,
    sigma: float | torch.Tensor = 1.0,
) -> torch.Tensor:
    """Gradient of the Gaussian negative log-likelihood used by RIMs.

    ``grad = (1/sigma) sum_c conj(S_c) F^-1 M (F S_c eta - y_c)``, which is the gradient (PyTorch's convention for a
    real loss of a complex variable) of ``||A eta - y||^2 / (2 sigma)`` when ``y`` is zero off the mask. Source:
    Putzky & Welling, "Recurrent inference machines for solving inverse problems", arXiv 1706.04008; Lønning et al.,
    "Recurrent inference machines for reconstructing heterogeneous MRI data", MedIA 53 (2019); ATOMMIC
    ``rim_utils.log_likelihood_gradient`` (which also clamps sigma to at least 1; we do not).

    Args:
        eta: current complex image estimate ``[..., H, W]``.
        kspace: measured complex k-space ``y`` ``[..., C, H, W]``.
        sens: complex coil maps ``[..., C, H, W]``.
        mask: real sampling mask broadcastable to ``kspace``.
        sigma: noise scale (positive scalar or tensor broadcastable to ``[..., H, W]``).

    Returns:
        Complex gradient ``[..., H, W]``.

    Raises:
        ValueError: naming the argument whose type or shape is wrong.
    """
    predicted = sens_expand(eta, sens)
    if not isinstance(kspace, torch.Tensor) or kspace.shape != predicted.shape:
        raise ValueError(
            f"kspace of shape {tuple(getattr(kspace, 'shape', ()))} must match A(eta) of shape "
            f"{tuple(predicted.shape)} (eta [..., H, W], sens [..., C, H, W])"
        )
    residual = mask_kspace(predicted - kspace, mask)
    return sens_reduce(residual, sens) / sigma


def conjugate_gradient(
    normal_op: Callable[[torch.Tensor], torch.Tensor],
    rhs: torch.Tensor,
    x0: torch.Tensor | None = None,
    num_iterations: int = 10,
    dims: tuple[int, ...] = (-2, -1),
) -> torch.Tensor:
    """Solve ``N x = b`` for a Hermitian positive-definite ``N`` with a fixed number of CG iterations.

    Every batch element (all dimensions outside ``dims``) runs its own CG (its own step sizes). No tolerance test is
    made, so the number of operations is fixed and the result is differentiable by unrolling; a zero residual
    is handled without division by zero (the update becomes zero).

    Args:
        normal_op: the operator ``N``, mapping ``[..., H, W]`` to ``[..., H, W]``.
        rhs: right-hand side ``b`` ``[..., H, W]``.
        x0: initial guess (default zeros), same shape as ``rhs``.
        num_iterations: number of CG iterations (>= 0).
        dims: dimensions forming one unknown vector.

    Returns:
        The approximate solution, same shape as ``rhs``.

    Raises:
        ValueError: if ``num_iterations`` is negative or ``x0`` does not match ``rhs``.
    """
    if isinstance(num_iterations, bool) or not isinstance(num_iterations, int) or num_iterations < 0:
        raise ValueError(f"num_iterations must be a non-negative int; got {num_iterations!r}")
    if x0 is None:
        x = torch.zeros_like(rhs)
        r = rhs
    else:
        if x0.shape != rhs.shape:
            raise ValueError(f"x0 of shape {tuple(x0.shape)} must match rhs of shape {tuple(rhs.shape)}")
        x = x0
        r = rhs - normal_op(x0)
    p = r
    rr = _dot(r, r, dims)
    tiny = torch.finfo(rr.dtype).tiny
    for _ in range(num_iterations):
        q = normal_op(p)
        pq = _dot(p, q, dims)
        ok = pq > tiny
        alpha = torch.where(ok, rr / torch.where(ok, pq, torch.ones_like(pq)), torch.zeros_like(pq))
        x = x + alpha * p
        r = r - alpha * q
        rr_new = _dot(r, r, dims)
        ok = rr > tiny
        beta = torch.where(ok, rr_new / torch.where(ok, rr, torch.ones_like(rr)), torch.zeros_like(rr))
        p = r + beta * p
        rr = rr_new
    return x


def _dot(a: torch.Tensor, b: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    """Real part of ``<a, b> = sum conj(a) b`` over ``dims``, kept as size-1 dimensions."""
    prod = a.conj() * b if torch.is_complex(a) else a * b
    return prod.real.sum(dim=dims, keepdim=True) if torch.is_complex(prod) else prod.sum(dim=dims, keepdim=True)
