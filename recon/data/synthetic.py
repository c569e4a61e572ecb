"""Synthetic fastMRI-layout data: phantoms or packaged anatomy, smooth coil maps, phase and noise.

No package ships raw multi-coil k-space, so it is simulated. For each volume, per slice:

1. a magnitude image ``m`` from a source of :mod:`recon.data.sources`, placed in the centre of the ``H x W``
   field of view (inside the recon matrix): phantoms, packaged real anatomy (nilearn's MNI152 template, nibabel's
   example EPI, pydicom's MR test images) or natural-image texture; ``"realistic"`` draws the source of each volume
   from :data:`recon.data.sources.TRAINING_MIX`;
2. a smooth random phase ``phi`` (low-order polynomial), giving ``x = m exp(i phi)``;
3. birdcage-like coil maps ``S_c`` (coils on a ring around the object, magnitude falling off with distance, phase
   turning with the angle), normalised so that ``sum_c |S_c|^2 = 1``;
4. k-space ``y_c = F(S_c x) + n_c`` with the centred orthonormal FFT of :mod:`recon.ops.fft` and complex Gaussian
   noise ``n_c`` of standard deviation ``noise_std * max|x|`` per real/imaginary part;
5. optional zero padding of the outer phase-encoding columns (as in fastMRI's knee data) and an optional mask
   (test-set layout: undersampled k-space, ``mask``, ``acceleration`` and ``num_low_frequencies`` attributes).

The target is computed as fastMRI's: ``reconstruction_rss = rss(F^-1 y)`` (``reconstruction_esc = |F^-1 y|`` for
single-coil), centre-cropped to the recon matrix. Attributes ``max`` (volume max of the target), ``norm`` (its
Euclidean norm), ``acquisition`` and ``patient_id`` are set, and a valid ISMRMRD XML header records the encoded and
recon matrices and the acquired columns. Coil count and noise level may be ranges, drawn per volume. Everything is
deterministic given ``seed``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import h5py
import numpy as np
import torch

from recon.data.keys import Challenge, FastMRIKey
from recon.data.sources import SOURCES, pick_source, source_images
from recon.data.subsample import seed_from_fname
from recon.ops.fft import fft2c, ifft2c

if TYPE_CHECKING:
    from recon.data.subsample import MaskFunc

__all__ = [
    "SOURCES",
    "SyntheticVolume",
    "birdcage_maps",
    "make_ismrmrd_header",
    "simulate_volume",
    "source_images",
    "write_synthetic_dataset",
    "write_volume",
]

_OBJECT_FILL = 0.9  # fraction of the recon matrix the object spans


# ----------------------------------------------------------------------------------------------------------------
# Coils, phase, header


def birdcage_maps(
    num_coils: int, shape: tuple[int, int], ring_radius: float = 1.3, rotation: float = 0.0
) -> np.ndarray:
    """Smooth birdcage-like coil maps, normalised to ``sum_c |S_c|^2 = 1`` at every pixel.

    Coil ``c`` sits at angle ``theta_c = rotation + 2 pi c / C`` on a ring of radius ``ring_radius`` (in units of the
    half field of view); its map is ``exp(i (theta_c + alpha_c)) / d_c`` with ``d_c`` the distance to the coil and
    ``alpha_c`` the direction from the coil to the pixel (the classic birdcage simulation).

    Args:
        num_coils: ``C``.
        shape: ``(H, W)``.
        ring_radius: Ring radius (> 1 puts the coils outside the field of view).
        rotation: Angle of the first coil, radians.

    Returns:
        complex64 ``[C, H, W]``.
    """
    if num_coils < 1:
        raise ValueError(f"num_coils must be >= 1; got {num_coils}")
    h, w = shape
    y = np.linspace(-1.0, 1.0, h)[:, None]
    x = np.linspace(-1.0, 1.0, w)[None, :] * (w / h)
    maps = []
    for c in range(num_coils):
        theta = rotation + 2.0 * math.pi * c / num_coils
        cy, cx = ring_radius * math.sin(theta), ring_radius * math.cos(theta) * max(w / h, 1.0)
        dy, dx = y - cy, x - cx
        maps.append(np.exp(1j * (theta + np.arctan2(dy, dx))) / np.sqrt(dy**2 + dx**2))
    maps = np.stack(maps)
    maps /= np.sqrt(np.sum(np.abs(maps) ** 2, axis=0, keepdims=True))
    return maps.astype(np.complex64)


def _smooth_phase(shape: tuple[int, int], rng: np.random.Generator, amplitude: float = math.pi / 3) -> np.ndarray:
    h, w = shape
    y = np.linspace(-1.0, 1.0, h)[:, None]
    x = np.linspace(-1.0, 1.0, w)[None, :]
    coeffs = rng.uniform(-1.0, 1.0, 6)
    terms = coeffs[0] + coeffs[1] * y + coeffs[2] * x + coeffs[3] * x * y + coeffs[4] * y**2 + coeffs[5] * x**2
    return amplitude * terms / 3.0


def make_ismrmrd_header(
    encoding_size: tuple[int, int],
    recon_size: tuple[int, int],
    padding: tuple[int, int] = (0, 0),
    num_coils: int = 1,
    num_slices: int = 1,
    patient_id: str = "synthetic",
    fov_mm: tuple[float, float, float] = (220.0, 220.0, 3.0),
) -> bytes:
    """A minimal valid ISMRMRD XML header for Cartesian 2-D data (schema order of ``ismrmrd.xsd``).

    Args:
        encoding_size: ``(H, W)`` of the k-space (readout x phase encoding).
        recon_size: ``(h, w)`` of the reconstruction matrix.
        padding: Zero-padded phase-encoding columns ``(left, right)``; sets ``kspace_encoding_step_1``'s
            ``center = W // 2 - left`` and ``maximum = W - left - right - 1`` so that fastMRI's formula gives back
            ``padding_left = left`` and ``padding_right = W - right``.
        num_coils: Receiver channels.
        num_slices: Slices (``encodingLimits/slice``).
        patient_id: ``subjectInformation/patientID``.
        fov_mm: Field of view of both the encoded and the recon space.

    Returns:
        UTF-8 XML bytes.
    """
    (enc_x, enc_y), (rec_x, rec_y) = encoding_size, recon_size
    left, right = padding
    step1_max = enc_y - left - right - 1
    step1_center = enc_y // 2 - left
    fov = "".join(f"<{ax}>{v}</{ax}>" for ax, v in zip("xyz", fov_mm, strict=True))

    def limit(name: str, maximum: int, center: int) -> str:
        return f"<{name}><minimum>0</minimum><maximum>{maximum}</maximum><center>{center}</center></{name}>"

    xml = (
        '<?xml version="1.0" encoding="utf-8"?>\n'
        '<ismrmrdHeader xmlns="http://www.ismrm.org/ISMRMRD" xmlns:xs="http://www.w3.org/2001/XMLSchema" '
        'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
        'xsi:schemaLocation="http://www.ismrm.org/ISMRMRD ismrmrd.xsd">'
        f"<subjectInformation><patientID>{patient_id}</patientID></subjectInformation>"
        "<acquisitionSystemInformation><systemVendor>recon.data.synthetic</systemVendor>"
        f"<receiverChannels>{num_coils}</receiverChannels></acquisitionSystemInformation>"
        "<experimentalConditions><H1resonanceFrequency_Hz>127740000</H1resonanceFrequency_Hz></experimentalConditions>"
        "<encoding>"
        f"<encodedSpace><matrixSize><x>{enc_x}</x><y>{enc_y}</y><z>1</z></matrixSize>"
        f"<fieldOfView_mm>{fov}</fieldOfView_mm></encodedSpace>"
        f"<reconSpace><matrixSize><x>{rec_x}</x><y>{rec_y}</y><z>1</z></matrixSize>"
        f"<fieldOfView_mm>{fov}</fieldOfView_mm></reconSpace>"
        "<encodingLimits>"
        + limit("kspace_encoding_step_0", enc_x - 1, enc_x // 2)
        + limit("kspace_encoding_step_1", step1_max, step1_center)
        + limit("kspace_encoding_step_2", 0, 0)
        + limit("average", 0, 0)
        + limit("slice", max(num_slices - 1, 0), 0)
        + limit("contrast", 0, 0)
        + limit("phase", 0, 0)
        + limit("repetition", 0, 0)
        + limit("set", 0, 0)
        + limit("segment", 0, 0)
        + "</encodingLimits><trajectory>cartesian</trajectory></encoding></ismrmrdHeader>"
    )
    return xml.encode("utf-8")


# ----------------------------------------------------------------------------------------------------------------
# Simulation and writing


@dataclass(frozen=True)
class SyntheticVolume:
    """A simulated volume (numpy arrays).

    Attributes:
        kspace: complex64 ``[S, C, H, W]`` (``[S, H, W]`` single-coil), noisy, padded, masked if a mask was given.
        target: float32 ``[S, h, w]``: RSS (ESC for single-coil) of the fully sampled noisy k-space, cropped.
        image: complex64 ``[S, H, W]``: the noise-free object ``m exp(i phi)``.
        sens: complex64 ``[C, H, W]``: the coil maps (ones for single-coil).
        mask: float32 ``[W]`` or ``None``.
        num_low_frequencies: From the mask function, or ``None``.
    """

    kspace: np.ndarray
    target: np.ndarray
    image: np.ndarray
    sens: np.ndarray
    mask: np.ndarray | None = None
    num_low_frequencies: int | None = None


def _crop(volume: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    top, left = (volume.shape[-2] - size[0]) // 2, (volume.shape[-1] - size[1]) // 2
    return volume[..., top : top + size[0], left : left + size[1]]


def simulate_volume(
    num_slices: int,
    shape: tuple[int, int],
    num_coils: int,
    source: str = "phantom",
    rng: np.random.Generator | None = None,
    *,
    volume_index: int = 0,
    recon_size: tuple[int, int] | None = None,
    noise_std: float = 0.005,
    padding: tuple[int, int] = (0, 0),
    challenge: str | Challenge = Challenge.MULTICOIL,
    mask_func: MaskFunc | None = None,
    mask_seed: int | Sequence[int] | None = None,
) -> SyntheticVolume:
    """Simulate one volume (see the module docstring for the model).

    Args:
        num_slices: ``S``.
        shape: k-space / field-of-view size ``(H, W)``.
        num_coils: ``C`` (ignored for single-coil).
        source: One of :data:`SOURCES`.
        rng: Random generator; a fresh ``default_rng(0)`` if ``None``.
        volume_index: See :func:`source_images`.
        recon_size: Recon matrix ``(h, w)`` (default ``shape``); the object fits inside it.
        noise_std: Noise standard deviation per real/imaginary part, relative to ``max|x|``.
        padding: Phase-encoding columns ``(left, right)`` set to zero.
        challenge: ``"multicoil"`` or ``"singlecoil"``.
        mask_func: Optional 1-D mask function; the stored k-space is then undersampled.
        mask_seed: Seed passed to ``mask_func``.

    Returns:
        The simulated arrays.
    """
    rng = np.random.default_rng(0) if rng is None else rng
    challenge = Challenge(challenge)
    height, width = shape
    recon_size = tuple(shape) if recon_size is None else tuple(recon_size)
    if not (0 < recon_size[0] <= height and 0 < recon_size[1] <= width):
        raise ValueError(f"recon_size {recon_size} must fit in the k-space shape {shape}")
    left, right = padding
    if left < 0 or right < 0 or left + right >= width:
        raise ValueError(f"padding {padding} must be non-negative and leave columns of W={width}")

    box = (max(1, round(recon_size[0] * _OBJECT_FILL)), max(1, round(recon_size[1] * _OBJECT_FILL)))
    magnitude = np.zeros((num_slices, height, width))
    top, lft = (height - box[0]) // 2, (width - box[1]) // 2
    magnitude[:, top : top + box[0], lft : lft + box[1]] = source_images(source, num_slices, box, rng, volume_index)
    image = magnitude * np.exp(1j * _smooth_phase(shape, rng))
    if challenge == Challenge.MULTICOIL:
        sens = birdcage_maps(num_coils, shape, ring_radius=rng.uniform(1.2, 1.6), rotation=rng.uniform(0, 2 * math.pi))
        coil_images = image[:, None] * sens[None]
    else:
        sens = np.ones((1, height, width), dtype=np.complex64)
        coil_images = image
    kspace = fft2c(torch.from_numpy(coil_images.astype(np.complex64)))
    sigma = noise_std * float(np.abs(image).max())
    noise = rng.standard_normal((2, *kspace.shape)).astype(np.float32) * sigma
    kspace = kspace + torch.complex(torch.from_numpy(noise[0]), torch.from_numpy(noise[1]))
    columns = torch.arange(width)
    acquired = (columns >= left) & (columns < width - right)
    kspace = torch.where(acquired, kspace, torch.zeros((), dtype=kspace.dtype))

    full = ifft2c(kspace)
    target = full.abs() if challenge == Challenge.SINGLECOIL else torch.sqrt((full.abs() ** 2).sum(dim=1))
    target = _crop(target.numpy(), recon_size).astype(np.float32)

    mask_np, num_low = None, None
    if mask_func is not None:
        mask, num_low = mask_func(tuple(kspace.shape), None, mask_seed)
        if mask.shape[-2] != 1:
            raise ValueError("synthetic test-layout files store a 1-D line mask; got a 2-D mask function")
        mask = torch.where(acquired, mask, torch.zeros(()))
        kspace = torch.where(mask.bool(), kspace, torch.zeros((), dtype=kspace.dtype))
        mask_np = mask.reshape(-1).numpy().astype(np.float32)
    return SyntheticVolume(
        np.ascontiguousarray(kspace.numpy(), dtype=np.complex64),
        np.ascontiguousarray(target),
        image.astype(np.complex64),
        sens,
        mask_np,
        num_low,
    )


def write_volume(
    path: str | os.PathLike,
    volume: SyntheticVolume,
    header: bytes,
    attrs: dict[str, object],
    challenge: str | Challenge = Challenge.MULTICOIL,
    include_target: bool = True,
) -> Path:
    """Write a :class:`SyntheticVolume` in the fastMRI layout (atomically: temporary file, then ``os.replace``)."""
    path = Path(path)
    multicoil = Challenge(challenge) == Challenge.MULTICOIL
    target_key = FastMRIKey.RECONSTRUCTION_RSS if multicoil else FastMRIKey.RECONSTRUCTION_ESC

    def write(tmp: str) -> None:
        with h5py.File(tmp, "w") as hf:
            hf.create_dataset(str(FastMRIKey.KSPACE), data=volume.kspace)
            if include_target:
                hf.create_dataset(str(target_key), data=volume.target)
            if volume.mask is not None:
                hf.create_dataset(str(FastMRIKey.MASK), data=volume.mask)
            hf.create_dataset(str(FastMRIKey.ISMRMRD_HEADER), data=np.bytes_(header))
            for key, value in attrs.items():
                hf.attrs[str(key)] = value

    from recvision.utils.atomic import atomic_write

    return atomic_write(path, write)


def write_synthetic_dataset(
    out_dir: str | os.PathLike,
    num_volumes: int = 2,
    num_slices: int = 4,
    shape: tuple[int, int] = (64, 48),
    num_coils: int | tuple[int, int] = 4,
    source: str = "phantom",
    seed: int = 0,
    *,
    challenge: str | Challenge = Challenge.MULTICOIL,
    recon_size: tuple[int, int] | None = None,
    noise_std: float | tuple[float, float] = 0.005,
    padding: tuple[int, int] = (0, 0),
    mask_func: MaskFunc | None = None,
    include_target: bool = True,
    prefix: str = "synth",
) -> list[Path]:
    """Write ``num_volumes`` fastMRI-layout files ``{prefix}_{source}_{seed}_{i:03d}.h5`` into ``out_dir``.

    Args:
        out_dir: Output folder (created).
        num_volumes: Number of files.
        num_slices: Slices per file.
        shape: k-space size ``(H, W)``.
        num_coils: Coils (multi-coil only), or an inclusive range ``(lo, hi)`` drawn uniformly per volume.
        source: One of :data:`SOURCES`; ``"mni"`` needs ``nilearn``, the ``"epi*"`` sources ``nibabel``,
            ``"abdomen"`` / ``"mr_small"`` ``pydicom``; ``"realistic"`` draws a source per volume from
            :data:`recon.data.sources.TRAINING_MIX` (recorded in the file's ``acquisition`` attribute).
        seed: Seeds everything: volume ``i`` uses ``numpy.random.default_rng([seed, i])`` (the range draws use
            ``default_rng([seed, i, 1])``, so fixed settings give the same volumes as before); masks use fastMRI's
            per-file seed (:func:`recon.data.subsample.seed_from_fname`).
        challenge: ``"multicoil"`` (``kspace (S, C, H, W)``, ``reconstruction_rss``) or ``"singlecoil"``
            (``kspace (S, H, W)``, ``reconstruction_esc``).
        recon_size: Recon matrix ``(h, w)``; default ``shape``. Use e.g. ``(H // 2, W)`` to mimic readout
            oversampling.
        noise_std: See :func:`simulate_volume`; or a range ``(lo, hi)``: drawn per volume, log-uniformly between
            ``lo`` (``min(1e-4, hi / 10)`` when ``lo == 0``) and ``hi``, and exactly 0 for a tenth of the volumes
            when ``lo == 0``.
        padding: See :func:`simulate_volume`; recorded in the header.
        mask_func: If given, write test-layout files: undersampled ``kspace``, ``mask`` and the ``acceleration``
            (realised, ``W / sum(mask)``) and ``num_low_frequencies`` attributes.
        include_target: Write the target dataset (fastMRI's test files have none).
        prefix: File-name prefix.

    Returns:
        The written files.
    """
    if source not in SOURCES:
        raise ValueError(f"unknown source {source!r}; expected one of {SOURCES}")
    if num_volumes < 1 or num_slices < 1:
        raise ValueError(f"num_volumes and num_slices must be >= 1; got {num_volumes}, {num_slices}")
    coil_range = _as_range("num_coils", num_coils, int)
    noise_range = _as_range("noise_std", noise_std, float)
    if coil_range[0] < 1 or noise_range[0] < 0:
        raise ValueError(f"num_coils must be >= 1 and noise_std >= 0; got {num_coils}, {noise_std}")
    challenge = Challenge(challenge)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    shape = (int(shape[0]), int(shape[1]))
    recon = shape if recon_size is None else (int(recon_size[0]), int(recon_size[1]))
    paths = []
    for i in range(num_volumes):
        draw = np.random.default_rng([seed, i, 1])
        volume_source = pick_source(draw) if source == "realistic" else source
        coils = int(draw.integers(coil_range[0], coil_range[1] + 1)) if challenge == Challenge.MULTICOIL else 1
        noise = _draw_noise(noise_range, draw)
        fname = f"{prefix}_{source}_{seed}_{i:03d}.h5"
        volume = simulate_volume(
            num_slices,
            shape,
            coils,
            volume_source,
            np.random.default_rng([seed, i]),
            volume_index=i,
            recon_size=recon,
            noise_std=noise,
            padding=padding,
            challenge=challenge,
            mask_func=mask_func,
            mask_seed=seed_from_fname(fname),
        )
        patient_id = f"synthetic-{seed}-{i:03d}"
        attrs: dict[str, object] = {
            str(FastMRIKey.ACQUISITION): f"SYNTH_{volume_source.upper()}",
            "noise_std": float(noise),
            str(FastMRIKey.MAX): float(volume.target.max()),
            str(FastMRIKey.NORM): float(np.linalg.norm(volume.target)),
            str(FastMRIKey.PATIENT_ID): patient_id,
        }
        if volume.mask is not None:
            attrs[str(FastMRIKey.ACCELERATION)] = float(volume.mask.size / volume.mask.sum())
            attrs[str(FastMRIKey.NUM_LOW_FREQUENCIES)] = int(volume.num_low_frequencies or 0)
        header = make_ismrmrd_header(shape, recon, padding, coils, num_slices, patient_id)
        paths.append(write_volume(out_dir / fname, volume, header, attrs, challenge, include_target))
    return paths


def _as_range(name: str, value: float | Sequence[float], kind: type) -> tuple:
    """``value`` or ``(lo, hi)`` -> ``(lo, hi)`` of ``kind``; ValueError naming ``name`` otherwise."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return kind(value), kind(value)
    if isinstance(value, Sequence) and len(value) == 2 and value[0] <= value[1]:
        return kind(value[0]), kind(value[1])
    raise ValueError(f"{name} must be a number or a range (lo, hi) with lo <= hi; got {value!r}")


def _draw_noise(noise_range: tuple[float, float], rng: np.random.Generator) -> float:
    lo, hi = noise_range
    if lo == hi:
        return lo
    if lo == 0.0 and rng.random() < 0.1:
        return 0.0
    lo = lo if lo > 0.0 else min(1e-4, hi / 10.0)  # log-uniform needs lo > 0
    return float(math.exp(rng.uniform(math.log(lo), math.log(max(hi, lo)))))
