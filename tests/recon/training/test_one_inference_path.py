"""One inference path: the training data, its validation and ``recon.training.data.reconstruct`` scale the k-space,
measure the noise floor and return to the file's units through ``recon.inference`` (``prepare_batch`` and
``to_file_units``), as ``recon predict`` does. ``tests/recon/compare_revisions.py`` checks the results bit for bit
against another revision."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import recon.training.data as training_data
from recon.config import DataConfig
from recon.data.synthetic import write_synthetic_dataset
from recon.inference import prepare_batch, to_file_units
from recon.models import create_model


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("one_path")
    write_synthetic_dataset(out, num_volumes=1, num_slices=2, shape=(32, 32), num_coils=2, recon_size=(24, 32))
    return out


def test_training_data_and_validation_go_through_recon_inference(folder: Path, monkeypatch) -> None:
    calls: list[str] = []

    def spy_prepare(*args, **kwargs):
        calls.append("prepare_batch")
        return prepare_batch(*args, **kwargs)

    def spy_units(*args, **kwargs):
        calls.append("to_file_units")
        return to_file_units(*args, **kwargs)

    monkeypatch.setattr(training_data, "prepare_batch", spy_prepare)
    monkeypatch.setattr(training_data, "to_file_units", spy_units)
    data = DataConfig(noise_floor=True)
    dataset = training_data.SliceMaskDataset(folder, data, train=False)
    torch.manual_seed(0)
    model = create_model("rim", num_steps=2, hidden_channels=4).eval()
    with torch.no_grad():
        metrics = training_data.make_validator(dataset)(model)
    assert calls == ["prepare_batch", "to_file_units"] * len(dataset)
    assert set(metrics) == {"val_ssim", "val_psnr", "val_nmse"}
    item = dataset[0]
    calls.clear()
    image = training_data.reconstruct(model, item["masked_kspace"] * item["scale"], item["mask"], data)
    assert calls == ["prepare_batch", "to_file_units"] and image.shape == item["masked_kspace"].shape[-2:]


def test_to_file_units_scale_and_floor() -> None:
    image = torch.tensor([[[3 + 4j]], [[0j]]], dtype=torch.complex64)  # [2, 1, 1]
    scale = torch.tensor([2.0, 10.0])
    assert torch.equal(to_file_units(image, scale), torch.tensor([[[10.0]], [[0.0]]]))
    floored = to_file_units(image, scale, torch.tensor([0.0, 1.0]))
    assert torch.allclose(floored, torch.tensor([[[10.0]], [[10.0]]]))
