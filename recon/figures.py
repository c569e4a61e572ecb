"""Comparison figures: the target, each reconstruction with its metrics, and error maps (PNG, matplotlib Agg).

Layout of :func:`comparison_figure` (one slice)::

    target        | zero-filled (SSIM, PSNR)  | model (SSIM, PSNR) | ...
    sampling mask | |error| x4 (NMSE)         | |error| x4 (NMSE)  | ...     (mask: when given, else empty)
    target zoom   | zero-filled zoom          | model zoom         | ...     (only with ``zoom``)

Error maps are amplified: shown on ``[0, error_scale * maxval]`` (gain ``1 / error_scale``, 4x by default), so errors
of a few percent are visible; the gain is written in their titles.

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
from matplotlib.patches import Rectangle

from recon.metrics import nmse_per_slice, psnr_per_slice, ssim_per_slice

__all__ = ["comparison_figure", "mask_image", "slice_metrics"]


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
    mask: np.ndarray | None = None,
    zoom: tuple[int, int, int, int] | str | None = None,
) -> Path:
    """Write a PNG comparing reconstructions of one slice with the target (written atomically).

    Args:
        target: Reference magnitude ``[h, w]``, or ``None`` (test files: images only, no metrics or error maps).
        images: Label -> magnitude ``[h, w]`` (e.g. ``{"zero-filled": zf, "cirim": recon}``), shown left to right.
        path: Output ``.png``.
        title: Figure title.
        maxval: Data range of the metrics and of the grey scale; default the target's (else the images') maximum.
        error_scale: Error maps are shown on ``[0, error_scale * maxval]`` (amplified ``1 / error_scale`` times).
        mask: Sampling mask ``[H, W]`` or ``[W]`` (k-space, 1 = sampled), drawn under the target (or first, without
            a target), titled with its acceleration.
        zoom: Region ``(top, left, height, width)`` of the images drawn enlarged in an extra row (outlined on the
            first panel), or ``"auto"``: the central quarter of the area; ``None``: no zoom row.

    Returns:
        The written path.
    """
    if not images:
        raise ValueError("images must hold at least one reconstruction")
    path = Path(path)
    if maxval is None:
        maxval = float(target.max()) if target is not None else max(float(im.max()) for im in images.values())
    maxval = max(maxval, 1e-12)
    shape = next(iter(images.values())).shape
    box = _zoom_box(zoom, shape)
    mask_col = int(mask is not None and target is None)  # without a target the mask gets its own column
    cols = len(images) + (target is not None) + mask_col
    rows = (2 if target is not None else 1) + (box is not None)
    fig = Figure(figsize=(2.6 * cols, 3.0 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.ravel():
        ax.set_axis_off()
    if mask is not None:
        _draw_mask(axes[1, 0] if target is not None else axes[0, 0], mask)
    col = mask_col
    panels = ([("target", target)] if target is not None else []) + list(images.items())
    if target is not None:
        axes[0, col].imshow(target, cmap="gray", vmin=0.0, vmax=maxval)
        axes[0, col].set_title("target", fontsize=9)
        col += 1
    gain = f"x{1 / error_scale:g}"
    for label, image in images.items():
        axes[0, col].imshow(image, cmap="gray", vmin=0.0, vmax=maxval)
        if target is None:
            axes[0, col].set_title(label, fontsize=9)
        else:
            scores = slice_metrics(target, image, maxval)
            axes[0, col].set_title(f"{label}\nSSIM {scores['SSIM']:.3f}  PSNR {scores['PSNR']:.1f} dB", fontsize=9)
            error = axes[1, col].imshow(np.abs(image - target), cmap="inferno", vmin=0.0, vmax=error_scale * maxval)
            axes[1, col].set_title(f"|{label} - target| {gain}\nNMSE {scores['NMSE']:.4f}", fontsize=9)
        col += 1
    if box is not None:
        top, left, height, width = box
        first = axes[0, mask_col]
        first.add_patch(Rectangle((left - 0.5, top - 0.5), width, height, fill=False, edgecolor="yellow", lw=1.0))
        for offset, (label, image) in enumerate(panels):
            ax = axes[-1, mask_col + offset]
            ax.imshow(image[top : top + height, left : left + width], cmap="gray", vmin=0.0, vmax=maxval)
            ax.set_title(f"{label} (zoom)", fontsize=9)
    if target is not None:  # in the empty slot under the target, else (the mask is there) right of the last map
        where = {"ax": axes[1, 0], "fraction": 0.8, "location": "left"} if mask is None else {"ax": axes[1, -1]}
        fig.colorbar(error, label=f"|error| ({gain})", **where)
    if title:
        fig.suptitle(title, fontsize=10)
    path.parent.mkdir(parents=True, exist_ok=True)
    from recvision.utils.atomic import atomic_write

    return atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110), suffix=".png")


def _zoom_box(zoom: tuple[int, int, int, int] | str | None, shape: tuple[int, ...]) -> tuple[int, int, int, int] | None:
    """``(top, left, height, width)`` inside an image of ``shape [h, w]``; ``"auto"``: the central quarter."""
    if zoom is None:
        return None
    height, width = shape[-2:]
    if isinstance(zoom, str):
        if zoom != "auto":
            raise ValueError(f"zoom must be (top, left, height, width), 'auto' or None; got {zoom!r}")
        h, w = max(height // 2, 1), max(width // 2, 1)
        return (height - h) // 2, (width - w) // 2, h, w
    top, left, h, w = (int(v) for v in zoom)
    if not (0 <= top and 0 <= left and h > 0 and w > 0 and top + h <= height and left + w <= width):
        raise ValueError(f"zoom box (top, left, height, width) = {zoom} must lie inside the image {(height, width)}")
    return top, left, h, w


def _draw_mask(ax: object, mask: np.ndarray) -> None:
    """The k-space sampling mask ``[H, W]`` (or line mask ``[W]``, drawn as columns) with its acceleration."""
    mask = np.asarray(mask, dtype=np.float32)
    image = np.broadcast_to(mask, (max(mask.shape[-1] // 2, 1), mask.shape[-1])) if mask.ndim == 1 else mask
    accel = image.size / max(float(image.sum()), 1.0)
    ax.imshow(image, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")  # type: ignore[attr-defined]
    ax.set_title(f"sampling mask ({accel:.1f}x)", fontsize=9)  # type: ignore[attr-defined]


def mask_image(mask: object) -> np.ndarray:
    """A broadcastable mask (``[1, 1, 1, W]`` lines or ``[1, 1, H, W]``, numpy or torch) as ``[W]`` / ``[H, W]``."""
    array = np.asarray(mask.detach().cpu() if hasattr(mask, "detach") else mask, dtype=np.float32)  # type: ignore[union-attr]
    array = array.reshape(array.shape[-2:])
    return array[0] if array.shape[0] == 1 else array
