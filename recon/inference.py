"""Reconstruct whole fastMRI-style volumes: load, undersample (or use the file's mask), estimate coil maps, run a
model or a classical baseline, crop to the recon matrix.

The per-slice pre-processing is that of the training pipeline (:mod:`recon.data.transforms`):

1. ``masked_kspace`` ``[C, H, W]``: the file's k-space under its own ``mask`` (fastMRI test files), or the fully
   sampled k-space undersampled retrospectively by a mask function seeded from the file name
   (:func:`recon.data.subsample.seed_from_fname`, so every run and every process draws the same mask);
2. scale: ``max`` of the zero-filled RSS of ``masked_kspace`` (:class:`recon.data.transforms.KspaceNormalize`,
   ``mode="max"``); the k-space is divided by it and the output multiplied back, so results are in the file's units;
3. coil maps from the fully sampled centre (:func:`recon.ops.coils.estimate_sens_maps`, ``"acs"``; the centre
   columns for line masks, a centre box for 2-D masks).

Methods: the learned models (called as ``model(masked_kspace [B, C, H, W], mask, sens_maps) -> [B, H, W]``, see
:mod:`recon.models`), ``"zero-filled"`` (RSS of the zero-filled coil images, fastMRI's baseline) and ``"cs"``
(compressed-sensing SENSE, :func:`recon.baselines.tv_sense` by default or :func:`recon.baselines.wavelet_sense`).

Precision (:data:`PRECISIONS`): ``"fp32"`` runs the models in float32, ``"bf16"`` runs their convolutions and
recurrent cells under bfloat16 autocast. In both, the models' conv weights are put in channels-last (NHWC), the
layout oneDNN's fast kernels use (``channels_last=False`` keeps the weights' own layout); the FFTs, coil operators
and data consistency stay in complex64 (:func:`recon.models._common.channels_to_complex` casts every conv output
back before it meets complex data), and the models return complex64. The baselines have no bf16 form.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from recon.baselines import (
    TV_ITERATIONS,
    TV_LAMBDA,
    WAVELET_ITERATIONS,
    WAVELET_LAMBDA,
    tv_sense,
    wavelet_sense,
    zero_filled_rss,
)
from recon.data.keys import Challenge, FastMRIKey
from recon.data.mri_data import FastMRIDataError, VolumeInfo, read_volume, read_volume_info
from recon.data.subsample import MaskFunc, apply_mask, create_mask_for_mask_type, num_low_frequencies_from_mask
from recon.models import MODEL_NAMES  # re-exported: the one list of model names
from recon.ops import center_crop
from recon.ops.coils import estimate_sens_maps, rss
from recon.ops.fft import ifft2c
from recon.ops.noise import add_noise_floor, rss_noise_floor

__all__ = [
    "BASELINES",
    "Preprocessing",
    "CS_METHODS",
    "MASK_TYPES",
    "MODEL_NAMES",
    "ModelInputs",
    "PRECISIONS",
    "PreparedVolume",
    "build_mask_func",
    "check_precision",
    "cs_defaults",
    "load_volume",
    "make_reconstructor",
    "mask_record",
    "prepare_batch",
    "precision_context",
    "prepare_model",
    "reconstruct_volume",
    "to_file_units",
    "zero_filled_volume",
]

BASELINES = ("zero-filled", "cs")
CS_METHODS = ("tv", "wavelet")  # TV first: the stronger one on the synthetic phantoms (see recon/cli/predict.py)
# command-line mask names -> recon.data.subsample names; "equispaced" keeps the requested acceleration exactly
MASK_TYPES = {
    "equispaced": "equispaced_fraction",
    "random": "random",
    "gaussian2d": "gaussian2d",
    "poisson": "poisson2d",
}

PRECISIONS = ("fp32", "bf16")
Reconstructor = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Preprocessing:
    """How a model's inputs are prepared; must match its training (``recon.config.DataConfig``).

    Attributes:
        sens_method: Coil maps, ``"acs"`` or ``"espirit"`` (:func:`recon.ops.coils.estimate_sens_maps`).
        normalize: Scale statistic of the zero-filled RSS image, ``"max"`` or ``"mean"``.
        noise_floor: report ``sqrt(|x|^2 + b^2)`` with ``b`` the RSS noise floor measured on the input
            (:mod:`recon.ops.noise`), for models trained that way (``DataConfig.noise_floor``).
    """

    sens_method: str = "acs"
    normalize: str = "max"
    noise_floor: bool = False

    def __post_init__(self) -> None:
        if self.sens_method not in ("acs", "espirit"):
            raise ValueError(f"sens_method must be 'acs' or 'espirit'; got {self.sens_method!r}")
        if self.normalize not in ("max", "mean"):
            raise ValueError(f"normalize must be 'max' or 'mean'; got {self.normalize!r}")

    @classmethod
    def from_settings(cls, data: object) -> Preprocessing:
        """From a ``DataConfig``, a mapping with ``sens_method`` / ``normalize``, or ``None`` (the defaults)."""
        if data is None:
            return cls()
        get = data.get if isinstance(data, dict) else lambda key, default: getattr(data, key, default)
        return cls(str(get("sens_method", "acs")), str(get("normalize", "max")), bool(get("noise_floor", False)))


def build_mask_func(mask_type: str, acceleration: float, center_fraction: float) -> MaskFunc:
    """The mask function of a command-line mask name (one of :data:`MASK_TYPES`)."""
    if mask_type not in MASK_TYPES:
        raise ValueError(f"unknown mask {mask_type!r}; expected one of {sorted(MASK_TYPES)}")
    if not (math.isfinite(acceleration) and acceleration >= 1):  # inf / nan would give an empty or invalid mask
        raise ValueError(f"acceleration must be a finite number >= 1; got {acceleration}")
    return create_mask_for_mask_type(MASK_TYPES[mask_type], [center_fraction], [acceleration])


def mask_record(mask_func: MaskFunc, seed: int) -> dict[str, str | int | float]:
    """The provenance of retrospective undersampling by ``mask_func`` with ``seed`` (:mod:`recon.provenance`):
    ``mask`` (the command-line name of :data:`MASK_TYPES`, else the class name), ``acceleration``,
    ``center_fraction`` (numbers, or their lists as text for multi-setting mask functions) and ``seed``."""
    from recon.data.subsample import _MASK_CLASSES, MaskType

    names = {_MASK_CLASSES[MaskType(value)]: key for key, value in MASK_TYPES.items()}
    accelerations = [float(a) for a in mask_func.accelerations]
    fractions = [float(c) for c in mask_func.center_fractions]
    return {
        "mask": names.get(type(mask_func), type(mask_func).__name__),
        "acceleration": accelerations[0] if len(accelerations) == 1 else str(accelerations),
        "center_fraction": fractions[0] if len(fractions) == 1 else str(fractions),
        "seed": int(seed),
    }


@dataclass
class PreparedVolume:
    """One volume ready to reconstruct.

    Attributes:
        info: Validated file metadata.
        masked_kspace: Complex64 ``[S, C, H, W]`` (``C = 1`` for single-coil files), zero off the mask.
        mask: Float32 mask broadcastable to ``masked_kspace``: ``[1, 1, 1, W]`` (lines) or ``[1, 1, H, W]`` (2-D).
        num_low_frequencies: Width of the fully sampled centre (columns, or the side of the centre box).
        target: Float32 ``[S, h, w]`` reference from the file, or ``None``.
        retrospective: Whether the mask was drawn here (fully sampled input) rather than read from the file.
    """

    info: VolumeInfo
    masked_kspace: torch.Tensor
    mask: torch.Tensor
    num_low_frequencies: int
    target: torch.Tensor | None
    retrospective: bool

    @property
    def multicoil(self) -> bool:
        return self.info.challenge == Challenge.MULTICOIL

    @property
    def is_2d_mask(self) -> bool:
        return self.mask.shape[-2] != 1


def _mask_seed(fname: str, seed: int) -> tuple[int, ...]:
    return (int(seed), *(ord(ch) for ch in fname))


def load_volume(path: str | os.PathLike, mask_func: MaskFunc | None = None, seed: int = 0) -> PreparedVolume:
    """Read a fastMRI file and undersample it.

    Args:
        path: The HDF5 file.
        mask_func: Retrospective mask for fully sampled files (ignored when the file stores a ``mask``).
        seed: Combined with the file name into the mask seed.

    Returns:
        The prepared volume.

    Raises:
        FastMRIDataError: Naming the file and what is wrong (layout, values, a file that needs a mask, a mask
            without a fully sampled centre).
    """
    path = Path(path)
    if path.is_file() and path.stat().st_size == 0:
        raise FastMRIDataError(path, None, "empty file (0 bytes)")
    info = read_volume_info(path)
    volume = read_volume(info)
    kspace = volume.kspace if info.challenge == Challenge.MULTICOIL else volume.kspace.unsqueeze(1)
    zero = torch.zeros((), dtype=kspace.dtype)
    if volume.mask is not None:
        mask = volume.mask.reshape(1, 1, 1, -1)
        masked = torch.where(mask.bool(), kspace, zero)
        num_low = info.sample_attrs().get(str(FastMRIKey.NUM_LOW_FREQUENCIES))  # also fastMRI's 'num_low_frequency'
        if not isinstance(num_low, int | np.integer) or num_low <= 0:
            num_low = num_low_frequencies_from_mask(mask)
        retrospective = False
    else:
        if mask_func is None:
            raise FastMRIDataError(path, FastMRIKey.MASK, "file has no mask and no retrospective mask was given")
        padding = (info.header.padding_left, info.header.padding_right)
        masked, mask, num_low = apply_mask(kspace, mask_func, seed=_mask_seed(info.fname, seed), padding=padding)
        mask = mask.reshape(1, 1, *mask.shape[-2:])
        retrospective = True
    if int(num_low) < 1:
        raise FastMRIDataError(path, FastMRIKey.MASK, "the mask has no fully sampled centre to estimate coil maps from")
    return PreparedVolume(info, masked, mask, int(num_low), volume.target, retrospective)


def cs_defaults(method: str) -> tuple[float, int]:
    """``(lambda, iterations)`` used by ``"cs"`` with regulariser ``method`` when none are given."""
    if method not in CS_METHODS:
        raise ValueError(f"unknown CS method {method!r}; expected one of {CS_METHODS}")
    return (TV_LAMBDA, TV_ITERATIONS) if method == "tv" else (WAVELET_LAMBDA, WAVELET_ITERATIONS)


def _cs(method: str, lam: float | None, num_iterations: int | None) -> Reconstructor:
    solver = {"wavelet": wavelet_sense, "tv": tv_sense}[method]
    default_lam, default_iterations = cs_defaults(method)
    lam = default_lam if lam is None else float(lam)
    num_iterations = default_iterations if num_iterations is None else num_iterations
    # checked here, not on the first slice, so a bad option fails before any file is read
    if not lam >= 0:
        raise ValueError(f"CS lambda must be >= 0; got {lam}")
    if isinstance(num_iterations, bool) or not isinstance(num_iterations, int) or num_iterations < 1:
        raise ValueError(f"CS iterations must be an integer >= 1; got {num_iterations!r}")

    def run(kspace: torch.Tensor, mask: torch.Tensor, sens: torch.Tensor) -> torch.Tensor:
        return solver(kspace, sens, mask, lam=lam, num_iterations=num_iterations)

    return run


def check_precision(precision: str) -> str:
    """Return ``precision`` if it is one of :data:`PRECISIONS`, else raise a one-line ``ValueError``."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {list(PRECISIONS)}; got {precision!r}")
    return precision


