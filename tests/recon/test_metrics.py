"""Metrics against fastMRI's evaluate.py (committed fixture, see tests/data/make_metric_fixtures.py)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from recon.metrics import (
    MetricsAggregator,
    nmse,
    nmse_per_slice,
    psnr,
    psnr_per_slice,
    ssim,
    ssim_per_slice,
)

FIXTURE = Path(__file__).resolve().parents[1] / "data" / "fastmri_metrics.npz"


@pytest.fixture(scope="module")
def fastmri_values() -> dict[str, np.ndarray]:
    with np.load(FIXTURE) as data:
        return {key: data[key] for key in data.files}


def _cases(values: dict[str, np.ndarray]):
    for name in values["cases"]:
        maxval = float(values[f"{name}_maxval"])
        yield str(name), values[f"{name}_gt"], values[f"{name}_pred"], None if math.isnan(maxval) else maxval


def test_fixture_cases_present(fastmri_values: dict[str, np.ndarray]) -> None:
    names = set(fastmri_values["cases"].tolist())
    assert {"smooth_noise", "phantom_blur", "slice_ranges", "odd_shape", "explicit_maxval", "float32"} <= names


def test_equal_to_fastmri(fastmri_values: dict[str, np.ndarray]) -> None:
    for name, gt, pred, maxval in _cases(fastmri_values):
        assert nmse(gt, pred) == pytest.approx(float(fastmri_values[f"{name}_nmse"]), abs=1e-6), name
        assert psnr(gt, pred, maxval) == pytest.approx(float(fastmri_values[f"{name}_psnr"]), abs=1e-6), name
        assert ssim(gt, pred, maxval) == pytest.approx(float(fastmri_values[f"{name}_ssim"]), abs=1e-6), name
        np.testing.assert_allclose(
            ssim_per_slice(gt, pred, maxval).numpy(), fastmri_values[f"{name}_ssim_slices"], rtol=0, atol=1e-6
        )


def test_torch_and_numpy_inputs_agree(fastmri_values: dict[str, np.ndarray]) -> None:
    gt, pred = fastmri_values["phantom_blur_gt"], fastmri_values["phantom_blur_pred"]
    tg, tp = torch.from_numpy(gt).float(), torch.from_numpy(pred).float()
    assert ssim(tg, tp) == pytest.approx(ssim(gt, pred), abs=1e-6)
    assert psnr(tg, tp) == pytest.approx(psnr(gt, pred), abs=1e-4)
    assert nmse(tg, tp) == pytest.approx(nmse(gt, pred), rel=1e-5)


def test_per_slice_definitions() -> None:
    g = torch.Generator().manual_seed(0)
    gt = torch.rand(3, 16, 16, generator=g, dtype=torch.float64)
    pred = gt + 0.05 * torch.randn(3, 16, 16, generator=g, dtype=torch.float64)
    mse = (gt - pred).square().mean(dim=(1, 2))
    torch.testing.assert_close(psnr_per_slice(gt, pred), 10 * torch.log10(gt.max() ** 2 / mse))
    torch.testing.assert_close(nmse_per_slice(gt, pred), (gt - pred).square().sum((1, 2)) / gt.square().sum((1, 2)))
    assert ssim_per_slice(gt, pred).mean().item() == pytest.approx(ssim(gt, pred))
    assert ssim(gt, gt) == pytest.approx(1.0)
    assert psnr(gt, gt) == math.inf and nmse(gt, gt) == 0.0


def test_aggregator() -> None:
    g = torch.Generator().manual_seed(1)
    agg = MetricsAggregator()
    pushed = []
    for _ in range(3):
        gt = torch.rand(2, 12, 12, generator=g, dtype=torch.float64)
        pred = gt + 0.1 * torch.rand(2, 12, 12, generator=g, dtype=torch.float64)
        pushed.append(agg.push(gt, pred))
    assert len(agg) == 3
    summary = agg.summary()
    for name in ("NMSE", "PSNR", "SSIM"):
        values = np.array([p[name] for p in pushed])
        assert summary[name]["mean"] == pytest.approx(values.mean())
        assert summary[name]["std"] == pytest.approx(values.std(ddof=1))  # runstats' sample std, as fastMRI
    text = str(agg)
    assert text.startswith("NMSE = ") and "PSNR = " in text and "SSIM = " in text and "+/-" in text
    assert math.isnan(MetricsAggregator().summary()["SSIM"]["mean"])


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: ssim(np.ones((8, 8)), np.ones((8, 8))), "gt must have 3 dimensions"),
        (lambda: ssim(np.ones((1, 8, 8)), np.ones((1, 8, 9))), "pred of shape"),
        (lambda: ssim(np.ones((1, 5, 5)), np.ones((1, 5, 5))), "at least 7x7"),
        (lambda: psnr(np.ones((2, 8, 8)) + 0j, np.ones((2, 8, 8))), "gt must be real"),
        (lambda: nmse(np.ones((2, 8, 8)), torch.ones(2, 8, 8, dtype=torch.complex64)), "pred must be real"),
        (lambda: psnr(np.zeros((1, 8, 8)), np.ones((1, 8, 8))), "maxval"),
        (lambda: nmse([1.0], [1.0]), "gt must be a numpy array or torch tensor"),
    ],
    ids=["ndim", "shape", "small", "complex-gt", "complex-pred", "zero-range", "list"],
)
def test_errors(call, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call()
