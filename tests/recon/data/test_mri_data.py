"""Tests of the fastMRI HDF5 reader (``recon.data.mri_data``): layout, header, dataset sampling and bad input."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from recon.data.keys import FastMRIKey
from recon.data.mri_data import (
    FastMRIDataError,
    FastMRISample,
    SliceDataset,
    parse_ismrmrd_header,
    read_slice,
    read_volume,
    read_volume_info,
)
from recon.data.subsample import create_mask_for_mask_type
from recon.data.synthetic import make_ismrmrd_header, write_synthetic_dataset
from recon.data.writer import center_crop
from recon.ops.coils import rss
from recon.ops.fft import ifft2c

# ------------------------------------------------------------------------------------------------------------------
# Reading valid files


def test_slice_dataset_multicoil(synthetic_dir: Path, synthetic_spec: dict) -> None:
    ds = SliceDataset(synthetic_dir)
    assert len(ds) == synthetic_spec["num_volumes"] * synthetic_spec["num_slices"]
    sample = ds[1]
    assert isinstance(sample, FastMRISample)
    height, width = synthetic_spec["shape"]
    assert sample.kspace.shape == (synthetic_spec["num_coils"], height, width)
    assert sample.kspace.dtype == torch.complex64
    assert sample.target.shape == synthetic_spec["recon_size"] and sample.target.dtype == torch.float32
    assert sample.mask is None
    assert sample.slice_num == 1 and sample.fname == sorted(p.name for p in synthetic_dir.glob("*.h5"))[0]
    attrs = sample.attrs
    assert attrs["recon_size"] == (*synthetic_spec["recon_size"], 1)
    assert attrs["encoding_size"] == (height, width, 1)
    assert (attrs["padding_left"], attrs["padding_right"]) == (0, width)
    for key in ("acquisition", "max", "norm", "patient_id"):
        assert key in attrs
    # the stored target is fastMRI's: RSS of the inverse FFT of the k-space, centre-cropped
    expected = center_crop(rss(ifft2c(sample.kspace)).numpy(), synthetic_spec["recon_size"])
    np.testing.assert_allclose(sample.target.numpy(), expected, rtol=1e-5, atol=1e-6)


def test_singlecoil_and_challenge_mismatch(synthetic_singlecoil_dir: Path, synthetic_dir: Path) -> None:
    ds = SliceDataset(synthetic_singlecoil_dir, challenge="singlecoil")
    sample = ds[0]
    assert sample.kspace.ndim == 2 and sample.target is not None
    np.testing.assert_allclose(sample.target.numpy(), ifft2c(sample.kspace).abs().numpy(), rtol=1e-5, atol=1e-6)
    with pytest.raises(FastMRIDataError, match=r"\[kspace\].*multicoil data must have rank 4"):
        SliceDataset(synthetic_singlecoil_dir, challenge="multicoil")
    with pytest.raises(FastMRIDataError, match=r"\[kspace\].*singlecoil data must have rank 3"):
        SliceDataset(synthetic_dir, challenge="singlecoil")
    with pytest.raises(ValueError, match="challenge"):
        SliceDataset(synthetic_dir, challenge="dualcoil")


def test_transform_and_volume(synthetic_dir: Path, synthetic_file: Path) -> None:
    ds = SliceDataset(synthetic_dir, transform=lambda s: (s.fname, s.slice_num, s.kspace.abs().sum()))
    fname, slice_num, _ = ds[4]
    assert slice_num == 1 and fname.endswith("001.h5")
    vol = read_volume(synthetic_file)
    assert vol.kspace.ndim == 4 and vol.target.ndim == 3
    assert torch.equal(vol.kspace[2], read_slice(synthetic_file, 2).kspace)
    with pytest.raises(IndexError, match="out of range"):
        read_slice(synthetic_file, 3)


def test_sampling_is_reproducible(synthetic_dir: Path) -> None:
    full = SliceDataset(synthetic_dir)
    by_slice = SliceDataset(synthetic_dir, sample_rate=0.5, seed=3)
    assert len(by_slice) == round(len(full) * 0.5)
    keys = [(i.fname, s) for i, s in by_slice.raw_samples]
    assert keys == [(i.fname, s) for i, s in SliceDataset(synthetic_dir, sample_rate=0.5, seed=3).raw_samples]
    assert keys == sorted(keys)
    by_volume = SliceDataset(synthetic_dir, volume_sample_rate=0.5, seed=0)
    assert len({i.fname for i, _ in by_volume.raw_samples}) == 1 and len(by_volume) == len(full) // 2
    with pytest.raises(ValueError, match="not both"):
        SliceDataset(synthetic_dir, sample_rate=0.5, volume_sample_rate=0.5)
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        SliceDataset(synthetic_dir, sample_rate=0.0)
    filtered = SliceDataset(synthetic_dir, raw_sample_filter=lambda info, s: s == 0)
    assert len(filtered) == 2


def test_mask_and_test_layout(tmp_path: Path) -> None:
    mask_func = create_mask_for_mask_type("equispaced_fraction", [0.08], [4])
    (path,) = write_synthetic_dataset(
        tmp_path, 1, 2, shape=(16, 50), num_coils=2, seed=5, mask_func=mask_func, include_target=False, padding=(2, 1)
    )
    info = read_volume_info(path)
    assert info.has_mask and info.target_key is None
    assert (info.header.padding_left, info.header.padding_right) == (2, 49)
    sample = read_slice(path, 0)
    assert sample.target is None and sample.mask.shape == (1, 1, 50)
    assert sample.attrs["num_low_frequencies"] == 4 and sample.attrs["acceleration"] > 1
    unsampled = ~sample.mask.bool().expand_as(sample.kspace)
    assert torch.all(sample.kspace[unsampled] == 0)
    assert sample.mask[..., :2].eq(0).all() and sample.mask[..., 49:].eq(0).all()


def test_parse_header_like_fastmri() -> None:
    """fastMRI: padding_left = enc_y // 2 - center, padding_right = padding_left + maximum + 1."""
    xml = make_ismrmrd_header((640, 372), (320, 320), padding=(17, 13), num_coils=15)
    info = parse_ismrmrd_header(xml)
    assert info.encoding_size == (640, 372, 1) and info.recon_size == (320, 320, 1)
    assert (info.padding_left, info.padding_right) == (17, 372 - 13)
    # the same header as a str and as a numpy bytes scalar (h5py's fixed-length strings)
    assert parse_ismrmrd_header(xml.decode()) == info
    assert parse_ismrmrd_header(np.array(xml)) == info