def precision_context(precision: str, device: str | torch.device) -> contextlib.AbstractContextManager:
    """The context a model runs in: bfloat16 autocast on ``device``'s type for ``"bf16"``, nothing for ``"fp32"``."""
    if check_precision(precision) == "bf16":
        return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def prepare_model(model: nn.Module, precision: str = "fp32", channels_last: bool = True) -> nn.Module:
    """Put ``model`` in eval mode and, with ``channels_last``, its conv weights in channels-last (in place; returned).

    Channels-last makes every conv output, and so every recurrent state, NHWC: one layout through each conv stack,
    the one oneDNN's fast kernels use, in both precisions. The convolutions then sum in another order than in
    NCHW, so fp32 outputs differ from a direct call of an NCHW model in the last bits (as they do between thread
    counts); ``channels_last=False`` leaves the weights' layout alone and gives exactly the direct call's outputs.
    """
    check_precision(precision)
    model = model.eval()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def _zero_filled(kspace: torch.Tensor, mask: torch.Tensor, sens: torch.Tensor) -> torch.Tensor:
    return zero_filled_rss(kspace)


def make_reconstructor(
    method: str | nn.Module,
    cs_method: str = "tv",
    cs_lambda: float | None = None,
    cs_iterations: int | None = None,
    precision: str = "fp32",
    channels_last: bool = True,
) -> Reconstructor:
    """A function ``(masked_kspace [B, C, H, W], mask, sens_maps) -> image [B, H, W]`` (complex or magnitude).

    Args:
        method: ``"zero-filled"``, ``"cs"``, or a model (:mod:`recon.models`), which is put in eval mode
            (:func:`prepare_model`).
        cs_method: ``"tv"`` or ``"wavelet"`` for ``"cs"``.
        cs_lambda: Regularisation weight of ``"cs"`` relative to ``max |A^H y|`` (default: :func:`cs_defaults`).
        cs_iterations: Iterations of ``"cs"`` (default: :func:`cs_defaults`).
        precision: ``"fp32"`` or ``"bf16"`` (models only; see the module docstring). A model's output is complex64
            in both.
        channels_last: Conv weights in channels-last (:func:`prepare_model`); ``False`` keeps the model's layout
            (fp32 outputs then bit-identical to calling the model directly).

    Raises:
        ValueError: For an unknown method or precision, bad CS settings, or ``"bf16"`` with a baseline.
    """
    check_precision(precision)
    if isinstance(method, nn.Module):
        model = prepare_model(method, precision, channels_last)

        def run(kspace: torch.Tensor, mask: torch.Tensor, sens: torch.Tensor) -> torch.Tensor:
            with precision_context(precision, kspace.device):
                return model(kspace, mask, sens)

        return run
    if precision != "fp32" and method in BASELINES:
        raise ValueError(f"precision={precision!r} applies to the learned models; the {method} baseline runs in fp32")
    if method == "zero-filled":
        return _zero_filled
    if method == "cs":
        if cs_method not in CS_METHODS:
            raise ValueError(f"unknown CS method {cs_method!r}; expected one of {CS_METHODS}")
        return _cs(cs_method, cs_lambda, cs_iterations)
    raise ValueError(f"unknown method {method!r}; expected a model or one of {BASELINES}")


