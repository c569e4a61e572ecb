"""Classical reconstructions: zero-filled (RSS and SENSE) and compressed-sensing SENSE (TV and wavelet-l1).

Conventions of :mod:`recon.ops`: complex tensors, coils at dimension ``-3``, spatial dimensions last, ``A = M F S``
with real 0/1 masks broadcastable to the k-space (``[1, W]`` for line masks). The measured k-space ``y`` is assumed
to be zero off the mask (it is re-masked here anyway).

Compressed sensing (Lustig, Donoho & Pauly, "Sparse MRI", MRM 58:1182-1195, 2007) solves

    min_x  1/2 ||A x - y||^2 + lambda R(x)

* :func:`tv_sense`: ``R(x) = ||grad x||_{2,1}``, isotropic total variation of the complex image (forward
  differences, Neumann boundary), solved with the primal-dual algorithm of Chambolle & Pock, "A first-order
  primal-dual algorithm for convex problems with applications to imaging", JMIV 40:120-145 (2011), Algorithm 1 with
  ``K = [A; grad]``, ``G`` = the indicator of the maps' support and ``theta = 1``.
* :func:`wavelet_sense`: ``R(x) = ||W x||_1`` on the detail bands of an orthonormal multi-level Daubechies transform
  ``W`` (:class:`Wavelet2d`, db4 by default; the coarsest approximation band is not penalised), solved with FISTA
  (Beck & Teboulle, SIAM J. Imaging Sci. 2(1):183-202, 2009) with step ``1/L``, ``L = max_r sum_c |S_c(r)|^2 >=
  ||A||^2``, and deterministic pseudo-random cycle spinning (a circular shift of the image before each wavelet
  shrinkage, undone after it) against the blocking of a decimated transform.

``lambda`` is given relative to ``max |A^H y|`` of each slice, so the defaults do not depend on the data scale.
The iteration budgets are fixed (no stopping test): ``TV_ITERATIONS = 100`` and ``WAVELET_ITERATIONS = 100``;
every iteration costs one ``A`` and one ``A^H`` (two multi-coil FFTs). The defaults (``TV_LAMBDA``,
``WAVELET_LAMBDA``, ``TV_STEP_RATIO``) were tuned on a 128x128 8-coil Shepp-Logan phantom at 4x with ESPIRiT maps
(``tests/recon/test_baselines.py``); tune ``lam`` for real data.

For reference, fastMRI's CS baseline is BART ``pics -R T:7:0:lambda`` (TV) on ESPIRiT maps
(``fastmri_examples/cs/run_bart.py``).
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch

from recon.ops.coils import rss, sens_reduce
from recon.ops.fft import ifft2c
from recon.ops.forward import _check_mask, mask_kspace, sense_adjoint, sense_forward

__all__ = [
    "TV_ITERATIONS",
    "TV_LAMBDA",
    "TV_STEP_RATIO",
    "WAVELET_ITERATIONS",
    "WAVELET_LAMBDA",
    "Wavelet2d",
    "daubechies_filter",
    "tv_sense",
    "wavelet_sense",
    "zero_filled_rss",
    "zero_filled_sense",
]

TV_ITERATIONS = 100
"""Default primal-dual iterations of :func:`tv_sense`."""
TV_LAMBDA = 3e-3
"""Default TV weight of :func:`tv_sense`, relative to ``max |A^H y|``."""
TV_STEP_RATIO = 0.1
"""Default dual/primal step balance of :func:`tv_sense`."""
WAVELET_ITERATIONS = 100
"""Default FISTA iterations of :func:`wavelet_sense`."""
WAVELET_LAMBDA = 1e-3
"""Default wavelet-l1 weight of :func:`wavelet_sense`, relative to ``max |A^H y|``."""


# ----------------------------------------------------------------------------------------------------------------
# Zero-filled


def zero_filled_rss(kspace: torch.Tensor) -> torch.Tensor:
    """Zero-filled root-sum-of-squares reconstruction ``sqrt(sum_c |F^-1 y_c|^2)``.

    Args:
        kspace: complex (undersampled, zero-filled) multi-coil k-space ``[..., C, H, W]``.

    Returns:
        Real magnitude image ``[..., H, W]``.

    Raises:
        ValueError: if ``kspace`` is not a complex tensor with at least 3 dimensions.
    """
    if not isinstance(kspace, torch.Tensor) or not torch.is_complex(kspace) or kspace.ndim < 3:
        raise ValueError(
            f"kspace must be a complex tensor [..., C, H, W]; got {getattr(kspace, 'dtype', type(kspace).__name__)} "
            f"{tuple(getattr(kspace, 'shape', ()))}"
        )
    return rss(ifft2c(kspace), dim=-3)


def zero_filled_sense(kspace: torch.Tensor, sens: torch.Tensor) -> torch.Tensor:
    """Zero-filled SENSE combination ``sum_c conj(S_c) F^-1 y_c`` (``A^H y``; exact for full sampling and maps
    with ``sum_c |S_c|^2 = 1``).

    Args:
        kspace: complex multi-coil k-space ``[..., C, H, W]``.
        sens: complex coil maps ``[..., C, H, W]``.

    Returns:
        Complex image ``[..., H, W]``.
    """
    return sens_reduce(kspace, sens)


# ----------------------------------------------------------------------------------------------------------------
# Orthonormal wavelets


@lru_cache(maxsize=16)
def _daubechies(order: int) -> tuple[float, ...]:
    # |m0(w)|^2 = cos^{2N}(w/2) P(sin^2(w/2)),  P(y) = sum_{k<N} C(N-1+k, k) y^k  (Daubechies, "Ten lectures", 6.1).
    # Each root y_j of P gives a reciprocal pair of z-roots of z^2 - (2 - 4 y_j) z + 1; keeping the one inside the
    # unit circle gives the minimum-phase filter h(z) ~ (1 + z)^N prod_j (z - z_j), scaled so that sum h = sqrt 2.
    coeffs = [math.comb(order - 1 + k, k) for k in range(order)]
    zeros = []
    for y in np.roots(coeffs[::-1]) if order > 1 else []:
        pair = np.roots([1.0, -(2.0 - 4.0 * y), 1.0])
        zeros.append(pair[np.argmin(np.abs(pair))])
    h = np.real(np.poly(zeros)) if zeros else np.ones(1)
    for _ in range(order):
        h = np.convolve(h, [1.0, 1.0])
    h = h * math.sqrt(2.0) / h.sum()
    return tuple(float(v) for v in h)


def daubechies_filter(order: int) -> torch.Tensor:
    """Low-pass filter of the orthonormal Daubechies wavelet with ``order`` vanishing moments (``dbN``).

    ``order = 1`` is Haar. Computed by spectral factorisation (minimum phase), in float64: ``2 * order`` taps
    with ``sum h = sqrt(2)`` and ``sum_k h[k] h[k + 2m] = delta_m``.

    Args:
        order: number of vanishing moments, 1 to 10.

    Returns:
        float64 tensor ``[2 * order]``.

    Raises:
        ValueError: if ``order`` is out of range.
    """
    if isinstance(order, bool) or not isinstance(order, int) or not 1 <= order <= 10:
        raise ValueError(f"order must be an int in [1, 10]; got {order!r}")
    return torch.tensor(_daubechies(order), dtype=torch.float64)


def _analysis_matrix(n: int, h: torch.Tensor) -> torch.Tensor:
    """One level of the periodised orthonormal DWT of a length-``n`` signal as an ``[n, n]`` matrix.

    Rows ``i < n/2``: ``a_i = sum_k h_k x_{(2i + k) mod n}``; rows ``n/2 + i``: the same with the high-pass
    ``g_k = (-1)^k h_{L-1-k}``.
    """
    taps = h.numel()
    g = torch.tensor([(-1) ** k * float(h[taps - 1 - k]) for k in range(taps)], dtype=torch.float64)
    mat = torch.zeros(n, n, dtype=torch.float64)
    half = n // 2
    for i in range(half):
        for k in range(taps):
            j = (2 * i + k) % n
            mat[i, j] += h[k]
            mat[half + i, j] += g[k]
    return mat


class Wavelet2d:
    """Orthonormal multi-level 2-D discrete wavelet transform with periodic boundaries (Mallat pyramid).

    Each level transforms the current approximation block separably with a dense ``[n, n]`` analysis matrix per
    axis. The coefficients keep the image's shape: the coarsest approximation band is the top-left
    ``[H / 2^levels, W / 2^levels]`` block and the detail bands of level ``l`` surround the level-``l``
    approximation. The transform is orthonormal, so ``inverse(forward(x)) == x`` and ``||forward(x)|| == ||x||``.

    Args:
        shape: image size ``(H, W)``; both must be divisible by ``2**levels``.
        order: Daubechies order (1 = Haar, 4 = db4).
        levels: number of decomposition levels (>= 1).
    """

    def __init__(self, shape: tuple[int, int], order: int = 4, levels: int = 3) -> None:
        if isinstance(levels, bool) or not isinstance(levels, int) or levels < 1:
            raise ValueError(f"levels must be a positive int; got {levels!r}")
        height, width = (int(s) for s in shape)
        if height % 2**levels or width % 2**levels:
            raise ValueError(f"shape {tuple(shape)} must be divisible by 2**levels = {2**levels}")
        h = daubechies_filter(order)
        self.shape = (height, width)
        self.levels = levels
        self.order = order
        self._mats = [(_analysis_matrix(height >> lvl, h), _analysis_matrix(width >> lvl, h)) for lvl in range(levels)]
        self._cache: dict[tuple[torch.dtype, torch.device], list[tuple[torch.Tensor, torch.Tensor]]] = {}

    def _matrices(self, x: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        dtype = x.real.dtype if torch.is_complex(x) else x.dtype
        key = (dtype, x.device)
        if key not in self._cache:
            self._cache[key] = [(a.to(x.device, dtype), b.to(x.device, dtype)) for a, b in self._mats]
        return self._cache[key]

    def _check(self, x: torch.Tensor, name: str) -> None:
        if not isinstance(x, torch.Tensor) or x.ndim < 2 or tuple(x.shape[-2:]) != self.shape:
            got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"{name} must be a tensor [..., {self.shape[0]}, {self.shape[1]}]; got {got}")

    @staticmethod
    def _apply(x: torch.Tensor, fn) -> torch.Tensor:
        if torch.is_complex(x):
            return torch.complex(fn(x.real), fn(x.imag))
        return fn(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Analysis: image ``[..., H, W]`` (real or complex) -> coefficients ``[..., H, W]``."""
        self._check(x, "x")

        def run(v: torch.Tensor) -> torch.Tensor:
            out = v.clone()
            for lvl, (mh, mw) in enumerate(self._matrices(v)):
                hh, ww = self.shape[0] >> lvl, self.shape[1] >> lvl
                out[..., :hh, :ww] = mh @ out[..., :hh, :ww] @ mw.T
            return out

        return self._apply(x, run)

    def inverse(self, coeffs: torch.Tensor) -> torch.Tensor:
        """Synthesis: coefficients ``[..., H, W]`` -> image ``[..., H, W]``."""
        self._check(coeffs, "coeffs")

        def run(v: torch.Tensor) -> torch.Tensor:
            out = v.clone()
            mats = self._matrices(v)
            for lvl in reversed(range(self.levels)):
                mh, mw = mats[lvl]
                hh, ww = self.shape[0] >> lvl, self.shape[1] >> lvl
                out[..., :hh, :ww] = mh.T @ out[..., :hh, :ww] @ mw
            return out

        return self._apply(coeffs, run)

    def detail_mask(self, device: torch.device | str | None = None) -> torch.Tensor:
        """Bool ``[H, W]``: True on detail coefficients, False on the coarsest approximation band."""
        mask = torch.ones(self.shape, dtype=torch.bool, device=device)
        mask[: self.shape[0] >> self.levels, : self.shape[1] >> self.levels] = False
        return mask


