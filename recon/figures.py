"""Comparison figures: the target, each reconstruction with its metrics, and error maps (PNG, matplotlib Agg).

Layout of :func:`comparison_figure` (one slice)::

    target        | zero-filled (SSIM, PSNR)  | model (SSIM, PSNR) | ...
    (empty)       | |error| (NMSE)            | |error| (NMSE)     | ...

Metrics use fastMRI's definitions (:mod:`recon.metrics`) with the data range of the whole target volume when
``maxval`` is given (as :func:`recon.metrics.ssim` does for a volume), else of the slice. All images share one grey
scale ``[0, maxval]``; all error maps share ``[0, error_scale * maxval]``.

Figures are built with :class:`matplotlib.figure.Figure`, not ``pyplot``: PNGs are rendered by the Agg canvas
without selecting a global backend, so importing this module never changes how a notebook or GUI plots.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from recon._atomic import atomic_write
from recon.metrics import nmse_per_slice, psnr_per_slice, ssim_per_slice

__all__ = ["comparison_figure", "slice_metrics"]


def slice_metrics(target: np.ndarray, image: np.ndarray, maxval: float | None = None) -> dict[str, float]:
    """SSIM, PSNR and NMSE of one slice ``[h, w]`` (fastMRI definitions, data range ``maxval``)."""
    if target.shape != image.shape:
        raise ValueError(f"target {target.shape} and image {image.shape} differ in shape")
    gt, pred = target[None].astype(np.float64), image[None].astype(np.float64)
    return {
        "SSIM": float(ssim_per_slice(gt, pred, maxval)[0]),
        "PSNR": float(psnr_per_slice(gt, pred, maxval)[0]),
        "NMSE": float(nmse_per_slice(gt, pred)[0]),
    }


def comparison_figure(
    target: np.ndarray | None,
    images: Mapping[str, np.ndarray],
    path: str | os.PathLike,
    title: str | None = None,
    maxval: float | None = None,
    error_scale: float = 0.25,
) -> Path:
    """Write a PNG comparing reconstructions of one slice with the target (written atomically).

    Args:
        target: Reference magnitude ``[h, w]``, or ``None`` (test files: images only, no metrics or error maps).
        images: Label -> magnitude ``[h, w]`` (e.g. ``{"zero-filled": zf, "cirim": recon}``), shown left to right.
        path: Output ``.png``.
        title: Figure title.
        maxval: Data range of the metrics and of the grey scale; default the target's (else the images') maximum.
        error_scale: Error maps are shown on ``[0, error_scale * maxval]``.

    Returns:
        The written path.
    """
    if not images:
        raise ValueError("images must hold at least one reconstruction")
    path = Path(path)
    if maxval is None:
        maxval = float(target.max()) if target is not None else max(float(im.max()) for im in images.values())
    maxval = max(maxval, 1e-12)
    cols = len(images) + (target is not None)
    rows = 2 if target is not None else 1
    fig = Figure(figsize=(2.6 * cols, 3.0 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.ravel():
        ax.set_axis_off()
    col = 0
    if target is not None:
        axes[0, 0].imshow(target, cmap="gray", vmin=0.0, vmax=maxval)
        axes[0, 0].set_title("target", fontsize=9)
        col = 1
    for label, image in images.items():
        axes[0, col].imshow(image, cmap="gray", vmin=0.0, vmax=maxval)
        if target is None:
            axes[0, col].set_title(label, fontsize=9)
        else:
            scores = slice_metrics(target, image, maxval)
            axes[0, col].set_title(f"{label}\nSSIM {scores['SSIM']:.3f}  PSNR {scores['PSNR']:.1f} dB", fontsize=9)
            error = axes[1, col].imshow(np.abs(image - target), cmap="inferno", vmin=0.0, vmax=error_scale * maxval)
            axes[1, col].set_title(f"|{label} - target|\nNMSE {scores['NMSE']:.4f}", fontsize=9)
        col += 1
    if target is not None:
        fig.colorbar(error, ax=axes[1, 0], fraction=0.8, location="left", label="|error|")
    if title:
        fig.suptitle(title, fontsize=10)
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110), suffix=".png")
