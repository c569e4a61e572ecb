# The fastMRI mask family in this file (temp_seed, MaskFunc, RandomMaskFunc, EquiSpacedMaskFunc,
# EquispacedMaskFractionFunc, MagicMaskFunc, MagicMaskFractionFunc and the fastMRI mask types of
# create_mask_for_mask_type) is a close port of fastMRI's fastmri/data/subsample.py
# (https://github.com/facebookresearch/fastMRI), Copyright (c) Facebook, Inc. and its affiliates, released under the
# MIT license. The MIT notice is reproduced in the NOTICE file at the root of this repository; the rest of the file
# is recvision's own, under its Apache-2.0 license (LICENSE).

"""Cartesian undersampling masks: fastMRI's line masks plus Gaussian and variable-density Poisson-disc 2-D masks.

Every mask function is called as ``mask_func(shape, offset=None, seed=None) -> (mask, num_low_frequencies)``, the
fastMRI interface (Zbontar et al., "fastMRI: An Open Dataset and Benchmarks for Accelerated MRI", arXiv 1811.08839,
``fastmri/data/subsample.py``), with one deliberate difference that follows ``recon``'s complex convention
(:mod:`recon.ops.fft`): ``shape`` is the shape of a *complex* k-space tensor ``[..., H, W]``, so lines are selected
along the last dimension ``W`` (fastMRI's ``shape[-2]`` of its ``[..., H, W, 2]`` layout).

* Line (1-D) masks are float32 0/1 tensors of shape ``[1, ..., 1, W]`` (``len(shape)`` dims), broadcastable
  against the k-space.
* 2-D masks (:class:`GaussianMaskFunc2D`, :class:`PoissonDiscMaskFunc2D`) have shape ``[1, ..., 1, H, W]``.

Random draws use a :class:`numpy.random.RandomState` owned by the mask function; a ``seed`` passed to ``__call__``
temporarily reseeds it (and restores its state afterwards), so a given seed always yields the same mask, in any
process. For the fastMRI classes the draws are made in the same order as fastMRI's, so the masks are identical to
fastMRI's for the same constructor seed, call seed and sequence of calls (checked against fixtures generated with
``fastmri`` 0.3.0, ``tests/data/make_mask_fixtures.py``).

Adding a mask: subclass :class:`MaskFunc` and override :meth:`MaskFunc.calculate_acceleration_mask` (line masks) or
:meth:`MaskFunc.sample_mask` (anything else). :meth:`MaskFunc.__call__` seeds the generator, calls ``sample_mask``
(which calls :meth:`MaskFunc.choose_acceleration`, :meth:`MaskFunc.calculate_center_mask` and
``calculate_acceleration_mask``) and returns the element-wise maximum of the centre and acceleration masks.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch

from recon.data.keys import MaskType

__all__ = [
    "EquiSpacedMaskFunc",
    "EquispacedMaskFractionFunc",
    "GaussianMaskFunc1D",
    "GaussianMaskFunc2D",
    "MagicMaskFractionFunc",
    "MagicMaskFunc",
    "MaskFunc",
    "PoissonDiscMaskFunc2D",
    "RandomMaskFunc",
    "SeedType",
    "apply_mask",
    "create_mask_for_mask_type",
    "num_low_frequencies_from_mask",
    "seed_from_fname",
    "temp_seed",
]

SeedType = int | Sequence[int] | None


@contextlib.contextmanager
def temp_seed(rng: np.random.RandomState, seed: SeedType) -> Iterator[None]:
    """Reseed ``rng`` with ``seed`` for the duration of the block and restore its previous state afterwards.

    With ``seed=None`` the generator is used as is (its state advances). This is fastMRI's ``temp_seed`` behaviour.
    """
    if seed is None:
        yield
        return
    saved = rng.get_state()
    rng.seed(seed)
    try:
        yield
    finally:
        rng.set_state(saved)


def seed_from_fname(fname: str) -> tuple[int, ...]:
    """Per-volume seed derived from a file name, as in fastMRI's data transforms (``tuple(map(ord, fname))``)."""
    return tuple(ord(ch) for ch in fname)


