"""Tests of the synthetic fastMRI-layout generator (``recon.data.synthetic``)."""

from __future__ import annotations

import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from recon.data import sources
from recon.data.mri_data import read_volume, read_volume_info
from recon.data.synthetic import (
    birdcage_maps,
    simulate_volume,
    source_images,
    write_synthetic_dataset,
)
from recon.ops.fft import fft2c, ifft2c


def _arrays(path: Path) -> dict[str, np.ndarray]:
    with h5py.File(path, "r") as hf:
        return {key: hf[key][()] for key in hf} | {f"attr:{k}": v for k, v in hf.attrs.items()}


def test_layout_attrs_and_header(synthetic_dir: Path, synthetic_spec: dict) -> None:
    paths = sorted(synthetic_dir.glob("*.h5"))
    assert len(paths) == synthetic_spec["num_volumes"]
    data = _arrays(paths[0])
    height, width = synthetic_spec["shape"]
    assert data["kspace"].dtype == np.complex64
    assert data["kspace"].shape == (synthetic_spec["num_slices"], synthetic_spec["num_coils"], height, width)
    target = data["reconstruction_rss"]
    assert target.dtype == np.float32 and target.shape == (synthetic_spec["num_slices"], *synthetic_spec["recon_size"])
    assert data["attr:max"] == pytest.approx(float(target.max()))
    assert data["attr:norm"] == pytest.approx(float(np.linalg.norm(target)), rel=1e-6)
    assert data["attr:acquisition"] == "SYNTH_PHANTOM" and data["attr:patient_id"] == "synthetic-0-000"
    assert isinstance(data["ismrmrd_header"], bytes) and b"ismrmrdHeader" in data["ismrmrd_header"]
    info = read_volume_info(paths[0])
    assert info.header.encoding_size == (height, width, 1)
    assert info.recon_size == synthetic_spec["recon_size"] and info.num_coils == synthetic_spec["num_coils"]


def test_deterministic_from_seed(tmp_path: Path) -> None:
    kwargs = {"num_volumes": 2, "num_slices": 2, "shape": (24, 20), "num_coils": 3, "source": "phantom"}
    a = write_synthetic_dataset(tmp_path / "a", seed=7, **kwargs)
    b = write_synthetic_dataset(tmp_path / "b", seed=7, **kwargs)
    c = write_synthetic_dataset(tmp_path / "c", seed=8, **kwargs)
    for pa, pb in zip(a, b, strict=True):
        da, db = _arrays(pa), _arrays(pb)
        assert da.keys() == db.keys()
        for key in da:
            np.testing.assert_array_equal(da[key], db[key], err_msg=key)
    assert not np.array_equal(_arrays(a[0])["kspace"], _arrays(c[0])["kspace"])
    # the two phantom volumes differ (Shepp-Logan, then random ellipses)
    assert not np.allclose(_arrays(a[0])["reconstruction_rss"], _arrays(a[1])["reconstruction_rss"])


def test_physics_without_noise() -> None:
    """Noise-free: the coil images are S_c x, the maps are RSS-normalised, so RSS(F^-1 y) = |x|."""
    vol = simulate_volume(2, (32, 28), 6, "ellipses", np.random.default_rng(0), noise_std=0.0)
    coil_images = ifft2c(torch.from_numpy(vol.kspace))
    expected = torch.from_numpy(vol.image)[:, None] * torch.from_numpy(vol.sens)[None]
    torch.testing.assert_close(coil_images, expected, atol=1e-5, rtol=1e-4)
    np.testing.assert_allclose(vol.target, np.abs(vol.image), atol=1e-5)
    assert np.abs(np.angle(vol.image[np.abs(vol.image) > 0.1])).max() > 0.05  # the object carries a phase


def test_noise_level() -> None:
    vol = simulate_volume(1, (64, 64), 2, "shepp_logan", np.random.default_rng(0), noise_std=0.01)
    clean = fft2c(torch.from_numpy(vol.image)[:, None] * torch.from_numpy(vol.sens)[None]).numpy()
    residual = vol.kspace - clean
    sigma = 0.01 * np.abs(vol.image).max()
    assert residual.real.std() == pytest.approx(sigma, rel=0.05)
    assert residual.imag.std() == pytest.approx(sigma, rel=0.05)


