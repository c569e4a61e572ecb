"""Reading fastMRI-style HDF5 files: validation, ISMRMRD header metadata, typed samples and a slice dataset.

File layout (Zbontar et al., "fastMRI: An Open Dataset and Benchmarks for Accelerated MRI", arXiv 1811.08839, and
``fastmri/data/mri_data.py``):

=====================  =================================  ==============================================
key                    shape / type                       notes
=====================  =================================  ==============================================
``kspace``             ``(slices, [coils,] H, W)`` complex  multi-coil rank 4, single-coil rank 3
``reconstruction_rss`` ``(slices, h, w)`` float            multi-coil target (RSS of the fully sampled data)
``reconstruction_esc`` ``(slices, h, w)`` float            single-coil target
``mask``               ``(W,)``                            test / challenge files only
``ismrmrd_header``     XML bytes                           encoding and recon matrix sizes, k-space limits
attrs                  ``acquisition``, ``max``, ``norm``, ``patient_id``, ``acceleration``, ``num_low_frequencies``
=====================  =================================  ==============================================

Everything read is converted at this boundary to ``recon``'s conventions (:mod:`recon.ops.fft`): k-space becomes a
``torch.complex64`` tensor ``[(C,) H, W]``, masks float32 ``[1, ..., 1, W]``, targets float32 ``[h, w]``.

Bad input raises :class:`FastMRIDataError` (a ``ValueError``) whose message names the file and the key. Metadata
(keys, dtypes, ranks, shapes, mask, header) is checked when a file is indexed; values (NaN / Inf) when a slice is read.
"""

from __future__ import annotations

import os
import random
import xml.etree.ElementTree as ElementTree
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import h5py
import numpy as np
import torch

from recon.data.keys import Challenge, FastMRIKey

__all__ = [
    "ISMRMRD_NAMESPACE",
    "FastMRIDataError",
    "FastMRISample",
    "FastMRIVolume",
    "HeaderInfo",
    "SliceDataset",
    "VolumeInfo",
    "list_volume_files",
    "parse_ismrmrd_header",
    "read_slice",
    "read_volume",
    "read_volume_info",
]

ISMRMRD_NAMESPACE = "http://www.ismrm.org/ISMRMRD"
H5_SUFFIXES = (".h5", ".hdf5")
_TARGET_KEYS = {Challenge.MULTICOIL: FastMRIKey.RECONSTRUCTION_RSS, Challenge.SINGLECOIL: FastMRIKey.RECONSTRUCTION_ESC}
_KSPACE_RANK = {Challenge.MULTICOIL: 4, Challenge.SINGLECOIL: 3}


class FastMRIDataError(ValueError):
    """A fastMRI file is unreadable or does not follow the layout; the message names the file and the key.

    Attributes:
        path: The offending file.
        key: The dataset or attribute at fault, or ``None`` for the file as a whole.
    """

    def __init__(self, path: str | os.PathLike, key: str | None, message: str) -> None:
        self.path = Path(path)
        self.key = None if key is None else str(key)
        where = f"{self.path}" if key is None else f"{self.path} [{self.key}]"
        super().__init__(f"{where}: {message}")


# ----------------------------------------------------------------------------------------------------------------
# ISMRMRD header


@dataclass(frozen=True)
class HeaderInfo:
    """Geometry from the ISMRMRD header (fastMRI's ``SliceDataset._retrieve_metadata``).

    Attributes:
        encoding_size: Encoded matrix ``(x, y, z)``; ``x`` is the readout (k-space ``H``), ``y`` the phase encoding
            (``W``).
        recon_size: Reconstruction matrix ``(x, y, z)``; targets and submissions are centre-cropped to ``(x, y)``.
        padding_left: First acquired k-space column: ``encoding_y // 2 - kspace_encoding_step_1.center``.
        padding_right: One past the last acquired column: ``padding_left + kspace_encoding_step_1.maximum + 1``.
    """

    encoding_size: tuple[int, int, int]
    recon_size: tuple[int, int, int]
    padding_left: int
    padding_right: int


def _header_int(root: ElementTree.Element, path: Sequence[str], source: str | os.PathLike) -> int:
    query = ".//" + "/".join(f"{{{ISMRMRD_NAMESPACE}}}{part}" for part in path)
    node = root.find(query)
    if node is None or node.text is None:
        raise FastMRIDataError(source, FastMRIKey.ISMRMRD_HEADER, f"missing element {'/'.join(path)}")
    try:
        return int(node.text.strip())
    except ValueError:
        raise FastMRIDataError(
            source, FastMRIKey.ISMRMRD_HEADER, f"element {'/'.join(path)} is not an integer: {node.text!r}"
        ) from None