def _check_shape(shape: Sequence[int], min_dims: int) -> tuple[int, ...]:
    shape = tuple(int(s) for s in shape)
    if len(shape) < min_dims:
        raise ValueError(f"mask shape must have at least {min_dims} dimensions [..., H, W]; got {shape}")
    if any(s <= 0 for s in shape[-min_dims:]):
        raise ValueError(f"mask shape must have positive spatial sizes; got {shape}")
    return shape


class MaskFunc:
    """Base class of the undersampling masks (template method, after fastMRI's ``MaskFunc``).

    Args:
        center_fractions: Fractions of the low-frequency lines (along ``W``) that are fully sampled. If several are
            given, one ``(center_fraction, acceleration)`` pair is drawn uniformly at random on each call.
        accelerations: Requested undersampling factors, paired with ``center_fractions`` by index.
        allow_any_combination: Draw the centre fraction and the acceleration independently (any cross-combination)
            instead of as pairs; then the two lists may differ in length.
        seed: Seed of the mask function's own :class:`numpy.random.RandomState`.
    """

    def __init__(
        self,
        center_fractions: Sequence[float],
        accelerations: Sequence[float],
        allow_any_combination: bool = False,
        seed: int | None = None,
    ) -> None:
        center_fractions = list(center_fractions)
        accelerations = list(accelerations)
        if not center_fractions or not accelerations:
            raise ValueError("center_fractions and accelerations must not be empty")
        if len(center_fractions) != len(accelerations) and not allow_any_combination:
            raise ValueError(
                f"center_fractions ({len(center_fractions)} values) and accelerations ({len(accelerations)} values) "
                "must have the same length unless allow_any_combination=True"
            )
        if any(not 0.0 <= cf < 1.0 for cf in center_fractions):
            raise ValueError(f"center_fractions must lie in [0, 1); got {center_fractions}")
        if any(not acc >= 1 for acc in accelerations):
            raise ValueError(f"accelerations must be >= 1; got {accelerations}")
        self.center_fractions = center_fractions
        self.accelerations = accelerations
        self.allow_any_combination = allow_any_combination
        self.rng = np.random.RandomState(seed)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(center_fractions={self.center_fractions}, accelerations={self.accelerations}, "
            f"allow_any_combination={self.allow_any_combination})"
        )

    def __call__(
        self, shape: Sequence[int], offset: int | None = None, seed: SeedType = None
    ) -> tuple[torch.Tensor, int]:
        """Sample a mask.

        Args:
            shape: Shape of the complex k-space ``[..., H, W]`` (at least 2 dims).
            offset: First sampled outer line of the equispaced and magic masks; random if ``None``. Ignored by the
                random-pattern masks.
            seed: Temporarily reseeds the generator (int or sequence of ints, e.g. :func:`seed_from_fname`).

        Returns:
            ``(mask, num_low_frequencies)``: a float32 0/1 mask ``[1, ..., 1, W]`` (``[1, ..., 1, H, W]`` for the 2-D
            masks) and the number of fully sampled central lines.
        """
        shape = _check_shape(shape, 2)
        with temp_seed(self.rng, seed):
            center_mask, accel_mask, num_low_frequencies = self.sample_mask(shape, offset)
        return torch.maximum(center_mask, accel_mask), num_low_frequencies

    def choose_acceleration(self) -> tuple[float, float]:
        """Draw a ``(center_fraction, acceleration)`` pair (one ``randint``, or two ``choice`` draws)."""
        if self.allow_any_combination:
            center_fraction = self.rng.choice(self.center_fractions)
            acceleration = self.rng.choice(self.accelerations)
            return center_fraction, acceleration
        index = self.rng.randint(len(self.center_fractions))
        return self.center_fractions[index], self.accelerations[index]

    def sample_mask(self, shape: Sequence[int], offset: int | None) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Sample the centre mask, the acceleration mask and the number of low frequencies.

        Args:
            shape: Shape of the complex k-space ``[..., H, W]``.
            offset: See :meth:`__call__`.

        Returns:
            ``(center_mask, acceleration_mask, num_low_frequencies)``; both masks ``[1, ..., 1, W]``.
        """
        num_cols = shape[-1]
        center_fraction, acceleration = self.choose_acceleration()
        num_low_frequencies = round(num_cols * center_fraction)
        center_mask = self.reshape_mask(self.calculate_center_mask(shape, num_low_frequencies), shape)
        accel_mask = self.reshape_mask(
            self.calculate_acceleration_mask(num_cols, acceleration, offset, num_low_frequencies), shape
        )
        return center_mask, accel_mask, num_low_frequencies

    def calculate_center_mask(self, shape: Sequence[int], num_low_frequencies: int) -> np.ndarray:
        """Fully sampled central band: ``num_low_frequencies`` lines starting at ``(W - num_low + 1) // 2``.

        Returns:
            float32 ``[W]``.
        """
        num_cols = shape[-1]
        mask = np.zeros(num_cols, dtype=np.float32)
        start = (num_cols - num_low_frequencies + 1) // 2
        mask[start : start + num_low_frequencies] = 1.0
        return mask

    def calculate_acceleration_mask(
        self, num_cols: int, acceleration: float, offset: int | None, num_low_frequencies: int
    ) -> np.ndarray:
        """Lines outside the centre; overridden by each line-mask class.

        Returns:
            ``[W]`` array of zeros and ones.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement calculate_acceleration_mask")

    @staticmethod
    def reshape_mask(mask: np.ndarray, shape: Sequence[int]) -> torch.Tensor:
        """``[W]`` (or ``[H, W]``) numpy mask -> float32 tensor broadcastable against ``shape``."""
        out_shape = [1] * (len(shape) - mask.ndim) + list(mask.shape)
        return torch.from_numpy(np.ascontiguousarray(mask, dtype=np.float32).reshape(out_shape))