def test_birdcage_maps_normalised_and_smooth() -> None:
    maps = birdcage_maps(8, (40, 32), rotation=0.3)
    assert maps.shape == (8, 40, 32) and maps.dtype == np.complex64
    np.testing.assert_allclose((np.abs(maps) ** 2).sum(axis=0), 1.0, rtol=1e-5)
    magnitude = np.abs(maps)
    assert magnitude.max(axis=(1, 2)).min() > 2 * magnitude.min(axis=(1, 2)).max()  # localised coils
    # smooth: over 95 % of each map's energy lies in the central quarter (per axis) of k-space
    spectrum = fft2c(torch.from_numpy(maps)).abs() ** 2
    assert (spectrum[:, 15:25, 12:20].sum((1, 2)) / spectrum.sum((1, 2))).min() > 0.95
    with pytest.raises(ValueError, match="num_coils"):
        birdcage_maps(0, (4, 4))


def test_padding_and_singlecoil(tmp_path: Path) -> None:
    (path,) = write_synthetic_dataset(tmp_path, 1, 2, shape=(16, 30), num_coils=2, padding=(3, 4), seed=2)
    vol = read_volume(path)
    assert vol.kspace[..., :3].abs().max() == 0 and vol.kspace[..., 26:].abs().max() == 0
    assert vol.kspace[..., 3:26].abs().min() > 0
    assert (vol.attrs["padding_left"], vol.attrs["padding_right"]) == (3, 26)
    (single,) = write_synthetic_dataset(tmp_path / "sc", 1, 2, shape=(16, 30), challenge="singlecoil", seed=2)
    data = _arrays(single)
    assert data["kspace"].shape == (2, 16, 30) and "reconstruction_esc" in data and "reconstruction_rss" not in data
    esc = ifft2c(torch.from_numpy(data["kspace"])).abs().numpy()
    np.testing.assert_allclose(data["reconstruction_esc"], esc, rtol=1e-5, atol=1e-6)


def test_source_images_and_errors() -> None:
    rng = np.random.default_rng(0)
    for source in ("shepp_logan", "ellipses"):
        images = source_images(source, 3, (20, 16), rng)
        assert images.shape == (3, 20, 16) and images.min() >= 0 and images.max() == pytest.approx(1.0, abs=0.05)
        assert images[1].sum() > images[0].sum()  # the middle slice cuts the object widest
    with pytest.raises(ValueError, match="unknown source"):
        source_images("cat", 1, (8, 8), rng)
    with pytest.raises(ValueError, match="unknown source"):
        write_synthetic_dataset("unused", source="cat")
    with pytest.raises(ValueError, match="recon_size"):
        simulate_volume(1, (16, 16), 2, recon_size=(20, 16))
    with pytest.raises(ValueError, match="padding"):
        simulate_volume(1, (16, 16), 2, padding=(8, 8))


@pytest.mark.parametrize(("source", "package"), [("epi", "nibabel"), ("mni", "nilearn")])
def test_packaged_anatomy(tmp_path: Path, source: str, package: str) -> None:
    pytest.importorskip(package)
    (path,) = write_synthetic_dataset(tmp_path, 1, 2, shape=(40, 32), num_coils=2, source=source, seed=0)
    target = _arrays(path)["reconstruction_rss"]
    assert target.shape == (2, 40, 32) and np.isfinite(target).all()
    # a head: bright in the middle, dark in the corners
    assert target[:, 15:25, 12:20].mean() > 5 * target[:, :4, :4].mean()


@pytest.mark.parametrize(
    ("source", "package"), [("epi", "nibabel"), ("mni", "nilearn.datasets"), ("abdomen", "pydicom")]
)
def test_missing_optional_package_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, source: str, package: str) -> None:
    monkeypatch.setitem(sys.modules, package, None)  # makes `import package` raise ImportError
    loaders = (sources._load_epi, sources._load_mni, sources._load_dicom)
    for loader in loaders:
        loader.cache_clear()
    with pytest.raises(ImportError, match=rf"source='{source}' needs .*pip install"):
        source_images(source, 1, (8, 8), np.random.default_rng(0))
    for loader in loaders:
        loader.cache_clear()