def test_header_absent_falls_back_to_shapes(tmp_path: Path) -> None:
    path = tmp_path / "noheader.h5"
    with h5py.File(path, "w") as hf:
        hf["kspace"] = np.ones((2, 3, 8, 10), np.complex64)
        hf["reconstruction_rss"] = np.ones((2, 6, 6), np.float32)
    info = read_volume_info(path)
    assert info.header.recon_size == (6, 6, 1) and (info.header.padding_left, info.header.padding_right) == (0, 10)


# ------------------------------------------------------------------------------------------------------------------
# Bad input: a corpus of broken files, each must fail with an error naming the file and the key


def _good(hf: h5py.File, slices: int = 2, coils: int = 2, height: int = 8, width: int = 10) -> None:
    hf["kspace"] = (np.ones((slices, coils, height, width)) * (1 + 1j)).astype(np.complex64)
    hf["reconstruction_rss"] = np.ones((slices, 6, 6), np.float32)
    hf["ismrmrd_header"] = np.bytes_(make_ismrmrd_header((height, width), (6, 6)))


def _variant(**overrides: object) -> Callable[[h5py.File], None]:
    def write(hf: h5py.File) -> None:
        _good(hf)
        for key, value in overrides.items():
            if key in hf:
                del hf[key]
            if value is not None:
                hf[key] = value

    return write


def _nan_kspace(hf: h5py.File) -> None:
    _good(hf)
    hf["kspace"][1, 0, 3, 4] = np.nan + 0j


def _inf_target(hf: h5py.File) -> None:
    _good(hf)
    hf["reconstruction_rss"][0, 2, 2] = np.inf


def _kspace_group(hf: h5py.File) -> None:
    hf.create_group("kspace")


GOOD_XML = make_ismrmrd_header((8, 10), (6, 6))

# (case id, writer, key named in the error, message fragment, raised when: "open" = indexing, "read" = slice read)
CORPUS = [
    ("missing_kspace", _variant(kspace=None), "kspace", "missing dataset", "open"),
    ("real_kspace", _variant(kspace=np.ones((2, 2, 8, 10), np.float32)), "kspace", "complex", "open"),
    ("rank_2_kspace", _variant(kspace=np.ones((8, 10), np.complex64)), "kspace", "rank", "open"),
    ("rank_5_kspace", _variant(kspace=np.ones((1, 2, 2, 8, 10), np.complex64)), "kspace", "rank", "open"),
    ("kspace_is_group", _kspace_group, "kspace", "expected a dataset", "open"),
    ("nan_kspace", _nan_kspace, "kspace", "non-finite", "read"),
    ("inf_target", _inf_target, "reconstruction_rss", "non-finite", "read"),
    ("mask_wrong_length", _variant(mask=np.ones(9, np.float32)), "mask", "length W=10", "open"),
    ("mask_not_binary", _variant(mask=np.full(10, 0.5, np.float32)), "mask", "0 or 1", "open"),
    (
        "target_wrong_slices",
        _variant(reconstruction_rss=np.ones((3, 6, 6), np.float32)),
        "reconstruction_rss",
        "slices",
        "open",
    ),
    (
        "target_complex",
        _variant(reconstruction_rss=np.ones((2, 6, 6), np.complex64)),
        "reconstruction_rss",
        "real",
        "open",
    ),
    (
        "header_malformed",
        _variant(ismrmrd_header=np.bytes_(b"<ismrmrdHeader><encoding>")),
        "ismrmrd_header",
        "malformed XML",
        "open",
    ),
    (
        "header_missing_recon",
        _variant(ismrmrd_header=np.bytes_(GOOD_XML.replace(b"reconSpace", b"otherSpace"))),
        "ismrmrd_header",
        "missing element encoding/reconSpace/matrixSize/x",
        "open",
    ),
    (
        "header_not_integer",
        _variant(ismrmrd_header=np.bytes_(GOOD_XML.replace(b"<x>8</x>", b"<x>eight</x>", 1))),
        "ismrmrd_header",
        "not an integer",
        "open",
    ),
]