# ----------------------------------------------------------------------------------------------------------------
# Compressed sensing


def _prepare(
    kspace: torch.Tensor, sens: torch.Tensor, mask: torch.Tensor, lam: float, num_iterations: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Validate inputs; return (masked y, bool mask, A^H y)."""
    if not isinstance(kspace, torch.Tensor) or not torch.is_complex(kspace) or kspace.ndim < 3:
        raise ValueError(f"kspace must be a complex tensor [..., C, H, W]; got {getattr(kspace, 'dtype', kspace)}")
    if not isinstance(sens, torch.Tensor) or sens.shape[-3:] != kspace.shape[-3:]:
        raise ValueError(f"sens must be a complex tensor [..., C, H, W] matching kspace {tuple(kspace.shape)}")
    sampled = _check_mask(mask, kspace.shape)
    if not lam >= 0:
        raise ValueError(f"lam must be >= 0; got {lam}")
    if isinstance(num_iterations, bool) or not isinstance(num_iterations, int) or num_iterations < 0:
        raise ValueError(f"num_iterations must be a non-negative int; got {num_iterations!r}")
    y = mask_kspace(kspace, sampled)
    return y, sampled, sense_adjoint(y, sens)


def _lipschitz(sens: torch.Tensor) -> torch.Tensor:
    """Upper bound ``max_r sum_c |S_c(r)|^2`` of ``||A||^2`` per slice, shaped ``[..., 1, 1]``."""
    power = (sens.real.square() + sens.imag.square()).sum(dim=-3)
    return power.amax(dim=(-2, -1), keepdim=True).clamp_min(torch.finfo(power.dtype).eps)


def _grad(x: torch.Tensor) -> torch.Tensor:
    """Forward differences with a Neumann boundary: ``[..., H, W]`` -> ``[..., 2, H, W]``."""
    dh = torch.zeros_like(x)
    dw = torch.zeros_like(x)
    dh[..., :-1, :] = x[..., 1:, :] - x[..., :-1, :]
    dw[..., :, :-1] = x[..., :, 1:] - x[..., :, :-1]
    return torch.stack((dh, dw), dim=-3)


def _grad_adjoint(q: torch.Tensor) -> torch.Tensor:
    """Adjoint of :func:`_grad` (minus the divergence): ``[..., 2, H, W]`` -> ``[..., H, W]``."""
    qh, qw = q.unbind(dim=-3)
    out = torch.zeros_like(qh)
    out[..., :-1, :] -= qh[..., :-1, :]
    out[..., 1:, :] += qh[..., :-1, :]
    out[..., :, :-1] -= qw[..., :, :-1]
    out[..., :, 1:] += qw[..., :, :-1]
    return out


def _support(sens: torch.Tensor) -> torch.Tensor:
    """Bool ``[..., H, W]``: where at least one coil map is non-zero (elsewhere ``x`` is in the null space of A)."""
    return (sens != 0).any(dim=-3)


def tv_sense(
    kspace: torch.Tensor,
    sens: torch.Tensor,
    mask: torch.Tensor,
    lam: float = TV_LAMBDA,
    num_iterations: int = TV_ITERATIONS,
    step_ratio: float = TV_STEP_RATIO,
) -> torch.Tensor:
    """Total-variation-regularised SENSE reconstruction by Chambolle-Pock primal-dual iterations.

    Solves ``min_x 1/2 ||M F S x - y||^2 + lam * max|A^H y| * TV(x)`` subject to ``x = 0`` where every coil map is
    zero (``G`` = the indicator of the maps' support; ESPIRiT zeroes the maps outside the object), starting from
    ``x = A^H y``, with dual variables ``p`` (k-space) and ``q`` (image gradient)::

        p <- (p + s (A xb - y)) / (1 + s)
        q <- proj_{|q| <= lam'} (q + s grad xb)
        x' <- P_support(x - t (A^H p + grad^H q));  xb <- 2 x' - x;  x <- x'

    with ``t = 0.99 / (r ||K||)``, ``s = 0.99 r / ||K||`` (so ``s t ||K||^2 < 1``), ``r = step_ratio`` and
    ``||K||^2 <= L + 8`` (``||grad||^2 <= 8``, ``L = max_r sum_c |S_c(r)|^2 >= ||A||^2``). The iterations are
    invariant to the scale of the data.

    Args:
        kspace: measured complex k-space ``y`` ``[..., C, H, W]``.
        sens: complex coil maps ``[..., C, H, W]`` (e.g. ESPIRiT, ``sum |S|^2 = 1`` on the object).
        mask: real sampling mask broadcastable to ``kspace``, e.g. ``[1, W]``.
        lam: regularisation weight relative to ``max |A^H y|``.
        num_iterations: fixed number of primal-dual iterations.
        step_ratio: ``r = sqrt(s / t)``, the balance of dual and primal steps (smaller = larger primal step).

    Returns:
        Complex image ``[..., H, W]``.

    Raises:
        ValueError: naming the argument that is invalid.
    """
    y, sampled, x = _prepare(kspace, sens, mask, lam, num_iterations)
    if not step_ratio > 0:
        raise ValueError(f"step_ratio must be positive; got {step_ratio}")
    support = _support(sens)
    zero = torch.zeros((), dtype=x.dtype, device=x.device)
    x = torch.where(support, x, zero)
    weight = (lam * x.abs().amax(dim=(-2, -1), keepdim=True)).unsqueeze(-3)  # [..., 1, 1, 1]
    norm_k = torch.sqrt(_lipschitz(sens) + 8.0)  # [..., 1, 1]
    tau = 0.99 / (step_ratio * norm_k)
    sigma = (0.99 * step_ratio / norm_k).unsqueeze(-3)  # broadcasts over coils / gradient components
    tiny = torch.finfo(weight.dtype).tiny
    p = torch.zeros_like(y)
    q = torch.zeros_like(_grad(x))
    xbar = x
    for _ in range(num_iterations):
        p = (p + sigma * (sense_forward(xbar, sens, sampled) - y)) / (1 + sigma)
        q = q + sigma * _grad(xbar)
        norm = torch.sqrt((q.real.square() + q.imag.square()).sum(dim=-3, keepdim=True))
        q = q / torch.clamp(norm / weight.clamp_min(tiny), min=1.0)
        x_new = torch.where(support, x - tau * (sense_adjoint(p, sens, sampled) + _grad_adjoint(q)), zero)
        xbar = 2 * x_new - x
        x = x_new
    return x


def _soft_threshold(c: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
    mag = c.abs()
    shrink = torch.clamp(1 - threshold / torch.where(mag > 0, mag, torch.ones_like(mag)), min=0.0)
    return c * shrink


def wavelet_sense(
    kspace: torch.Tensor,
    sens: torch.Tensor,
    mask: torch.Tensor,
    lam: float = WAVELET_LAMBDA,
    num_iterations: int = WAVELET_ITERATIONS,
    order: int = 4,
    levels: int = 4,
    cycle_spinning: bool = True,
) -> torch.Tensor:
    """Wavelet-l1-regularised SENSE reconstruction by FISTA.

    Solves ``min_x 1/2 ||M F S x - y||^2 + lam * max|A^H y| * ||W x||_1`` (detail bands only) from ``x = A^H y``::

        x_k = W^-1 soft(W (z - A^H (A z - y) / L), lam' / L)
        t_{k+1} = (1 + sqrt(1 + 4 t_k^2)) / 2;  z = x_k + (t_k - 1) / t_{k+1} (x_k - x_{k-1})

    With ``cycle_spinning`` the shrinkage at iteration k acts on the image circularly shifted by a fixed
    pseudo-random offset in ``[0, 2^levels)^2`` (the same sequence on every call). The result is set to zero where
    every coil map is zero (those pixels are in the null space of ``A``; ESPIRiT zeroes the maps outside the object).

    Args:
        kspace: measured complex k-space ``y`` ``[..., C, H, W]``; H and W divisible by ``2**levels``.
        sens: complex coil maps ``[..., C, H, W]``.
        mask: real sampling mask broadcastable to ``kspace``.
        lam: regularisation weight relative to ``max |A^H y|``.
        num_iterations: fixed number of FISTA iterations.
        order: Daubechies order of the wavelet (1 = Haar).
        levels: wavelet decomposition levels.
        cycle_spinning: shift the image before each shrinkage.

    Returns:
        Complex image ``[..., H, W]``.

    Raises:
        ValueError: naming the argument that is invalid.
    """
    y, sampled, x = _prepare(kspace, sens, mask, lam, num_iterations)
    wavelet = Wavelet2d(tuple(kspace.shape[-2:]), order=order, levels=levels)
    detail = wavelet.detail_mask(x.device)
    lipschitz = _lipschitz(sens)
    threshold = torch.where(detail, lam * x.abs().amax(dim=(-2, -1), keepdim=True) / lipschitz, 0.0)
    generator = torch.Generator().manual_seed(0)
    shifts = torch.randint(0, 2**levels, (num_iterations, 2), generator=generator).tolist()
    z = x
    t = 1.0
    for it in range(num_iterations):
        v = z - sense_adjoint(sense_forward(z, sens, sampled) - y, sens) / lipschitz
        sh = tuple(shifts[it]) if cycle_spinning else (0, 0)
        v = torch.roll(v, shifts=sh, dims=(-2, -1))
        v = wavelet.inverse(_soft_threshold(wavelet.forward(v), threshold))
        x_new = torch.roll(v, shifts=(-sh[0], -sh[1]), dims=(-2, -1))
        t_new = (1 + math.sqrt(1 + 4 * t * t)) / 2
        z = x_new + ((t - 1) / t_new) * (x_new - x)
        x, t = x_new, t_new
    return torch.where(_support(sens), x, torch.zeros((), dtype=x.dtype, device=x.device))
