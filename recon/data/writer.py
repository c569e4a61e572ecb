"""Writing reconstructions in the fastMRI submission format.

One HDF5 file per input volume, named like the input, holding a float32 dataset ``reconstruction`` of shape
``(slices, h, w)`` centre-cropped to the header's reconstruction matrix (fastMRI's ``save_reconstructions`` in
``fastmri/utils.py`` and the leaderboard format; Zbontar et al., arXiv 1811.08839). fastMRI's ``evaluate.py`` reads
``recons["reconstruction"]`` from such files.

Each file is written atomically: to a temporary file in the output folder, then renamed over the target with
:func:`os.replace`, so a crash never leaves a half-written file under the final name. The inputs are never modified.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import h5py
import numpy as np
import torch

from recon.data.keys import FastMRIKey
from recon.ops import center_crop  # re-exported: the one centre crop (recon.ops._shapes)
from recon.provenance import write_provenance

__all__ = ["center_crop", "save_reconstructions"]

ArrayLike = np.ndarray | torch.Tensor
CropSize = tuple[int, int] | Sequence[int]


def _to_numpy(fname: str, recon: ArrayLike) -> np.ndarray:
    if isinstance(recon, torch.Tensor):
        recon = recon.detach().cpu().numpy()
    recon = np.asarray(recon)
    if np.iscomplexobj(recon):
        raise ValueError(f"reconstruction for {fname!r} is complex; save magnitude images (e.g. rss or abs)")
    if recon.ndim != 3:
        raise ValueError(f"reconstruction for {fname!r} must be (slices, H, W); got shape {recon.shape}")
    if not np.all(np.isfinite(recon)):
        raise ValueError(f"reconstruction for {fname!r} has non-finite (NaN/Inf) values")
    return recon


def _crop_for(fname: str, name: str, crop_size: CropSize | Mapping[str, CropSize] | None) -> CropSize | None:
    if crop_size is None or not isinstance(crop_size, Mapping):
        return crop_size
    for key in (fname, name):
        if key in crop_size:
            return crop_size[key]
    raise KeyError(f"crop_size has no entry for {fname!r}")


def save_reconstructions(
    reconstructions: Mapping[str, ArrayLike],
    out_dir: str | os.PathLike,
    crop_size: CropSize | Mapping[str, CropSize] | None = None,
    attrs: Mapping[str, object] | None = None,
) -> list[Path]:
    """Save one ``reconstruction`` file per volume (fastMRI submission format), atomically.

    Args:
        reconstructions: Map from input file name (e.g. ``"file1000001.h5"``; directories are stripped) to the
            real-valued volume ``(slices, H, W)``, numpy or torch.
        out_dir: Output folder, created if needed.
        crop_size: Centre-crop ``(h, w)`` applied to every volume, or a map from file name to its crop size (e.g.
            ``{info.fname: info.recon_size}`` from :class:`recon.data.mri_data.VolumeInfo`), or ``None`` to write
            the volumes as given.
        attrs: Provenance record stored in every file's root attributes
            (:func:`recon.provenance.write_provenance`), written in the same atomic step as the data.

    Returns:
        The written paths, in the order of ``reconstructions``.

    Raises:
        ValueError: If a volume is complex, not 3-D, non-finite or smaller than its crop; names the file.
    """
    from recvision.utils.atomic import atomic_write

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    prepared: dict[Path, np.ndarray] = {}
    for fname, recon in reconstructions.items():  # validate everything before writing anything
        name = Path(fname).name
        if out_dir / name in prepared:
            raise ValueError(f"two reconstructions map to the same output file {name!r}")
        volume = _to_numpy(name, recon)
        crop = _crop_for(str(fname), name, crop_size)
        if crop is not None:
            try:
                volume = center_crop(volume, crop)
            except ValueError as err:
                raise ValueError(f"reconstruction for {name!r}: {err}") from None
        prepared[out_dir / name] = volume
    for target, volume in prepared.items():

        def write(tmp_name: str, volume: np.ndarray = volume) -> None:
            with h5py.File(tmp_name, "w") as hf:
                hf.create_dataset(str(FastMRIKey.RECONSTRUCTION), data=np.ascontiguousarray(volume, dtype=np.float32))
                if attrs is not None:
                    write_provenance(hf, attrs)

        atomic_write(target, write)
    return list(prepared)