def _normalise(kspace: torch.Tensor, mode: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-slice scale ``max`` (or ``mean``) of ``rss(F^-1 k)`` for ``[B, C, H, W]`` k-space, as
    :class:`recon.data.transforms.KspaceNormalize`; returns ``(k / scale, scale [B])``."""
    magnitude = rss(ifft2c(kspace), dim=-3)
    stat = magnitude.amax(dim=(-2, -1)) if mode == "max" else magnitude.mean(dim=(-2, -1))
    scale = stat.clamp_min(1e-12)
    return kspace / scale[:, None, None, None], scale


@dataclass
class ModelInputs:
    """A batch of slices as a model sees it (:func:`prepare_batch`).

    Attributes:
        masked_kspace: Complex ``[B, C, H, W]``, divided by ``scale``.
        mask: The mask, broadcastable to ``masked_kspace``.
        sens_maps: Complex coil maps ``[B, C, H, W]``.
        scale: Float32 ``[B]``: the per-slice scale the k-space was divided by.
        noise_floor: Float32 ``[B]``, the RSS noise floor in the units of ``masked_kspace``, or ``None`` when the
            pre-processing does not report it.
    """

    masked_kspace: torch.Tensor
    mask: torch.Tensor
    sens_maps: torch.Tensor
    scale: torch.Tensor
    noise_floor: torch.Tensor | None


def prepare_batch(
    masked_kspace: torch.Tensor,
    mask: torch.Tensor,
    num_low_frequencies: int,
    preprocessing: Preprocessing | None = None,
    sens_maps: torch.Tensor | None = None,
    acs_region: str = "lines",
) -> ModelInputs:
    """Scale undersampled slices, estimate their coil maps and measure their noise floor: the one place where model
    inputs are made (``recon predict``, :func:`reconstruct_volume`, the training data and its validation).

    Args:
        masked_kspace: Complex ``[B, C, H, W]``, zero off the mask.
        mask: Mask broadcastable to it.
        num_low_frequencies: Width of the fully sampled centre (columns, or the side of the centre box).
        preprocessing: Coil maps, scaling and noise floor (default: ACS maps, ``max`` scaling, no floor).
        sens_maps: Coil maps ``[B, C, H, W]`` already estimated from this k-space's centre (the training data
            caches them per slice); ``None`` estimates them from the scaled k-space.
        acs_region: ``"lines"`` or ``"box"`` (:func:`recon.ops.coils.estimate_sens_maps`).

    Returns:
        The inputs, scale and noise floor of the batch.
    """
    prep = preprocessing or Preprocessing()
    kspace, scale = _normalise(masked_kspace, prep.normalize)
    if sens_maps is None:
        sens_maps = estimate_sens_maps(kspace, num_low_frequencies, method=prep.sens_method, acs_region=acs_region)
    floor = rss_noise_floor(kspace, mask) if prep.noise_floor else None
    return ModelInputs(kspace, mask, sens_maps, scale, floor)


def to_file_units(
    image: torch.Tensor, scale: torch.Tensor | float, noise_floor: torch.Tensor | float | None = None
) -> torch.Tensor:
    """The reported magnitude of a reconstruction, in the units of the file: ``|x| * scale``, or
    ``sqrt(|x|^2 + b^2) * scale`` with the noise floor ``b`` of :func:`prepare_batch`.

    Args:
        image: Reconstruction ``[B, H, W]`` (complex, or already a magnitude) of inputs from :func:`prepare_batch`,
            or a crop of it.
        scale: Float32 ``[B]`` (or one number for every slice): :attr:`ModelInputs.scale`.
        noise_floor: ``[B]``, one number, or ``None``: :attr:`ModelInputs.noise_floor`.

    Returns:
        Float32 ``[B, H, W]`` magnitudes.
    """
    if noise_floor is not None:
        magnitude = add_noise_floor(image, noise_floor)
    else:
        magnitude = image.abs() if torch.is_complex(image) else image
    if isinstance(scale, torch.Tensor) and scale.ndim == 1:
        scale = scale[:, None, None]
    return (magnitude * scale).float()


def reconstruct_volume(
    volume: PreparedVolume,
    reconstructor: Reconstructor,
    batch_size: int = 1,
    device: str | torch.device = "cpu",
    progress: Callable[[Iterable[int]], Iterable[int]] | None = None,
    preprocessing: Preprocessing | None = None,
) -> np.ndarray:
    """Reconstruct every slice and crop to the recon matrix.

    Args:
        volume: From :func:`load_volume`.
        reconstructor: From :func:`make_reconstructor`.
        batch_size: Slices per call.
        device: Where the reconstruction runs.
        progress: Optional wrapper of the batch iterator (e.g. ``tqdm``).
        preprocessing: Coil maps and scaling (default ACS maps, ``max`` scaling); for a model, those it was
            trained with.

    Returns:
        Float32 magnitude volume ``[S, h, w]`` in the units of the file.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1; got {batch_size}")
    num_slices = volume.masked_kspace.shape[0]
    starts: Iterable[int] = range(0, num_slices, batch_size)
    if progress is not None:
        starts = progress(starts)
    prep = preprocessing or Preprocessing()
    region = "box" if volume.is_2d_mask else "lines"
    mask = volume.mask.to(device)
    outputs = []
    with torch.inference_mode():
        for start in starts:
            kspace = volume.masked_kspace[start : start + batch_size].to(device)
            inputs = prepare_batch(kspace, mask, volume.num_low_frequencies, prep, acs_region=region)
            image = reconstructor(inputs.masked_kspace, inputs.mask, inputs.sens_maps)
            outputs.append(to_file_units(image, inputs.scale, inputs.noise_floor).cpu())
    recon = torch.cat(outputs).numpy()
    return np.ascontiguousarray(center_crop(recon, volume.info.recon_size), dtype=np.float32)


def zero_filled_volume(volume: PreparedVolume) -> np.ndarray:
    """Zero-filled RSS ``[S, h, w]`` of a prepared volume, cropped to the recon matrix (for figures)."""
    with torch.inference_mode():
        image = zero_filled_rss(volume.masked_kspace)
    return np.ascontiguousarray(center_crop(image.numpy(), volume.info.recon_size), dtype=np.float32)