def parse_ismrmrd_header(xml: bytes | str, source: str | os.PathLike = "<ismrmrd_header>") -> HeaderInfo:
    """Parse the encoding / recon matrix sizes and the phase-encoding padding from an ISMRMRD XML header.

    Args:
        xml: The header as stored in ``hf["ismrmrd_header"][()]``.
        source: File name used in error messages.

    Returns:
        The header geometry.

    Raises:
        FastMRIDataError: If the XML is malformed or an element is missing.
    """
    if isinstance(xml, np.ndarray):
        xml = xml.item()
    try:
        root = ElementTree.fromstring(xml)
    except ElementTree.ParseError as err:
        raise FastMRIDataError(source, FastMRIKey.ISMRMRD_HEADER, f"malformed XML ({err})") from None
    enc = ("encoding", "encodedSpace", "matrixSize")
    rec = ("encoding", "reconSpace", "matrixSize")
    lims = ("encoding", "encodingLimits", "kspace_encoding_step_1")
    encoding_size = tuple(_header_int(root, (*enc, ax), source) for ax in "xyz")
    recon_size = tuple(_header_int(root, (*rec, ax), source) for ax in "xyz")
    center = _header_int(root, (*lims, "center"), source)
    maximum = _header_int(root, (*lims, "maximum"), source)
    padding_left = encoding_size[1] // 2 - center
    return HeaderInfo(encoding_size, recon_size, padding_left, padding_left + maximum + 1)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------------------------------------------
# Volume metadata


@dataclass(frozen=True)
class VolumeInfo:
    """Validated metadata of one fastMRI file (no k-space values are read).

    Attributes:
        path: The file.
        challenge: ``"multicoil"`` (k-space rank 4) or ``"singlecoil"`` (rank 3).
        kspace_shape: Full k-space shape ``(slices, [coils,] H, W)``.
        header: Geometry from the ISMRMRD header (derived from the shapes when the file has no header).
        target_key: Dataset holding the target for this challenge, or ``None`` (test files).
        has_mask: Whether the file stores a ``mask``.
        attrs: File attributes as Python values (bytes decoded, numpy scalars unwrapped).
    """

    path: Path
    challenge: Challenge
    kspace_shape: tuple[int, ...]
    header: HeaderInfo
    target_key: str | None
    has_mask: bool
    attrs: dict[str, Any] = field(default_factory=dict)

    @property
    def fname(self) -> str:
        """File name without directories (the key of :func:`recon.data.writer.save_reconstructions`)."""
        return self.path.name

    @property
    def num_slices(self) -> int:
        return self.kspace_shape[0]

    @property
    def num_coils(self) -> int | None:
        return self.kspace_shape[1] if self.challenge == Challenge.MULTICOIL else None

    @property
    def recon_size(self) -> tuple[int, int]:
        """Crop size ``(h, w)`` of targets and submissions."""
        return self.header.recon_size[0], self.header.recon_size[1]

    def sample_attrs(self) -> dict[str, Any]:
        """Attributes handed to samples: file attrs plus fastMRI's metadata keys (``padding_left``, ``padding_right``,
        ``encoding_size``, ``recon_size``); ``num_low_frequency`` is also exposed as ``num_low_frequencies``."""
        attrs = dict(self.attrs)
        if FastMRIKey.NUM_LOW_FREQUENCY in attrs and FastMRIKey.NUM_LOW_FREQUENCIES not in attrs:
            attrs[str(FastMRIKey.NUM_LOW_FREQUENCIES)] = attrs[FastMRIKey.NUM_LOW_FREQUENCY]
        attrs.update(
            padding_left=self.header.padding_left,
            padding_right=self.header.padding_right,
            encoding_size=self.header.encoding_size,
            recon_size=self.header.recon_size,
        )
        return attrs


def _python_value(value: Any) -> Any:
    if isinstance(value, bytes | np.bytes_):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray) and value.ndim == 0:
        return _python_value(value[()])
    return value


def _open(path: Path) -> h5py.File:
    if not path.is_file():
        raise FastMRIDataError(path, None, "no such file")
    try:
        return h5py.File(path, "r")
    except OSError as err:  # not HDF5, truncated superblock, corrupt
        raise FastMRIDataError(path, None, f"not a readable HDF5 file ({err})") from None