class RandomMaskFunc(MaskFunc):
    """Random lines: each outer line is kept with probability ``(W / acc - num_low) / (W - num_low)``.

    The expected number of sampled lines is ``W / acc`` (fastMRI's ``RandomMaskFunc``; the knee convention is
    ``center_fractions=[0.08, 0.04]`` with ``accelerations=[4, 8]``). ``offset`` is ignored.
    """

    def calculate_acceleration_mask(
        self, num_cols: int, acceleration: float, offset: int | None, num_low_frequencies: int
    ) -> np.ndarray:
        prob = (num_cols / acceleration - num_low_frequencies) / (num_cols - num_low_frequencies)
        return self.rng.uniform(size=num_cols) < prob


class EquiSpacedMaskFunc(MaskFunc):
    """Equally spaced lines ``offset, offset + acc, ...`` plus the fully sampled centre (fastMRI's
    ``EquiSpacedMaskFunc``, GRAPPA-style). The centre comes on top, so the realised acceleration is below ``acc``.
    The offset is drawn from ``[0, round(acc))`` when not given.
    """

    def calculate_acceleration_mask(
        self, num_cols: int, acceleration: float, offset: int | None, num_low_frequencies: int
    ) -> np.ndarray:
        if acceleration != int(acceleration):
            raise ValueError(f"{type(self).__name__} needs an integer acceleration; got {acceleration}")
        if offset is None:
            offset = self.rng.randint(0, high=round(acceleration))
        mask = np.zeros(num_cols, dtype=np.float32)
        mask[offset :: int(acceleration)] = 1.0
        return mask


