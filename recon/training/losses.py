"""Training losses: differentiable SSIM (fastMRI's ``SSIMLoss``) + L1 with the references' time-step weighting.

The SSIM uses a 7x7 uniform window, ``K1 = 0.01``, ``K2 = 0.03`` and sample covariances (``N / (N - 1)``), as
fastMRI's ``SSIMLoss`` and :mod:`recon.metrics`; the data range is the maximum of each target. The recurrent
models' intermediate estimates are weighted as in ATOMMIC's CIRIM / RIM: ``logspace(-1, 0)`` over the time steps of
each cascade and again over the cascades (later estimates count more), each set of weights normalised to sum to 1.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from recon.ops import center_crop  # re-exported for the training loop: the one centre crop (recon.ops._shapes)

__all__ = ["center_crop", "l1_loss", "ssim_loss", "step_weights", "weighted_prediction_loss"]

WIN_SIZE = 7
K1 = 0.01
K2 = 0.03


def step_weights(n: int) -> torch.Tensor:
    """``logspace(-1, 0, n)`` normalised to sum to 1 (float64, ``[n]``)."""
    if n < 1:
        raise ValueError(f"need at least one step; got {n}")
    w = torch.logspace(-1, 0, n, dtype=torch.float64)
    return w / w.sum()


def _as_batch(x: torch.Tensor) -> torch.Tensor:
    """Magnitude images as ``[B, 1, H, W]`` float."""
    if torch.is_complex(x):
        x = x.abs()
    if x.ndim == 2:
        x = x.unsqueeze(0)
    if x.ndim != 3:
        raise ValueError(f"images must be [B, H, W] or [H, W]; got shape {tuple(x.shape)}")
    x = x.unsqueeze(1)
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def ssim_loss(pred: torch.Tensor, target: torch.Tensor, data_range: torch.Tensor | None = None) -> torch.Tensor:
    """``1 - SSIM`` averaged over the batch (differentiable in ``pred``).

    Args:
        pred: ``[B, H, W]`` (complex images are compared by magnitude).
        target: same shape.
        data_range: ``[B]`` data ranges; default the maximum of each target magnitude.

    Returns:
        Scalar loss (0 for identical images).
    """
    x, y = _as_batch(pred), _as_batch(target)
    if x.shape != y.shape:
        raise ValueError(f"pred {tuple(x.shape)} and target {tuple(y.shape)} must have the same shape")
    if x.shape[-1] < WIN_SIZE or x.shape[-2] < WIN_SIZE:
        raise ValueError(f"images must be at least {WIN_SIZE}x{WIN_SIZE}; got {tuple(x.shape[-2:])}")
    if data_range is None:
        data_range = y.detach().amax(dim=(1, 2, 3))
    data_range = data_range.to(x).reshape(-1, 1, 1, 1).clamp_min(torch.finfo(x.dtype).tiny)
    npix = WIN_SIZE * WIN_SIZE
    cov_norm = npix / (npix - 1)
    means = F.avg_pool2d(torch.cat([x, y, x * x, y * y, x * y], dim=1), WIN_SIZE, stride=1)
    ux, uy, uxx, uyy, uxy = means.unbind(dim=1)
    ux, uy, uxx, uyy, uxy = (m.unsqueeze(1) for m in (ux, uy, uxx, uyy, uxy))
    vx = cov_norm * (uxx - ux * ux)
    vy = cov_norm * (uyy - uy * uy)
    vxy = cov_norm * (uxy - ux * uy)
    c1 = (K1 * data_range) ** 2
    c2 = (K2 * data_range) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    return 1.0 - s.mean()


def l1_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference of the magnitudes."""
    return F.l1_loss(_as_batch(pred), _as_batch(target))


def weighted_prediction_loss(
    predictions: Sequence[Sequence[torch.Tensor]],
    target: torch.Tensor,
    ssim_weight: float = 1.0,
    l1_weight: float = 1.0,
) -> torch.Tensor:
    """``sum_c w_c sum_t w_t (ssim_weight * (1 - SSIM) + l1_weight * L1)(pred[c][t], target)``.

    Args:
        predictions: one list per cascade of the estimates of every time step (``model.predictions(...)``).
        target: ``[B, H, W]`` reference (magnitude or complex; compared by magnitude).
        ssim_weight: weight of the SSIM term.
        l1_weight: weight of the L1 term.

    Returns:
        Scalar loss.
    """
    if len(predictions) == 0 or any(len(c) == 0 for c in predictions):
        raise ValueError("predictions must hold at least one estimate per cascade")
    cascade_w = step_weights(len(predictions)).tolist()
    total = None
    for wc, cascade in zip(cascade_w, predictions, strict=True):
        for wt, pred in zip(step_weights(len(cascade)).tolist(), cascade, strict=True):
            term = 0.0
            if ssim_weight:
                term = term + ssim_weight * ssim_loss(pred, target)
            if l1_weight:
                term = term + l1_weight * l1_loss(pred, target)
            term = wc * wt * term
            total = term if total is None else total + term
    return total