def _dataset(hf: h5py.File, path: Path, key: str) -> h5py.Dataset:
    try:
        obj = hf[key]
    except KeyError:
        raise FastMRIDataError(path, key, f"missing dataset (file has {sorted(hf.keys())})") from None
    except Exception as err:  # corrupt object headers surface here
        raise FastMRIDataError(path, key, f"unreadable ({err})") from None
    if not isinstance(obj, h5py.Dataset):
        raise FastMRIDataError(path, key, f"expected a dataset, found {type(obj).__name__}")
    return obj


def _read(dset: h5py.Dataset, path: Path, key: str, index: Any = ()) -> np.ndarray:
    try:
        return dset[index]
    except Exception as err:  # truncated data, bad filters
        raise FastMRIDataError(path, key, f"could not read data ({type(err).__name__}: {err})") from None


def read_volume_info(path: str | os.PathLike, challenge: str | Challenge | None = None) -> VolumeInfo:
    """Open a fastMRI file and validate its layout (without reading k-space values).

    Args:
        path: The HDF5 file.
        challenge: ``"multicoil"`` or ``"singlecoil"``; ``None`` infers it from the k-space rank.

    Returns:
        The file's metadata.

    Raises:
        FastMRIDataError: Naming the file and key, for unreadable files, a missing ``kspace``, a non-complex dtype, a
            wrong rank, a mask whose length is not ``W``, a target whose slice count differs, a bad header.
    """
    path = Path(path)
    with _open(path) as hf:
        kspace = _dataset(hf, path, FastMRIKey.KSPACE)
        if kspace.dtype.kind != "c":
            raise FastMRIDataError(
                path, FastMRIKey.KSPACE, f"expected complex data (complex64), got dtype {kspace.dtype}"
            )
        rank = kspace.ndim
        if challenge is None:
            if rank not in (3, 4):
                raise FastMRIDataError(
                    path,
                    FastMRIKey.KSPACE,
                    f"expected rank 3 (slices, H, W) or 4 (slices, coils, H, W), got shape {kspace.shape}",
                )
            challenge = Challenge.MULTICOIL if rank == 4 else Challenge.SINGLECOIL
        challenge = Challenge(challenge)
        if rank != _KSPACE_RANK[challenge]:
            layout = "(slices, coils, H, W)" if challenge == Challenge.MULTICOIL else "(slices, H, W)"
            raise FastMRIDataError(
                path,
                FastMRIKey.KSPACE,
                f"{challenge} data must have rank {_KSPACE_RANK[challenge]} {layout}, got shape {kspace.shape}",
            )
        shape = tuple(int(s) for s in kspace.shape)
        if min(shape) <= 0:
            raise FastMRIDataError(path, FastMRIKey.KSPACE, f"empty dimension in shape {shape}")
        height, width = shape[-2:]

        has_mask = FastMRIKey.MASK in hf
        if has_mask:
            mask = np.asarray(_read(_dataset(hf, path, FastMRIKey.MASK), path, FastMRIKey.MASK))
            if mask.size != width or mask.squeeze().ndim > 1:
                raise FastMRIDataError(
                    path, FastMRIKey.MASK, f"expected a 1-D mask of length W={width}, got shape {mask.shape}"
                )
            if not np.all((mask == 0) | (mask == 1)):
                raise FastMRIDataError(path, FastMRIKey.MASK, "mask values must be 0 or 1")

        target_key = str(_TARGET_KEYS[challenge]) if _TARGET_KEYS[challenge] in hf else None
        target_shape: tuple[int, ...] | None = None
        if target_key is not None:
            target = _dataset(hf, path, target_key)
            target_shape = tuple(target.shape)
            if target.ndim != 3 or target.dtype.kind not in "fiu":
                raise FastMRIDataError(
                    path, target_key, f"expected real (slices, h, w) data, got {target.dtype} of shape {target.shape}"
                )
            if target.shape[0] != shape[0]:
                raise FastMRIDataError(path, target_key, f"has {target.shape[0]} slices but kspace has {shape[0]}")

        if FastMRIKey.ISMRMRD_HEADER in hf:
            raw = _read(_dataset(hf, path, FastMRIKey.ISMRMRD_HEADER), path, FastMRIKey.ISMRMRD_HEADER)
            header = parse_ismrmrd_header(raw, source=path)
        else:  # not in the fastMRI layout, but common for home-made files: no padding, recon = target (or k-space)
            rh, rw = target_shape[-2:] if target_shape is not None else (height, width)
            header = HeaderInfo((height, width, 1), (rh, rw, 1), 0, width)
        if header.padding_right <= header.padding_left:
            raise FastMRIDataError(
                path,
                FastMRIKey.ISMRMRD_HEADER,
                f"no acquired columns: padding [{header.padding_left}, {header.padding_right})",
            )
        try:
            attrs = {str(k): _python_value(v) for k, v in hf.attrs.items()}
        except Exception as err:
            raise FastMRIDataError(path, "attrs", f"unreadable attributes ({err})") from None
    return VolumeInfo(path, challenge, shape, header, target_key, has_mask, attrs)