def _write_corpus(root: Path) -> dict[str, Path]:
    paths = {}
    for name, writer, *_ in CORPUS:
        path = root / f"{name}.h5"
        with h5py.File(path, "w") as hf:
            writer(hf)
        paths[name] = path
    # file-level damage: not HDF5 at all, empty, truncated in the middle
    (root / "not_hdf5.h5").write_text("this is not an HDF5 file\n")
    (root / "empty.h5").write_bytes(b"")
    good = root / "good_source.h5"
    with h5py.File(good, "w") as hf:
        _good(hf, slices=4, height=64, width=64)
    data = good.read_bytes()
    (root / "truncated.h5").write_bytes(data[: len(data) // 2])
    good.unlink()
    return paths


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    _write_corpus(tmp_path)
    return tmp_path


@pytest.mark.parametrize(
    ("name", "key", "fragment", "when"), [(c[0], c[2], c[3], c[4]) for c in CORPUS], ids=[c[0] for c in CORPUS]
)
def test_broken_file_errors_name_file_and_key(corpus: Path, name: str, key: str, fragment: str, when: str) -> None:
    path = corpus / f"{name}.h5"
    if when == "open":
        with pytest.raises(FastMRIDataError) as info:
            read_volume_info(path)
    else:
        read_volume_info(path)  # the layout is fine
        with pytest.raises(FastMRIDataError) as info:
            read_volume(path)
        with pytest.raises(FastMRIDataError, match="slice"):
            for s in range(2):
                read_slice(path, s)
    err = info.value
    assert err.path == path and err.key == key
    assert str(path) in str(err) and f"[{key}]" in str(err) and fragment in str(err)


@pytest.mark.parametrize("name", ["not_hdf5", "empty", "truncated"])
def test_unreadable_files_name_the_file(corpus: Path, name: str) -> None:
    path = corpus / f"{name}.h5"
    with pytest.raises(FastMRIDataError, match="not a readable HDF5 file") as info:
        read_volume_info(path)
    assert info.value.path == path and str(path) in str(info.value)


def test_dataset_reports_the_broken_file(synthetic_file: Path, tmp_path: Path) -> None:
    shutil.copy(synthetic_file, tmp_path / synthetic_file.name)
    (tmp_path / "zz_broken.h5").write_text("garbage")
    (tmp_path / "notes.txt").write_text("ignored: not an .h5 file")
    with pytest.raises(FastMRIDataError, match="zz_broken.h5"):
        SliceDataset(tmp_path)
    with pytest.raises(FileNotFoundError):
        SliceDataset(tmp_path / "missing")


def test_corrupt_chunk_names_file_and_key(tmp_path: Path) -> None:
    """Damage inside the data (a gzip chunk overwritten) passes the layout check but fails on read, naming the key."""
    path = tmp_path / "corrupt.h5"
    with h5py.File(path, "w") as hf:
        data = (np.random.default_rng(0).random((2, 2, 16, 16)) + 1j).astype(np.complex64)
        hf.create_dataset("kspace", data=data, compression="gzip", chunks=(1, 2, 16, 16))
        offset = hf["kspace"].id.get_chunk_info(1).byte_offset
    raw = bytearray(path.read_bytes())
    raw[offset + 10 : offset + 60] = b"\xff" * 50
    path.write_bytes(bytes(raw))
    assert read_slice(path, 0).kspace.shape == (2, 16, 16)
    with pytest.raises(FastMRIDataError, match=r"corrupt\.h5 \[kspace\]: could not read data"):
        read_slice(path, 1)


def test_nan_error_from_dataset_indexing(tmp_path: Path) -> None:
    with h5py.File(tmp_path / "a.h5", "w") as hf:
        _nan_kspace(hf)
    ds = SliceDataset(tmp_path)
    ds[0]  # slice 0 is clean
    with pytest.raises(FastMRIDataError, match=r"a\.h5 \[kspace\]: 1 non-finite \(NaN/Inf\) values in slice 1"):
        ds[1]
    assert SliceDataset(tmp_path, check_finite=False)[1].kspace.isnan().any()
    assert FastMRIKey.KSPACE == "kspace"
