"""Coil sensitivities: SENSE expand/reduce, root-sum-of-squares and coil-map estimation from the k-space centre.

Conventions (see :mod:`recon.ops.fft`): complex tensors, spatial dimensions last, coils at dimension ``-3`` of
k-space and of the maps, ``F`` the centred orthonormal FFT. With maps ``S_c``:

* expand ``E x = {F (S_c x)}_c``: image ``[..., H, W]`` -> multi-coil k-space ``[..., C, H, W]``;
* reduce ``R k = sum_c conj(S_c) F^-1 k_c``: k-space ``[..., C, H, W]`` -> image ``[..., H, W]`` (the SENSE
  combination, the adjoint of expand).

``R E x = (sum_c |S_c|^2) x``, so ``R E`` is the identity wherever the maps are normalised to ``sum_c |S_c|^2 = 1``.
Both estimators below return maps normalised that way where the object is.

Coil-map estimators (``estimate_sens_maps``):

* ``"acs"``: the fully sampled centre lines are kept (everything else zeroed), transformed to low-resolution coil
  images and divided by their root-sum-of-squares, as in fastMRI's / MONAI's sensitivity-model initialisation and
  DIRECT's ``rss_estimate``.
* ``"espirit"``: Uecker et al., "ESPIRiT - an eigenvalue approach to autocalibrating parallel MRI: where SENSE meets
  GRAPPA", MRM 71:990-1001 (2014). Calibration matrix of all ``k x k`` multi-coil patches of the ACS region, its
  signal subspace (right singular vectors above ``threshold * sigma_max``), the corresponding k-space projection
  written as a pixel-wise ``C x C`` operator ``G(r)`` in image space, and the maps as the eigenvectors of ``G(r)``
  with eigenvalue ~1 (pixels whose largest eigenvalue is below ``crop`` are set to zero).
"""

from __future__ import annotations

import math
import operator

import torch

from recon.ops._shapes import broadcast_shape
from recon.ops.fft import fft2c, ifft2c

__all__ = ["estimate_sens_maps", "rss", "sens_expand", "sens_reduce"]

_ACS_OPTIONS = {"acs_region", "eps"}
_ESPIRIT_OPTIONS = {"acs_region", "kernel_size", "threshold", "crop", "calib_height", "phase_reference"}


# ----------------------------------------------------------------------------------------------------------------
# Validation helpers


def _check_complex(x: torch.Tensor, name: str, min_ndim: int, layout: str) -> None:
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor {layout}; got {type(x).__name__}")
    if not torch.is_complex(x):
        raise ValueError(f"{name} must be a complex tensor {layout}; got dtype {x.dtype}")
    if x.ndim < min_ndim:
        raise ValueError(f"{name} must have at least {min_ndim} dimensions {layout}; got shape {tuple(x.shape)}")


def _check_image_and_sens(image: torch.Tensor, sens: torch.Tensor) -> None:
    _check_complex(image, "image", 2, "[..., H, W]")
    _check_complex(sens, "sens", 3, "[..., C, H, W]")
    if image.shape[-2:] != sens.shape[-2:]:
        raise ValueError(
            f"image [..., H, W] and sens [..., C, H, W] must share H, W; got image {tuple(image.shape)} and "
            f"sens {tuple(sens.shape)}"
        )
    if broadcast_shape(image.shape[:-2], sens.shape[:-3]) is None:
        raise ValueError(
            f"the batch dimensions of image {tuple(image.shape)} and sens {tuple(sens.shape)} do not broadcast"
        )


def _check_kspace_and_sens(kspace: torch.Tensor, sens: torch.Tensor) -> None:
    _check_complex(kspace, "kspace", 3, "[..., C, H, W]")
    _check_complex(sens, "sens", 3, "[..., C, H, W]")
    if kspace.shape[-3:] != sens.shape[-3:]:
        raise ValueError(
            f"kspace and sens must share [C, H, W]; got kspace {tuple(kspace.shape)} and sens {tuple(sens.shape)}"
        )
    if broadcast_shape(kspace.shape[:-3], sens.shape[:-3]) is None:
        raise ValueError(
            f"the batch dimensions of kspace {tuple(kspace.shape)} and sens {tuple(sens.shape)} do not broadcast"
        )


# ----------------------------------------------------------------------------------------------------------------
# SENSE expand / reduce and RSS