# ----------------------------------------------------------------------------------------------------------------
# Samples


class FastMRISample(NamedTuple):
    """One slice, in fastMRI's field order (``transform(*sample)`` matches fastMRI's transform signature).

    Attributes:
        kspace: Complex64 k-space ``[C, H, W]`` (multi-coil) or ``[H, W]`` (single-coil).
        mask: Float32 mask stored in the file, ``[1, 1, W]`` / ``[1, W]`` (broadcastable to ``kspace``), or ``None``.
        target: Float32 target ``[h, w]`` (``reconstruction_rss`` / ``reconstruction_esc``), or ``None``.
        attrs: File attributes plus ``padding_left``, ``padding_right``, ``encoding_size``, ``recon_size``.
        fname: File name (no directories).
        slice_num: Slice index in the volume.
    """

    kspace: torch.Tensor
    mask: torch.Tensor | None
    target: torch.Tensor | None
    attrs: dict[str, Any]
    fname: str
    slice_num: int


class FastMRIVolume(NamedTuple):
    """A whole file: k-space ``[S, (C,) H, W]`` complex64, mask ``[1, ..., W]`` or ``None``, target ``[S, h, w]``
    or ``None``, attrs and file name."""

    kspace: torch.Tensor
    mask: torch.Tensor | None
    target: torch.Tensor | None
    attrs: dict[str, Any]
    fname: str


def _check_finite(array: np.ndarray, path: Path, key: str, where: str) -> None:
    if not np.all(np.isfinite(array)):
        bad = int(np.size(array) - np.count_nonzero(np.isfinite(array)))
        raise FastMRIDataError(path, key, f"{bad} non-finite (NaN/Inf) values in {where}")