class EquispacedMaskFractionFunc(MaskFunc):
    """Approximately equispaced lines whose spacing is adjusted so that the total (centre included) is ``W / acc``.

    The spacing is ``acc (num_low - W) / (num_low acc - W)`` and line positions are ``round(offset + k spacing)`` for
    positions below ``W - 1``, so the lines are not exactly equispaced (fastMRI issue #54); kept as in fastMRI's
    ``EquispacedMaskFractionFunc`` to match the public multi-coil data and MONAI's ``EquispacedKspaceMask``. When the
    centre alone reaches ``W / acc`` no outer line is added (fastMRI raises an error there).
    """

    def calculate_acceleration_mask(
        self, num_cols: int, acceleration: float, offset: int | None, num_low_frequencies: int
    ) -> np.ndarray:
        if num_low_frequencies * acceleration >= num_cols:  # the centre alone reaches W / acc (fastMRI raises)
            return np.zeros(num_cols)
        spacing = (acceleration * (num_low_frequencies - num_cols)) / (num_low_frequencies * acceleration - num_cols)
        if offset is None:
            offset = self.rng.randint(0, high=round(spacing))
        mask = np.zeros(num_cols)
        positions = np.around(np.arange(offset, num_cols - 1, spacing)).astype(np.uint)
        mask[positions] = 1.0
        return mask


class MagicMaskFunc(MaskFunc):
    """Offset sampling that exploits conjugate symmetry (Defazio, arXiv 1912.01101; fastMRI's ``MagicMaskFunc``).

    The positive and negative halves of k-space are sampled equispaced with offsets that differ by one line, so a
    line missing on one side is present, mirrored, on the other. Like :class:`EquiSpacedMaskFunc` it undershoots
    the requested acceleration. The offset is drawn from ``[0, acc)`` when not given.
    """

    def calculate_acceleration_mask(
        self, num_cols: int, acceleration: float, offset: int | None, num_low_frequencies: int
    ) -> np.ndarray:
        if acceleration != int(acceleration):
            raise ValueError(f"{type(self).__name__} needs an integer acceleration; got {acceleration}")
        step = int(acceleration)
        if step <= 0:  # MagicMaskFractionFunc leaves no outer lines to place (fastMRI raises here)
            return np.zeros(num_cols, dtype=np.float32)
        if offset is None:
            offset = self.rng.randint(0, high=step)
        # even offsets: +1 on the positive half, +2 on the negative half; odd offsets: +2 and -1
        if offset % 2 == 0:
            start_pos, start_neg = offset + 1, offset + 2
        else:
            start_pos, start_neg = offset + 2, offset - 1
        num_pos = (num_cols + 1) // 2
        positive = np.zeros(num_pos, dtype=np.float32)
        negative = np.zeros(num_cols - num_pos, dtype=np.float32)
        positive[start_pos::step] = 1.0
        negative[start_neg::step] = 1.0
        # [positive half, mirrored negative half] is in FFT order; shift it to the centred order used everywhere
        return np.fft.fftshift(np.concatenate([positive, negative[::-1]]))


class MagicMaskFractionFunc(MagicMaskFunc):
    """Magic mask whose centre width and spacing are adjusted to hit ``W / acc`` lines (fastMRI's
    ``MagicMaskFractionFunc``).

    The centre holds ``clip(round(W cf), 1, round(W / acc))`` lines and the outer lines use spacing
    ``round(W / (round(W / acc) - num_low))``. When the centre alone reaches the target no outer line is added
    (fastMRI raises an error in that corner case).
    """

    def sample_mask(self, shape: Sequence[int], offset: int | None) -> tuple[torch.Tensor, torch.Tensor, int]:
        num_cols = shape[-1]
        center_fraction, acceleration = self.choose_acceleration()
        target_lines = round(num_cols / acceleration)
        num_low_frequencies = max(min(round(num_cols * center_fraction), target_lines), 1)
        outer_lines = target_lines - num_low_frequencies
        spacing = round(num_cols / outer_lines) if outer_lines > 0 else 0
        center_mask = self.reshape_mask(self.calculate_center_mask(shape, num_low_frequencies), shape)
        accel_mask = self.reshape_mask(
            self.calculate_acceleration_mask(num_cols, spacing, offset, num_low_frequencies), shape
        )
        return center_mask, accel_mask, num_low_frequencies