def test_epi_training_and_heldout_slabs_are_disjoint() -> None:
    """The realistic corpus trains on slices of nibabel's EPI that the held-out split never uses, whatever the draw."""
    pytest.importorskip("nibabel")
    nz = sources._load_epi().shape[2]
    seen = {}
    for name in ("epi_train", "epi_heldout"):
        lo, hi = sources._EPI_SLABS[name]
        # _axial_stack jitters the heights by up to 0.05 either way
        seen[name] = set(np.round(np.clip(np.array([lo - 0.05, hi + 0.05]), 0, 1) * (nz - 1)).astype(int))
        seen[name] = set(range(min(seen[name]), max(seen[name]) + 1))
    assert seen["epi_train"].isdisjoint(seen["epi_heldout"])
    assert not set(sources.HELDOUT_SOURCES) & {name for name, _ in sources.TRAINING_MIX}


def test_natural_source_has_air_around_textured_object() -> None:
    images = source_images("natural", 3, (64, 64), np.random.default_rng(1), volume_index=2)
    assert images.shape == (3, 64, 64) and images.min() >= 0 and images.max() == pytest.approx(1.0)
    corners = np.concatenate([images[:, :4, :4].ravel(), images[:, -4:, -4:].ravel()])
    assert corners.max() < 0.02  # air
    centre = images[:, 24:40, 24:40]
    assert centre.mean() > 0.1 and centre.std() > 0.02  # textured, not flat
    assert not np.allclose(images[0], images[1])  # slices are different crops


def test_dicom_sources_are_real_images() -> None:
    pytest.importorskip("pydicom")
    for name in ("abdomen", "mr_small"):
        images = source_images(name, 2, (48, 40), np.random.default_rng(0))
        assert images.shape == (2, 48, 40) and np.isfinite(images).all() and images.max() == pytest.approx(1.0)
        assert np.allclose(images[1], images[1][:, ::-1]) is False  # the mirrored slice is not symmetric


def test_realistic_corpus_draws_sources_coils_and_noise(tmp_path: Path) -> None:
    pytest.importorskip("nibabel")
    pytest.importorskip("nilearn")
    paths = write_synthetic_dataset(
        tmp_path, 8, 1, shape=(32, 32), num_coils=(4, 16), source="realistic", seed=5, noise_std=(0.0, 0.03)
    )
    coils, noises, kinds = set(), set(), set()
    for path in paths:
        with h5py.File(path) as hf:
            coils.add(hf["kspace"].shape[1])
            noises.add(float(hf.attrs["noise_std"]))
            kinds.add(str(hf.attrs["acquisition"]))
            assert hf["reconstruction_rss"].shape == (1, 32, 32)
    assert len(coils) > 1 and all(4 <= c <= 16 for c in coils)
    assert len(noises) > 1 and all(0.0 <= n <= 0.03 for n in noises)
    assert len(kinds) > 1 and all(k.split("_", 1)[1].lower() in dict(sources.TRAINING_MIX) for k in kinds)
    again = write_synthetic_dataset(
        tmp_path / "again", 8, 1, shape=(32, 32), num_coils=(4, 16), source="realistic", seed=5, noise_std=(0.0, 0.03)
    )
    for a, b in zip(paths, again, strict=True):
        assert np.array_equal(read_volume(a).kspace, read_volume(b).kspace)


@pytest.mark.parametrize(("arg", "value"), [("num_coils", (5, 3)), ("noise_std", (-0.1, 0.1)), ("num_coils", 0)])
def test_bad_ranges_are_clear_errors(tmp_path: Path, arg: str, value: object) -> None:
    with pytest.raises(ValueError, match=arg):
        write_synthetic_dataset(tmp_path, 1, 1, shape=(16, 16), **{arg: value})


def test_tiny_noise_range_stays_inside_the_range(tmp_path: Path) -> None:
    paths = write_synthetic_dataset(tmp_path, 6, 1, shape=(16, 16), noise_std=(0.0, 5e-5), seed=3)
    noises = [float(h5py.File(p).attrs["noise_std"]) for p in paths]
    assert all(0.0 <= n <= 5e-5 for n in noises) and len(set(noises)) > 1
