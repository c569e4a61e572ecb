"""Data side of ``recon``: undersampling masks, fastMRI-style HDF5 reading and writing, synthetic data, transforms.

Re-exported here: keys, masks, the reader and the writer. Import :mod:`recon.data.transforms` (needs MONAI) and
:mod:`recon.data.synthetic` (scikit-image / scipy; optionally nibabel, nilearn) explicitly, so that importing
:mod:`recon.data` stays light.
"""

from recon.data.keys import Challenge, FastMRIKey, MaskType, SampleKey
from recon.data.mri_data import (
    FastMRIDataError,
    FastMRISample,
    FastMRIVolume,
    SliceDataset,
    VolumeInfo,
    parse_ismrmrd_header,
    read_slice,
    read_volume,
    read_volume_info,
)
from recon.data.subsample import (
    MaskFunc,
    apply_mask,
    create_mask_for_mask_type,
    num_low_frequencies_from_mask,
    seed_from_fname,
)
from recon.data.writer import save_reconstructions

__all__ = [
    "Challenge",
    "FastMRIDataError",
    "FastMRIKey",
    "FastMRISample",
    "FastMRIVolume",
    "MaskFunc",
    "MaskType",
    "SampleKey",
    "SliceDataset",
    "VolumeInfo",
    "apply_mask",
    "create_mask_for_mask_type",
    "num_low_frequencies_from_mask",
    "parse_ismrmrd_header",
    "read_slice",
    "read_volume",
    "read_volume_info",
    "save_reconstructions",
    "seed_from_fname",
]
