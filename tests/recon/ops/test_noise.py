"""Noise level from the k-space corners and the RSS noise floor (``recon.ops.noise``)."""

from __future__ import annotations

import math

import pytest
import torch

from recon.ops import add_noise_floor, estimate_noise_std, fft2c, ifft2c, rss, rss_noise_floor


def _noisy(sigma: list[float], size: int = 96, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A smooth disc seen by len(sigma) coils, k-space with complex noise of sigma_c per part; (kspace, noise-free)."""
    g = torch.Generator().manual_seed(seed)
    y, x = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    image = torch.sigmoid((0.6 - (x**2 + y**2).sqrt()) * 40).to(torch.complex64)
    coils = len(sigma)
    maps = torch.stack([torch.exp(1j * torch.tensor(2 * math.pi * c / coils) * (1 + x)) for c in range(coils)])
    maps = (maps / math.sqrt(coils)).to(torch.complex64)
    clean = fft2c(image * maps)
    s = torch.tensor(sigma)[:, None, None]
    noise = torch.complex(torch.randn(clean.shape, generator=g), torch.randn(clean.shape, generator=g)) * s
    return clean + noise, clean


def test_noise_std_per_coil_from_the_corners() -> None:
    sigma = [0.01, 0.02, 0.005, 0.03]
    kspace, _ = _noisy(sigma)
    estimate = estimate_noise_std(kspace)
    assert estimate.shape == (4,)
    assert torch.allclose(estimate, torch.tensor(sigma), rtol=0.1)


def test_noise_floor_matches_the_rss_of_noisy_data_in_the_air() -> None:
    kspace, _ = _noisy([0.02] * 8, seed=1)
    target = rss(ifft2c(kspace))
    floor = rss_noise_floor(kspace)
    air = target[:8, :8]  # corner of the image: no object
    assert float(floor) == pytest.approx(float(air.square().mean().sqrt()), rel=0.1)
    # undersampled: only acquired columns count, and the estimate stays the same
    mask = torch.zeros(1, 1, kspace.shape[-1])
    mask[..., ::4] = 1
    mask[..., 40:56] = 1
    assert float(rss_noise_floor(kspace * mask, mask)) == pytest.approx(float(floor), rel=0.1)
    assert float(rss_noise_floor(kspace * mask)) == pytest.approx(float(floor), rel=0.1)  # columns found without mask


def test_noise_free_data_has_almost_no_floor_and_batches_work() -> None:
    noisy, clean = _noisy([0.02] * 4, seed=2)
    batch = torch.stack([clean, noisy])
    floors = rss_noise_floor(batch)
    assert floors.shape == (2,) and floors[0] < 0.05 * floors[1]


def test_add_noise_floor_values_and_gradient_at_zero() -> None:
    image = torch.tensor([[[3.0 + 4.0j, 0.0]]], requires_grad=True)
    out = add_noise_floor(image, torch.tensor([12.0]))
    assert torch.allclose(out, torch.tensor([[[13.0, 12.0]]]), atol=1e-5)
    zero = torch.zeros(1, 2, 2, requires_grad=True)
    add_noise_floor(zero, 0.0).sum().backward()
    assert torch.isfinite(zero.grad).all()


@pytest.mark.parametrize(("kwargs", "needle"), [({"fraction": 0.0}, "fraction"), ({"fraction": 0.7}, "fraction")])
def test_bad_arguments(kwargs: dict, needle: str) -> None:
    kspace, _ = _noisy([0.01, 0.01])
    with pytest.raises(ValueError, match=needle):
        estimate_noise_std(kspace, **kwargs)
    with pytest.raises(ValueError, match="complex"):
        estimate_noise_std(kspace.real)