def sens_expand(image: torch.Tensor, sens: torch.Tensor) -> torch.Tensor:
    """SENSE expand ``k_c = F(S_c x)``: one image to multi-coil k-space.

    Args:
        image: complex image ``[..., H, W]``.
        sens: complex coil maps ``[..., C, H, W]``; leading dimensions broadcast against the image's.

    Returns:
        Multi-coil k-space ``[..., C, H, W]``.

    Raises:
        ValueError: if either argument is not complex or their shapes do not match.
    """
    _check_image_and_sens(image, sens)
    return fft2c(image.unsqueeze(-3) * sens)


def sens_reduce(kspace: torch.Tensor, sens: torch.Tensor) -> torch.Tensor:
    """SENSE reduce ``x = sum_c conj(S_c) F^-1 k_c``: multi-coil k-space to one image (adjoint of expand).

    Args:
        kspace: complex multi-coil k-space ``[..., C, H, W]``.
        sens: complex coil maps ``[..., C, H, W]``; leading dimensions broadcast against the k-space's.

    Returns:
        Complex image ``[..., H, W]``.

    Raises:
        ValueError: if either argument is not complex or their shapes do not match.
    """
    _check_kspace_and_sens(kspace, sens)
    return (sens.conj() * ifft2c(kspace)).sum(dim=-3)


def rss(x: torch.Tensor, dim: int = -3) -> torch.Tensor:
    """Root-sum-of-squares ``sqrt(sum |x|^2)`` over ``dim`` (the coil dimension by default).

    The gradient is finite (zero) where the result is exactly zero.

    Args:
        x: real or complex tensor, e.g. coil images ``[..., C, H, W]``.
        dim: dimension to reduce.

    Returns:
        Real tensor with ``dim`` removed, e.g. ``[..., H, W]``.

    Raises:
        ValueError: if ``x`` is not a tensor or ``dim`` is out of range.
    """
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"x must be a torch.Tensor; got {type(x).__name__}")
    if not -x.ndim <= dim < max(x.ndim, 1):
        raise ValueError(f"dim={dim} is out of range for x of shape {tuple(x.shape)}")
    power = (x.real.square() + x.imag.square()) if torch.is_complex(x) else x.square()
    total = power.sum(dim=dim)
    positive = total > 0
    return torch.where(positive, torch.sqrt(torch.where(positive, total, torch.ones_like(total))), 0.0)


# ----------------------------------------------------------------------------------------------------------------
# Coil-map estimation


def _centre_slice(size: int, count: int) -> slice:
    """The ``count`` central indices of an axis of ``size``, placed like fastMRI's centre lines."""
    start = (size - count + 1) // 2
    return slice(start, start + count)


def _acs_extent(shape: torch.Size, num_low_frequencies: int, region: str) -> tuple[int, int]:
    """Height and width (in k-space samples) of the fully sampled centre."""
    h = shape[-2]
    if region == "lines":
        return h, num_low_frequencies
    if region == "box":
        if num_low_frequencies > h:
            raise ValueError(f"num_low_frequencies={num_low_frequencies} exceeds the k-space height {h}")
        return num_low_frequencies, num_low_frequencies
    raise ValueError(f"acs_region must be 'lines' or 'box'; got {region!r}")


def _acs_maps(
    kspace: torch.Tensor, num_low_frequencies: int, acs_region: str = "lines", eps: float = 0.0
) -> torch.Tensor:
    h, w = kspace.shape[-2:]
    ah, aw = _acs_extent(kspace.shape, num_low_frequencies, acs_region)
    keep = torch.zeros(h, w, dtype=torch.bool, device=kspace.device)
    keep[_centre_slice(h, ah), _centre_slice(w, aw)] = True
    coil_images = ifft2c(torch.where(keep, kspace, torch.zeros((), dtype=kspace.dtype, device=kspace.device)))
    norm = rss(coil_images, dim=-3).unsqueeze(-3)
    if eps > 0:
        norm = norm + eps * norm.amax(dim=(-2, -1), keepdim=True)
    safe = torch.where(norm > 0, norm, torch.ones_like(norm))
    return torch.where(norm > 0, coil_images / safe, torch.zeros((), dtype=coil_images.dtype))


def _calibration_matrix(calib: torch.Tensor, k: int) -> torch.Tensor:
    """All ``k x k`` patches of ``calib [C, h, w]`` as rows: ``[(h-k+1)(w-k+1), C*k*k]``."""
    c = calib.shape[0]
    patches = calib.unfold(1, k, 1).unfold(2, k, 1)  # [C, h-k+1, w-k+1, k, k]
    return patches.permute(1, 2, 0, 3, 4).reshape(-1, c * k * k)