def _centered_coords(n: int) -> np.ndarray:
    """Distance of each index from the k-space centre ``n // 2``, in units of ``n / 2`` (so the edge is ~1)."""
    return (np.arange(n) - n // 2) / max(n / 2, 1.0)


class _GaussianDensity(MaskFunc):
    """Adds the ``std`` of a Gaussian sampling density (a fraction of the half-size) to a mask function."""

    def __init__(
        self,
        center_fractions: Sequence[float],
        accelerations: Sequence[float],
        allow_any_combination: bool = False,
        seed: int | None = None,
        std: float = 0.5,
    ) -> None:
        super().__init__(center_fractions, accelerations, allow_any_combination, seed)
        if std <= 0:
            raise ValueError(f"std must be positive; got {std}")
        self.std = std


class GaussianMaskFunc1D(_GaussianDensity):
    """Lines drawn without replacement with a Gaussian density centred on ``k = 0``, plus the fully sampled centre.

    Exactly ``round(W / acc)`` lines are sampled (the realised acceleration is ``W / round(W / acc)``), unless the
    centre alone exceeds that. Line ``j`` outside the centre has weight ``exp(-u_j^2 / (2 std^2))`` where ``u_j`` is its
    distance from the centre in units of ``W / 2``.

    Args:
        center_fractions: See :class:`MaskFunc`.
        accelerations: See :class:`MaskFunc`.
        allow_any_combination: See :class:`MaskFunc`.
        seed: See :class:`MaskFunc`.
        std: Standard deviation of the density, as a fraction of half the width.
    """

    def calculate_acceleration_mask(
        self, num_cols: int, acceleration: float, offset: int | None, num_low_frequencies: int
    ) -> np.ndarray:
        center = self.calculate_center_mask((num_cols,), num_low_frequencies).astype(bool)
        candidates = np.flatnonzero(~center)
        num_outer = min(max(round(num_cols / acceleration) - num_low_frequencies, 0), candidates.size)
        mask = np.zeros(num_cols, dtype=np.float32)
        if num_outer == 0:
            return mask
        weights = np.exp(-0.5 * (_centered_coords(num_cols)[candidates] / self.std) ** 2)
        chosen = self.rng.choice(candidates, size=num_outer, replace=False, p=weights / weights.sum())
        mask[chosen] = 1.0
        return mask


class _MaskFunc2D(MaskFunc):
    """Base of the 2-D masks: a fully sampled central box plus points placed by :meth:`calculate_acceleration_mask_2d`.

    The central box is a square of side ``num_low_frequencies = round(W cf)`` (at most ``H`` rows), the calibration
    region of ``estimate_sens_maps(..., acs_region="box")``. Exactly ``round(H W / acc)`` points are sampled in
    total (box included) unless the box alone exceeds that. ``offset`` is ignored.
    """

    def sample_mask(self, shape: Sequence[int], offset: int | None) -> tuple[torch.Tensor, torch.Tensor, int]:
        num_rows, num_cols = shape[-2], shape[-1]
        center_fraction, acceleration = self.choose_acceleration()
        num_low_frequencies = round(num_cols * center_fraction)
        num_low_rows = min(num_low_frequencies, num_rows)
        center = np.zeros((num_rows, num_cols), dtype=np.float32)
        r0 = (num_rows - num_low_rows + 1) // 2
        c0 = (num_cols - num_low_frequencies + 1) // 2
        center[r0 : r0 + num_low_rows, c0 : c0 + num_low_frequencies] = 1.0
        num_outer = max(round(num_rows * num_cols / acceleration) - int(center.sum()), 0)
        outer = self.calculate_acceleration_mask_2d(center.astype(bool), num_outer)
        return self.reshape_mask(center, shape), self.reshape_mask(outer, shape), num_low_frequencies

    def calculate_acceleration_mask_2d(self, center: np.ndarray, num_points: int) -> np.ndarray:
        """Place ``num_points`` samples outside the boolean ``center`` box ``[H, W]``; returns float32 ``[H, W]``."""
        raise NotImplementedError(f"{type(self).__name__} must implement calculate_acceleration_mask_2d")

    @staticmethod
    def _normalised_radius(num_rows: int, num_cols: int) -> np.ndarray:
        ky = _centered_coords(num_rows)[:, None]
        kx = _centered_coords(num_cols)[None, :]
        return np.sqrt(ky**2 + kx**2)


class GaussianMaskFunc2D(_GaussianDensity, _MaskFunc2D):
    """Points drawn without replacement with a 2-D Gaussian density, plus a fully sampled central box.

    For 2-D Cartesian undersampling of the two phase-encoding directions (mask ``[1, ..., 1, H, W]``). The weight
    of point ``(i, j)`` is ``exp(-rho^2 / (2 std^2))`` with ``rho`` its distance from the centre in units of the
    half-sizes.

    Args:
        center_fractions: See :class:`MaskFunc`; the central box is ``round(W cf)`` wide and high.
        accelerations: See :class:`MaskFunc`.
        allow_any_combination: See :class:`MaskFunc`.
        seed: See :class:`MaskFunc`.
        std: Standard deviation of the density, as a fraction of the half-sizes.
    """

    def calculate_acceleration_mask_2d(self, center: np.ndarray, num_points: int) -> np.ndarray:
        mask = np.zeros(center.shape, dtype=np.float32)
        candidates = np.flatnonzero(~center)
        num_points = min(num_points, candidates.size)
        if num_points == 0:
            return mask
        rho = self._normalised_radius(*center.shape).ravel()[candidates]
        weights = np.exp(-0.5 * (rho / self.std) ** 2)
        chosen = self.rng.choice(candidates, size=num_points, replace=False, p=weights / weights.sum())
        mask.ravel()[chosen] = 1.0
        return mask


class PoissonDiscMaskFunc2D(_MaskFunc2D):
    """Variable-density Poisson-disc points on the ``[H, W]`` grid, plus a fully sampled central box.

    Points are at least ``r(rho) = r0 (1 + density_slope * rho)`` apart (in pixels), where ``rho`` is the candidate's
    distance from the centre in units of the half-sizes, so sampling is dense near ``k = 0`` and sparse at the edge,
    without the clusters and holes of i.i.d. sampling (Lustig et al., "Sparse MRI", MRM 2007, §"Variable density
    Poisson-disc"). The points are laid down by random sequential addition: candidates are visited in a random order
    and kept when no kept point lies within the candidate's radius. ``r0`` starts from the jamming-density estimate
    and shrinks until at least ``num_points`` are kept; the first ``num_points`` kept (in visiting order, i.e. a
    spatially uniform thinning) are returned, so the realised acceleration is exact.

    The cost is one small array test per grid point per pass (about a second for 320 x 320 on a CPU core).

    Args:
        center_fractions: See :class:`MaskFunc`; the central box is ``round(W cf)`` wide and high.
        accelerations: See :class:`MaskFunc`.
        allow_any_combination: See :class:`MaskFunc`.
        seed: See :class:`MaskFunc`.
        density_slope: How much larger the spacing is at the edge than at the centre (``r(1) / r(0) - 1``).
        max_passes: Number of radius reductions before giving up with an error.
    """

    # Random sequential addition of disks jams at an area fraction of about 0.547 (Feder 1980).
    _JAMMING_FRACTION = 0.547

    def __init__(
        self,
        center_fractions: Sequence[float],
        accelerations: Sequence[float],
        allow_any_combination: bool = False,
        seed: int | None = None,
        density_slope: float = 2.0,
        max_passes: int = 30,
    ) -> None:
        super().__init__(center_fractions, accelerations, allow_any_combination, seed)
        if density_slope < 0:
            raise ValueError(f"density_slope must be >= 0; got {density_slope}")
        self.density_slope = density_slope
        self.max_passes = max_passes

    def calculate_acceleration_mask_2d(self, center: np.ndarray, num_points: int) -> np.ndarray:
        num_rows, num_cols = center.shape
        mask = np.zeros(center.shape, dtype=np.float32)
        candidates = np.flatnonzero(~center)
        num_points = min(num_points, candidates.size)
        if num_points == 0:
            return mask
        profile = 1.0 + self.density_slope * self._normalised_radius(num_rows, num_cols)
        # N(r0) ~ sum over candidates of (4 * jamming / pi) / r(rho)^2  ->  solve for r0
        inv_area = (4.0 * self._JAMMING_FRACTION / math.pi) * np.sum(1.0 / profile.ravel()[candidates] ** 2)
        r0 = 0.9 * math.sqrt(inv_area / num_points)  # 0.9: the lattice packs a little looser than the continuum
        order = self.rng.permutation(candidates)
        for _ in range(self.max_passes):
            kept = self._random_sequential_addition(order, profile * r0, num_rows, num_cols, num_points)
            if kept.size >= num_points:
                mask.ravel()[kept[:num_points]] = 1.0
                return mask
            r0 *= max(0.5, 0.97 * math.sqrt(kept.size / num_points))
        raise RuntimeError(f"{type(self).__name__}: could not place {num_points} points in {self.max_passes} passes")

    @staticmethod
    def _random_sequential_addition(
        order: np.ndarray, radius: np.ndarray, num_rows: int, num_cols: int, stop_after: int
    ) -> np.ndarray:
        """Visit flat indices in ``order``; keep one when no kept point is closer than its radius (``radius[H, W]``)."""
        if radius.max() <= 1.0:  # distinct grid points are >= 1 apart: every candidate is kept
            return order[:stop_after]
        reach = int(math.ceil(radius.max()))
        occupied = np.zeros((num_rows + 2 * reach, num_cols + 2 * reach), dtype=bool)
        offsets = np.arange(-reach, reach + 1)
        dist2 = offsets[:, None] ** 2 + offsets[None, :] ** 2
        kept: list[int] = []
        for flat in order.tolist():
            i, j = divmod(flat, num_cols)
            r = radius[i, j]
            window = occupied[i : i + 2 * reach + 1, j : j + 2 * reach + 1]
            if np.any(window & (dist2 < r * r)):
                continue
            occupied[i + reach, j + reach] = True
            kept.append(flat)
        return np.asarray(kept, dtype=np.int64)


_MASK_CLASSES: dict[MaskType, type[MaskFunc]] = {
    MaskType.RANDOM: RandomMaskFunc,
    MaskType.EQUISPACED: EquiSpacedMaskFunc,
    MaskType.EQUISPACED_FRACTION: EquispacedMaskFractionFunc,
    MaskType.MAGIC: MagicMaskFunc,
    MaskType.MAGIC_FRACTION: MagicMaskFractionFunc,
    MaskType.GAUSSIAN_1D: GaussianMaskFunc1D,
    MaskType.GAUSSIAN_2D: GaussianMaskFunc2D,
    MaskType.POISSON_2D: PoissonDiscMaskFunc2D,
}


def create_mask_for_mask_type(
    mask_type: str | MaskType,
    center_fractions: Sequence[float],
    accelerations: Sequence[float],
    **kwargs: Any,
) -> MaskFunc:
    """Build a mask function by name (fastMRI's ``create_mask_for_mask_type``, extended with the 2-D masks).

    Args:
        mask_type: One of ``"random"``, ``"equispaced"``, ``"equispaced_fraction"``, ``"magic"``,
            ``"magic_fraction"``, ``"gaussian1d"``, ``"gaussian2d"``, ``"poisson2d"``.
        center_fractions: See :class:`MaskFunc`.
        accelerations: See :class:`MaskFunc`.
        **kwargs: Further constructor arguments of the chosen class (``allow_any_combination``, ``seed``, ``std``,
            ``density_slope``, ...).

    Returns:
        The mask function.
    """
    try:
        cls = _MASK_CLASSES[MaskType(mask_type)]
    except ValueError:
        valid = ", ".join(repr(m.value) for m in MaskType)
        raise ValueError(f"unknown mask type {mask_type!r}; expected one of {valid}") from None
    return cls(center_fractions, accelerations, **kwargs)


def apply_mask(
    kspace: torch.Tensor,
    mask_func: MaskFunc,
    offset: int | None = None,
    seed: SeedType = None,
    padding: tuple[int, int] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Undersample k-space with a mask function (fastMRI's ``apply_mask`` for complex tensors).

    Unsampled entries are set with :func:`torch.where`, not by multiplying with the mask: ``x * 0`` keeps the sign
    of negative zeros, so ``-0.0`` would leak which entries were measured (fastMRI test-set note).

    Args:
        kspace: Complex k-space ``[..., H, W]``.
        mask_func: Called as ``mask_func(kspace.shape, offset, seed)``.
        offset: Passed to the mask function.
        seed: Passed to the mask function (reproducible masks, e.g. :func:`seed_from_fname`).
        padding: ``(left, right)``: columns ``< left`` and ``>= right`` (zero-padded in the acquisition, see
            ``padding_left`` / ``padding_right`` of :func:`recon.data.mri_data.parse_ismrmrd_header`) are unsampled.

    Returns:
        ``(masked_kspace, mask, num_low_frequencies)``; ``masked_kspace`` like ``kspace``, ``mask`` float32
        broadcastable against it (``[1, ..., W]`` or ``[1, ..., H, W]``).
    """
    if not torch.is_complex(kspace):
        raise ValueError(f"kspace must be a complex tensor [..., H, W]; got dtype {kspace.dtype}")
    mask, num_low_frequencies = mask_func(tuple(kspace.shape), offset, seed)
    if padding is not None:
        left, right = padding
        mask = mask.clone()
        mask[..., :left] = 0.0
        mask[..., right:] = 0.0
    mask = mask.to(kspace.device)
    masked = torch.where(mask.bool(), kspace, torch.zeros((), dtype=kspace.dtype, device=kspace.device))
    return masked, mask, num_low_frequencies


def num_low_frequencies_from_mask(mask: torch.Tensor | np.ndarray) -> int:
    """Width of the largest fully sampled central band of a line mask, in fastMRI's centring.

    Returns the largest ``n`` such that the ``n`` columns starting at ``(W - n + 1) // 2`` (the band of
    :meth:`MaskFunc.calculate_center_mask`, and the one :func:`recon.ops.coils.estimate_sens_maps` reads) are all
    sampled. Useful when only the mask is known, e.g. after MONAI's ``EquispacedKspaceMaskd`` (MONAI's
    ``CoilSensitivityModel`` finds the centre the same way).

    Args:
        mask: Line mask whose last dimension is ``W`` and all others 1, e.g. ``[1, 1, W]``.

    Returns:
        ``n >= 0``.
    """
    shape = tuple(mask.shape)
    if not shape or any(s != 1 for s in shape[:-1]):
        raise ValueError(f"expected a line mask [1, ..., 1, W]; got shape {shape}")
    lines = np.asarray(mask.detach().cpu() if isinstance(mask, torch.Tensor) else mask).reshape(-1)
    width = lines.size
    sampled = lines != 0
    for n in range(width, 0, -1):
        start = (width - n + 1) // 2
        if sampled[start : start + n].all():
            return n
    return 0
