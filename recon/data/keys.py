"""Names used by the data pipeline, as string enums (no magic strings; after MONAI's ``FastMRIKeys``).

* :class:`FastMRIKey`: datasets and attributes of a fastMRI HDF5 file (Zbontar et al., arXiv 1811.08839).
* :class:`SampleKey`: default dictionary keys of the transforms in :mod:`recon.data.transforms`.
* :class:`MaskType`: names accepted by :func:`recon.data.subsample.create_mask_for_mask_type`.

Members compare equal to their string values, so ``d[SampleKey.KSPACE]`` and ``d["kspace"]`` are the same entry.
"""

from __future__ import annotations

import enum

__all__ = ["Challenge", "FastMRIKey", "MaskType", "SampleKey", "StrEnum"]

if hasattr(enum, "StrEnum"):  # Python >= 3.11
    StrEnum = enum.StrEnum
else:  # pragma: no cover - Python 3.10

    class StrEnum(str, enum.Enum):  # type: ignore[no-redef]
        """``str`` enum whose ``str()`` is its value (backport of :class:`enum.StrEnum`)."""

        def __str__(self) -> str:
            return str(self.value)


class FastMRIKey(StrEnum):
    """Datasets (``hf[key]``) and attributes (``hf.attrs[key]``) of a fastMRI file."""

    KSPACE = "kspace"  # (slices, [coils,] H, W) complex64
    MASK = "mask"  # (W,) sampling mask of test / challenge files
    RECONSTRUCTION_RSS = "reconstruction_rss"  # (slices, h, w) RSS target (multi-coil; also single-coil knee)
    RECONSTRUCTION_ESC = "reconstruction_esc"  # (slices, h, w) emulated single-coil target
    ISMRMRD_HEADER = "ismrmrd_header"  # XML bytes
    RECONSTRUCTION = "reconstruction"  # submission files: (slices, h, w)
    # attributes
    ACQUISITION = "acquisition"
    MAX = "max"
    NORM = "norm"
    PATIENT_ID = "patient_id"
    ACCELERATION = "acceleration"
    NUM_LOW_FREQUENCIES = "num_low_frequencies"
    NUM_LOW_FREQUENCY = "num_low_frequency"  # spelling used by some fastMRI test files


class SampleKey(StrEnum):
    """Default dictionary keys of the pipeline transforms."""

    PATH = "path"
    FILENAME = "filename"
    SLICE = "slice_num"
    KSPACE = "kspace"  # fully sampled (or as-stored) complex k-space [..., C, H, W]
    MASKED_KSPACE = "masked_kspace"
    MASK = "mask"
    NUM_LOW_FREQUENCIES = "num_low_frequencies"
    SENS_MAPS = "sens_maps"
    TARGET = "target"
    ATTRS = "attrs"
    SCALE = "scale"


class MaskType(StrEnum):
    """Mask families of :mod:`recon.data.subsample`."""

    RANDOM = "random"
    EQUISPACED = "equispaced"
    EQUISPACED_FRACTION = "equispaced_fraction"
    MAGIC = "magic"
    MAGIC_FRACTION = "magic_fraction"
    GAUSSIAN_1D = "gaussian1d"
    GAUSSIAN_2D = "gaussian2d"
    POISSON_2D = "poisson2d"


class Challenge(StrEnum):
    """fastMRI challenge: selects the expected k-space rank and the target dataset."""

    SINGLECOIL = "singlecoil"
    MULTICOIL = "multicoil"
