"""Tests of ``recon.data.writer.save_reconstructions`` (fastMRI submission format, atomic writes)."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from recon.data import writer
from recon.data.writer import center_crop, save_reconstructions


def _read(path: Path) -> np.ndarray:
    with h5py.File(path, "r") as hf:
        assert list(hf.keys()) == ["reconstruction"]
        return hf["reconstruction"][()]


def test_writes_one_file_per_volume_cropped(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    a = rng.random((3, 10, 8)).astype(np.float64)
    b = torch.rand(2, 9, 9)
    paths = save_reconstructions({"file_a.h5": a, "dir/file_b.h5": b}, tmp_path / "out", crop_size=(6, 6))
    assert [p.name for p in paths] == ["file_a.h5", "file_b.h5"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["file_a.h5", "file_b.h5"]
    out_a = _read(paths[0])
    assert out_a.shape == (3, 6, 6) and out_a.dtype == np.float32
    np.testing.assert_array_equal(out_a, a[:, 2:8, 1:7].astype(np.float32))  # fastMRI crop: start (size - crop) // 2
    np.testing.assert_array_equal(_read(paths[1]), b.numpy()[:, 1:7, 1:7])


def test_per_file_crop_and_no_crop(tmp_path: Path) -> None:
    vols = {"x.h5": np.ones((1, 8, 8)), "y.h5": np.ones((1, 12, 10))}
    paths = save_reconstructions(vols, tmp_path, crop_size={"x.h5": (8, 8), "y.h5": (4, 6)})
    assert _read(paths[0]).shape == (1, 8, 8) and _read(paths[1]).shape == (1, 4, 6)
    assert _read(save_reconstructions({"z.h5": np.ones((2, 5, 7))}, tmp_path)[0]).shape == (2, 5, 7)
    with pytest.raises(KeyError, match="no entry for 'x.h5'"):
        save_reconstructions(vols, tmp_path, crop_size={"y.h5": (4, 4)})


def test_inputs_are_not_modified(tmp_path: Path) -> None:
    array = np.random.default_rng(1).random((2, 6, 6))
    tensor = torch.rand(2, 6, 6, requires_grad=True)
    array_copy, tensor_copy = array.copy(), tensor.detach().clone()
    recons = {"a.h5": array, "b.h5": tensor}
    save_reconstructions(recons, tmp_path, crop_size=(4, 4))
    assert list(recons) == ["a.h5", "b.h5"] and recons["a.h5"] is array and recons["b.h5"] is tensor
    np.testing.assert_array_equal(array, array_copy)
    assert array.dtype == np.float64 and torch.equal(tensor.detach(), tensor_copy)


@pytest.mark.parametrize(
    ("volume", "message"),
    [
        (np.ones((2, 4, 4), np.complex64), "complex"),
        (np.ones((4, 4)), r"\(slices, H, W\)"),
        (np.full((1, 4, 4), np.nan), "non-finite"),
        (np.ones((1, 3, 3)), "fit in the image size"),
    ],
)
def test_invalid_volumes_write_nothing(tmp_path: Path, volume: np.ndarray, message: str) -> None:
    recons = {"good.h5": np.ones((1, 4, 4)), "bad.h5": volume}
    with pytest.raises(ValueError, match=message) as info:
        save_reconstructions(recons, tmp_path, crop_size=(4, 4))
    assert "bad.h5" in str(info.value)
    assert list(tmp_path.iterdir()) == []  # everything is validated before anything is written


def test_atomic_replace_and_no_temporary_left(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (first,) = save_reconstructions({"v.h5": np.zeros((1, 4, 4))}, tmp_path)
    save_reconstructions({"v.h5": np.ones((1, 4, 4))}, tmp_path)
    assert _read(first).max() == 1.0
    assert [p.name for p in tmp_path.iterdir()] == ["v.h5"]

    real_file = h5py.File

    class FailingFile(real_file):  # type: ignore[misc, valid-type]
        def create_dataset(self, *args: object, **kwargs: object) -> None:
            raise OSError("disk full")

    monkeypatch.setattr(writer.h5py, "File", FailingFile)
    with pytest.raises(OSError, match="disk full"):
        save_reconstructions({"v.h5": np.full((1, 4, 4), 7.0)}, tmp_path)
    monkeypatch.setattr(writer.h5py, "File", real_file)
    assert [p.name for p in tmp_path.iterdir()] == ["v.h5"]  # temporary removed
    assert _read(first).max() == 1.0  # the previous file is intact


def test_duplicate_names_and_center_crop(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="same output file"):
        save_reconstructions({"a/x.h5": np.ones((1, 2, 2)), "b/x.h5": np.ones((1, 2, 2))}, tmp_path)
    x = np.arange(5 * 6).reshape(5, 6)
    np.testing.assert_array_equal(center_crop(x, (2, 3)), x[1:3, 1:4])