def _espirit_operator(kernels: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Image-space ESPIRiT operator ``G(r) = (1/k^2) sum_n u_n(r) u_n(r)^H``, ``[H, W, C, C]``.

    ``u_n(r)`` is the (unnormalised) inverse DFT of kernel ``n`` ``[C, k, k]``. The entries of ``G`` are
    trigonometric polynomials with frequencies in ``[-(k-1), k-1]``, so ``G`` is evaluated exactly on a small
    ``L x L`` grid (``L = 2k``) and then interpolated to ``[H, W]`` by zero-padding its Fourier coefficients.

    Args:
        kernels: signal-subspace kernels ``[N, C, k, k]``.
        height: image height H.
        width: image width W.
    """
    n, c, k, _ = kernels.shape
    size = 2 * k
    small_h, small_w = min(size, height), min(size, width)
    grid = torch.zeros(n, c, small_h, small_w, dtype=kernels.dtype, device=kernels.device)
    grid[..., _centre_slice(small_h, k), _centre_slice(small_w, k)] = kernels
    u = ifft2c(grid) * math.sqrt(small_h * small_w)  # [N, C, h, w], unnormalised inverse DFT
    g_small = torch.einsum("nchw,ndhw->cdhw", u, u.conj()) / (k * k)  # [C, C, h, w]
    if (small_h, small_w) != (height, width):
        coeffs = fft2c(g_small)
        padded = torch.zeros(c, c, height, width, dtype=coeffs.dtype, device=coeffs.device)
        # align the centre (DC) indices: small // 2 -> full // 2 (this differs from _centre_slice for odd sizes)
        top, left = height // 2 - small_h // 2, width // 2 - small_w // 2
        padded[..., top : top + small_h, left : left + small_w] = coeffs
        g = ifft2c(padded) * math.sqrt(height * width / (small_h * small_w))
    else:
        g = g_small
    return g.permute(2, 3, 0, 1)  # [H, W, C, C]


def _espirit_one(
    kspace: torch.Tensor,
    num_low_frequencies: int,
    acs_region: str,
    kernel_size: int,
    threshold: float,
    crop: float,
    calib_height: int | None,
    phase_reference: str,
) -> torch.Tensor:
    """ESPIRiT maps for one multi-coil slice ``[C, H, W]``."""
    c, h, w = kspace.shape
    ah, aw = _acs_extent(kspace.shape, num_low_frequencies, acs_region)
    if acs_region == "lines":
        ah = min(h, calib_height if calib_height is not None else max(num_low_frequencies, 24))
    if min(ah, aw) < kernel_size:
        raise ValueError(
            f"the calibration region {ah}x{aw} is smaller than kernel_size={kernel_size}; "
            "increase num_low_frequencies or decrease kernel_size"
        )
    calib = kspace[:, _centre_slice(h, ah), _centre_slice(w, aw)]
    matrix = _calibration_matrix(calib, kernel_size)
    _, sing, vh = torch.linalg.svd(matrix, full_matrices=False)
    if sing[0] <= 0:
        return torch.zeros_like(kspace)
    keep = int((sing >= threshold * sing[0]).sum())
    kernels = vh[:keep].reshape(keep, c, kernel_size, kernel_size)
    g = _espirit_operator(kernels, h, w)  # [H, W, C, C]
    g = 0.5 * (g + g.transpose(-2, -1).conj())
    evals, evecs = torch.linalg.eigh(g)
    maps = evecs[..., -1]  # [H, W, C], unit norm per pixel
    top = evals[..., -1]
    if phase_reference == "acs":
        ref_maps = _acs_maps(kspace, num_low_frequencies, acs_region).permute(1, 2, 0)
        ref = (ref_maps.conj() * maps).sum(-1, keepdim=True)
    elif phase_reference == "first":
        ref = maps[..., :1]
    else:
        raise ValueError(f"phase_reference must be 'acs' or 'first'; got {phase_reference!r}")
    mag = ref.abs()
    rot = torch.where(mag > 0, ref.conj() / torch.where(mag > 0, mag, torch.ones_like(mag)), 1.0)
    maps = maps * rot
    maps = torch.where((top > crop).unsqueeze(-1), maps, torch.zeros((), dtype=maps.dtype))
    return maps.permute(2, 0, 1).contiguous()


def estimate_sens_maps(
    kspace: torch.Tensor,
    num_low_frequencies: int,
    method: str = "acs",
    **options: object,
) -> torch.Tensor:
    """Estimate coil sensitivity maps from the fully sampled k-space centre.

    The centre is the ``num_low_frequencies`` central columns (the last dimension, as fastMRI's line masks),
    starting at ``(W - num_low_frequencies + 1) // 2``. Only the centre is used, so the k-space may be
    undersampled elsewhere.

    Methods and their options:

    * ``"acs"`` (low-pass coil images divided by their RSS; ``sum_c |S_c|^2 = 1`` wherever the low-pass RSS is
      non-zero). Options: ``acs_region`` (``"lines"``: the centre columns over the full height, default;
      ``"box"``: a ``num_low_frequencies`` square, for 2-D masks), ``eps`` (default 0; relative regulariser added to
      the RSS, which shrinks the maps where the signal is weak).
    * ``"espirit"`` (Uecker et al., MRM 2014). Options: ``kernel_size`` (6), ``threshold`` (0.02, singular values
      kept relative to the largest), ``crop`` (0.95, pixels whose top eigenvalue is below it get zero maps),
      ``acs_region`` (as above), ``calib_height`` (calibration rows for ``"lines"``; default
      ``max(num_low_frequencies, 24)``, capped at H), ``phase_reference`` (``"acs"``: per-pixel phase aligned with
      the ACS maps, so the object's low-resolution phase goes into the maps as with ``"acs"``, default;
      ``"first"``: the first coil is made real and non-negative, as in BART/sigpy). The maps are unit-norm
      eigenvectors, so ``sum_c |S_c|^2 = 1`` inside the object and 0 outside.

    Args:
        kspace: complex multi-coil k-space ``[..., C, H, W]``.
        num_low_frequencies: number of fully sampled central columns (fastMRI's ``num_low_frequencies``; any
            integer type, e.g. a numpy or 0-d integer tensor, is accepted).
        method: ``"acs"`` or ``"espirit"``.
        **options: method-specific options listed above; any other name is an error.

    Returns:
        Complex coil maps ``[..., C, H, W]`` with the dtype of ``kspace``.

    Raises:
        ValueError: naming the argument or option when an input or option is invalid.
    """
    _check_complex(kspace, "kspace", 3, "[..., C, H, W]")
    try:
        if isinstance(num_low_frequencies, bool):
            raise TypeError
        num_low_frequencies = operator.index(num_low_frequencies)
    except TypeError:
        raise ValueError(f"num_low_frequencies must be an int; got {num_low_frequencies!r}") from None
    width = kspace.shape[-1]
    if not 1 <= num_low_frequencies <= width:
        raise ValueError(f"num_low_frequencies must be in [1, W={width}]; got {num_low_frequencies}")
    if method == "acs":
        _check_options(options, _ACS_OPTIONS, method)
        eps = float(options.get("eps", 0.0))
        if eps < 0:
            raise ValueError(f"option eps must be >= 0; got {eps}")
        return _acs_maps(kspace, num_low_frequencies, str(options.get("acs_region", "lines")), eps)
    if method == "espirit":
        _check_options(options, _ESPIRIT_OPTIONS, method)
        kernel_size = options.get("kernel_size", 6)
        if isinstance(kernel_size, bool) or not isinstance(kernel_size, int) or kernel_size < 1:
            raise ValueError(f"option kernel_size must be a positive int; got {kernel_size!r}")
        threshold = float(options.get("threshold", 0.02))
        if not 0 <= threshold < 1:
            raise ValueError(f"option threshold must be in [0, 1); got {threshold}")
        crop = float(options.get("crop", 0.95))
        if not 0 <= crop < 1:
            raise ValueError(f"option crop must be in [0, 1); got {crop}")
        calib_height = options.get("calib_height")
        if calib_height is not None and (
            isinstance(calib_height, bool) or not isinstance(calib_height, int) or calib_height < 1
        ):
            raise ValueError(f"option calib_height must be a positive int or None; got {calib_height!r}")
        region = str(options.get("acs_region", "lines"))
        _acs_extent(kspace.shape, num_low_frequencies, region)  # validates acs_region
        phase_reference = str(options.get("phase_reference", "acs"))
        if phase_reference not in ("acs", "first"):
            raise ValueError(f"option phase_reference must be 'acs' or 'first'; got {phase_reference!r}")
        flat = kspace.reshape(-1, *kspace.shape[-3:])
        maps = [
            _espirit_one(item, num_low_frequencies, region, kernel_size, threshold, crop, calib_height, phase_reference)
            for item in flat
        ]
        return torch.stack(maps).reshape(kspace.shape)
    raise ValueError(f"method must be 'acs' or 'espirit'; got {method!r}")


def _check_options(options: dict[str, object], allowed: set[str], method: str) -> None:
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise ValueError(f"unknown option(s) {unknown} for method={method!r}; allowed: {sorted(allowed)}")