def _read_data(
    info: VolumeInfo, index: int | slice, check_finite: bool
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    path = info.path
    where = f"slice {index}" if isinstance(index, int) else "the volume"
    with _open(path) as hf:
        kspace = _read(_dataset(hf, path, FastMRIKey.KSPACE), path, FastMRIKey.KSPACE, index)
        if check_finite:
            _check_finite(kspace, path, FastMRIKey.KSPACE, where)
        mask = None
        if info.has_mask:
            mask_np = np.asarray(_read(_dataset(hf, path, FastMRIKey.MASK), path, FastMRIKey.MASK)).reshape(-1)
            mask = torch.from_numpy(mask_np.astype(np.float32)).reshape([1] * (kspace.ndim - 1) + [-1])
        target = None
        if info.target_key is not None:
            target_np = _read(_dataset(hf, path, info.target_key), path, info.target_key, index)
            if check_finite:
                _check_finite(target_np, path, info.target_key, where)
            target = torch.from_numpy(np.asarray(target_np, dtype=np.float32))
    return torch.from_numpy(np.asarray(kspace, dtype=np.complex64)), mask, target


def read_slice(
    path_or_info: str | os.PathLike | VolumeInfo,
    slice_num: int,
    challenge: str | Challenge | None = None,
    check_finite: bool = True,
) -> FastMRISample:
    """Read one slice of a fastMRI file.

    Args:
        path_or_info: The file, or its :class:`VolumeInfo` (skips re-validating the layout).
        slice_num: Slice index, ``0 <= slice_num < slices``.
        challenge: See :func:`read_volume_info` (ignored when a ``VolumeInfo`` is given).
        check_finite: Raise on NaN / Inf in the k-space or the target.

    Returns:
        The sample.
    """
    info = path_or_info if isinstance(path_or_info, VolumeInfo) else read_volume_info(path_or_info, challenge)
    if not 0 <= slice_num < info.num_slices:
        raise IndexError(f"{info.path}: slice {slice_num} out of range [0, {info.num_slices})")
    kspace, mask, target = _read_data(info, int(slice_num), check_finite)
    return FastMRISample(kspace, mask, target, info.sample_attrs(), info.fname, int(slice_num))


def read_volume(
    path_or_info: str | os.PathLike | VolumeInfo, challenge: str | Challenge | None = None, check_finite: bool = True
) -> FastMRIVolume:
    """Read a whole fastMRI file (see :func:`read_slice`); k-space ``[S, (C,) H, W]``, target ``[S, h, w]``."""
    info = path_or_info if isinstance(path_or_info, VolumeInfo) else read_volume_info(path_or_info, challenge)
    kspace, mask, target = _read_data(info, slice(None), check_finite)
    return FastMRIVolume(kspace, mask, target, info.sample_attrs(), info.fname)


def list_volume_files(root: str | os.PathLike) -> list[Path]:
    """Sorted ``*.h5`` / ``*.hdf5`` files directly inside ``root``."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset root {root} is not a directory")
    return sorted(p for p in root.iterdir() if p.is_file() and p.suffix.lower() in H5_SUFFIXES)


class SliceDataset(torch.utils.data.Dataset):
    """All slices of the fastMRI files in a folder (fastMRI's ``SliceDataset``, with typed samples).

    Every file is validated when the dataset is built (:func:`read_volume_info`); values when a slice is read.
    Sub-sampling by slice or by volume is reproducible: it uses its own ``random.Random(seed)``, not the global
    generator, and keeps the selected samples in file/slice order.

    Args:
        root: Folder of ``.h5`` files.
        challenge: ``"multicoil"`` (targets from ``reconstruction_rss``) or ``"singlecoil"``
            (``reconstruction_esc``); every file must match.
        transform: Called as ``transform(sample)`` on each :class:`FastMRISample`; its result is returned.
        sample_rate: Fraction of slices to keep (drawn at random); exclusive with ``volume_sample_rate``.
        volume_sample_rate: Fraction of volumes to keep (all their slices).
        seed: Seed of the sub-sampling.
        check_finite: Raise on NaN / Inf when reading a slice.
        raw_sample_filter: Optional ``filter(info, slice_num) -> bool`` applied before sub-sampling.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        challenge: str | Challenge = Challenge.MULTICOIL,
        transform: Callable[[FastMRISample], Any] | None = None,
        sample_rate: float | None = None,
        volume_sample_rate: float | None = None,
        seed: int = 0,
        check_finite: bool = True,
        raw_sample_filter: Callable[[VolumeInfo, int], bool] | None = None,
    ) -> None:
        try:
            self.challenge = Challenge(challenge)
        except ValueError:
            raise ValueError(f"challenge must be 'multicoil' or 'singlecoil'; got {challenge!r}") from None
        if sample_rate is not None and volume_sample_rate is not None:
            raise ValueError("set either sample_rate (by slice) or volume_sample_rate (by volume), not both")
        for name, rate in (("sample_rate", sample_rate), ("volume_sample_rate", volume_sample_rate)):
            if rate is not None and not 0.0 < rate <= 1.0:
                raise ValueError(f"{name} must lie in (0, 1]; got {rate}")
        self.root = Path(root)
        self.transform = transform
        self.check_finite = check_finite
        self.volumes = [read_volume_info(p, self.challenge) for p in list_volume_files(self.root)]
        samples = [(info, s) for info in self.volumes for s in range(info.num_slices)]
        if raw_sample_filter is not None:
            samples = [(info, s) for info, s in samples if raw_sample_filter(info, s)]
        rng = random.Random(seed)
        if sample_rate is not None and sample_rate < 1.0:
            keep = sorted(rng.sample(range(len(samples)), round(len(samples) * sample_rate)))
            samples = [samples[i] for i in keep]
        elif volume_sample_rate is not None and volume_sample_rate < 1.0:
            names = sorted({info.fname for info, _ in samples})
            chosen = set(rng.sample(names, round(len(names) * volume_sample_rate)))
            samples = [(info, s) for info, s in samples if info.fname in chosen]
        self.raw_samples: list[tuple[VolumeInfo, int]] = samples

    def __len__(self) -> int:
        return len(self.raw_samples)

    def __getitem__(self, index: int) -> Any:
        info, slice_num = self.raw_samples[index]
        sample = read_slice(info, slice_num, check_finite=self.check_finite)
        return sample if self.transform is None else self.transform(sample)
