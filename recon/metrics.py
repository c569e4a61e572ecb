"""Image-quality metrics with exactly fastMRI's definitions (``fastmri/evaluate.py``), plus per-slice variants.

fastMRI evaluates whole volumes of magnitude images ``[S, H, W]`` (after centre-cropping both to the target's
width; that crop is the caller's job here):

* ``nmse = ||gt - pred||^2 / ||gt||^2`` over the volume;
* ``psnr = 10 log10(maxval^2 / mean((gt - pred)^2))`` over the volume, ``maxval = gt.max()`` of the volume
  (scikit-image ``peak_signal_noise_ratio`` with ``data_range = maxval``);
* ``ssim``: the mean over slices of scikit-image's ``structural_similarity(gt[s], pred[s], data_range=maxval)``
  with its defaults: a 7x7 uniform window, ``K1 = 0.01``, ``K2 = 0.03``, sample covariances (``N / (N - 1)``),
  and the mean of the SSIM map over the pixels whose window lies inside the image (a 3-pixel border is dropped).
  ``maxval`` is again the volume's maximum of ``gt``.

SSIM follows Wang et al., "Image quality assessment: from error visibility to structural similarity", IEEE TIP 13(4),
2004. Everything is computed in float64 with torch; inputs may be numpy arrays or tensors (real, any float dtype).
The committed fixture ``tests/data/fastmri_metrics.npz`` (made by ``tests/data/make_metric_fixtures.py`` with
fastMRI 0.3.0) checks equality to 1e-6.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "MetricsAggregator",
    "nmse",
    "nmse_per_slice",
    "psnr",
    "psnr_per_slice",
    "ssim",
    "ssim_per_slice",
]

ArrayLike = np.ndarray | torch.Tensor

WIN_SIZE = 7
K1 = 0.01
K2 = 0.03


def _as_float64(x: ArrayLike, name: str) -> torch.Tensor:
    if isinstance(x, np.ndarray):
        if np.iscomplexobj(x):
            raise ValueError(f"{name} must be real (magnitude images); got dtype {x.dtype}")
        x = torch.from_numpy(np.ascontiguousarray(x))
    elif not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a numpy array or torch tensor; got {type(x).__name__}")
    if torch.is_complex(x):
        raise ValueError(f"{name} must be real (magnitude images); got dtype {x.dtype}")
    return x.detach().to(device="cpu", dtype=torch.float64)


def _pair(gt: ArrayLike, pred: ArrayLike, ndim: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    g = _as_float64(gt, "gt")
    p = _as_float64(pred, "pred")
    if ndim is not None and g.ndim != ndim:
        raise ValueError(f"gt must have {ndim} dimensions [S, H, W]; got shape {tuple(g.shape)}")
    if g.shape != p.shape:
        raise ValueError(f"pred of shape {tuple(p.shape)} must match gt of shape {tuple(g.shape)}")
    if g.numel() == 0:
        raise ValueError("gt is empty")
    return g, p


def _maxval(g: torch.Tensor, maxval: float | None) -> float:
    value = float(g.max()) if maxval is None else float(maxval)
    if not value > 0:
        raise ValueError(f"maxval (data range) must be positive; got {value}")
    return value


def nmse(gt: ArrayLike, pred: ArrayLike) -> float:
    """Normalised mean squared error of a volume, ``||gt - pred||^2 / ||gt||^2`` (fastMRI ``nmse``).

    Args:
        gt: reference, any shape (typically ``[S, H, W]``).
        pred: reconstruction, same shape.

    Returns:
        The NMSE.
    """
    g, p = _pair(gt, pred)
    return float((g - p).square().sum() / g.square().sum())


def psnr(gt: ArrayLike, pred: ArrayLike, maxval: float | None = None) -> float:
    """Peak signal-to-noise ratio of a volume in dB (fastMRI ``psnr``).

    Args:
        gt: reference, any shape (typically ``[S, H, W]``).
        pred: reconstruction, same shape.
        maxval: data range; default ``gt.max()`` over the whole volume.

    Returns:
        ``10 log10(maxval^2 / mse)`` (``inf`` when the images are identical).
    """
    g, p = _pair(gt, pred)
    mse = float((g - p).square().mean())
    peak = _maxval(g, maxval)
    return math.inf if mse == 0 else 10.0 * math.log10(peak * peak / mse)


def _ssim_maps(g: torch.Tensor, p: torch.Tensor, data_range: float) -> torch.Tensor:
    """Mean SSIM of each slice ``[S, H, W]`` over the valid (window-inside) pixels, ``[S]``."""
    if g.shape[-1] < WIN_SIZE or g.shape[-2] < WIN_SIZE:
        raise ValueError(f"images must be at least {WIN_SIZE}x{WIN_SIZE} for SSIM; got {tuple(g.shape[-2:])}")
    npix = WIN_SIZE * WIN_SIZE
    cov_norm = npix / (npix - 1)
    stack = torch.stack([g, p, g * g, p * p, g * p], dim=1)  # [S, 5, H, W]
    means = F.avg_pool2d(stack, WIN_SIZE, stride=1)  # windows fully inside the image only
    ux, uy, uxx, uyy, uxy = means.unbind(dim=1)
    vx = cov_norm * (uxx - ux * ux)
    vy = cov_norm * (uyy - uy * uy)
    vxy = cov_norm * (uxy - ux * uy)
    c1 = (K1 * data_range) ** 2
    c2 = (K2 * data_range) ** 2
    num = (2 * ux * uy + c1) * (2 * vxy + c2)
    den = (ux * ux + uy * uy + c1) * (vx + vy + c2)
    return (num / den).mean(dim=(-2, -1))


def ssim(gt: ArrayLike, pred: ArrayLike, maxval: float | None = None) -> float:
    """Structural similarity of a volume: the mean of per-slice SSIMs (fastMRI ``ssim``).

    Args:
        gt: reference magnitude volume ``[S, H, W]`` (3-D, as fastMRI requires).
        pred: reconstruction ``[S, H, W]``.
        maxval: data range; default ``gt.max()`` over the whole volume.

    Returns:
        The SSIM.
    """
    return float(ssim_per_slice(gt, pred, maxval).mean())


def ssim_per_slice(gt: ArrayLike, pred: ArrayLike, maxval: float | None = None) -> torch.Tensor:
    """SSIM of every slice, with fastMRI's volume-level data range by default.

    Args:
        gt: reference magnitude volume ``[S, H, W]``.
        pred: reconstruction ``[S, H, W]``.
        maxval: data range; default ``gt.max()`` over the whole volume (pass a value for per-slice ranges).

    Returns:
        float64 tensor ``[S]``.
    """
    g, p = _pair(gt, pred, ndim=3)
    return _ssim_maps(g, p, _maxval(g, maxval))


def psnr_per_slice(gt: ArrayLike, pred: ArrayLike, maxval: float | None = None) -> torch.Tensor:
    """PSNR of every slice (per-slice MSE), with the volume's ``gt.max()`` as data range by default.

    Args:
        gt: reference ``[S, H, W]``.
        pred: reconstruction ``[S, H, W]``.
        maxval: data range; default ``gt.max()`` over the whole volume.

    Returns:
        float64 tensor ``[S]`` (``inf`` for identical slices).
    """
    g, p = _pair(gt, pred, ndim=3)
    mse = (g - p).square().mean(dim=(-2, -1))
    peak = _maxval(g, maxval)
    return 10.0 * torch.log10(peak * peak / mse)


def nmse_per_slice(gt: ArrayLike, pred: ArrayLike) -> torch.Tensor:
    """NMSE of every slice, ``||gt_s - pred_s||^2 / ||gt_s||^2``.

    Args:
        gt: reference ``[S, H, W]``.
        pred: reconstruction ``[S, H, W]``.

    Returns:
        float64 tensor ``[S]`` (``nan``/``inf`` for an all-zero reference slice).
    """
    g, p = _pair(gt, pred, ndim=3)
    return (g - p).square().sum(dim=(-2, -1)) / g.square().sum(dim=(-2, -1))


class MetricsAggregator:
    """Accumulates per-volume NMSE, PSNR and SSIM, like fastMRI's ``evaluate.Metrics``.

    ``summary()`` gives the mean and the sample standard deviation (``ddof = 1``, as ``runstats``) of each metric
    over the pushed volumes; ``str()`` prints ``NAME = mean +/- 2*std`` as fastMRI does.

    Example:
        >>> agg = MetricsAggregator()
        >>> agg.push(target_volume, recon_volume)  # [S, H, W] each
        >>> agg.summary()["SSIM"]["mean"]
    """

    names: Sequence[str] = ("NMSE", "PSNR", "SSIM")

    def __init__(self) -> None:
        self.values: dict[str, list[float]] = {name: [] for name in self.names}

    def push(self, gt: ArrayLike, pred: ArrayLike, maxval: float | None = None) -> dict[str, float]:
        """Score one volume ``[S, H, W]`` and store the result.

        Args:
            gt: reference volume ``[S, H, W]``.
            pred: reconstruction ``[S, H, W]``.
            maxval: data range; default ``gt.max()`` of this volume.

        Returns:
            The volume's metrics.
        """
        scores = {"NMSE": nmse(gt, pred), "PSNR": psnr(gt, pred, maxval), "SSIM": ssim(gt, pred, maxval)}
        for name, value in scores.items():
            self.values[name].append(value)
        return scores

    def __len__(self) -> int:
        return len(self.values[self.names[0]])

    def summary(self) -> dict[str, dict[str, float]]:
        """``{name: {"mean": ..., "std": ..., "count": ...}}``; std is ``nan`` for fewer than two volumes."""
        out = {}
        for name, values in self.values.items():
            arr = np.asarray(values, dtype=np.float64)
            mean = float(arr.mean()) if arr.size else math.nan
            std = float(arr.std(ddof=1)) if arr.size > 1 else math.nan
            out[name] = {"mean": mean, "std": std, "count": float(arr.size)}
        return out

    def __str__(self) -> str:
        summary = self.summary()
        return " ".join(
            f"{name} = {summary[name]['mean']:.4g} +/- {2 * summary[name]['std']:.4g}" for name in sorted(summary)
        )
