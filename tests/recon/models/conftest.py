"""Fixtures of the model tests: a tiny synthetic multi-coil slice and a 20-step training helper."""

from __future__ import annotations

import math

import pytest
import torch

from recon.ops import fft2c, mask_kspace


def make_slice(
    batch: int = 1, coils: int = 2, size: int = 16, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(masked_kspace [B, C, H, W], mask [1, 1, 1, W], sens_maps [B, C, H, W], target [B, H, W])``.

    The target is a smooth disc with a phase ramp; the coil maps are smooth and RSS-normalised; the mask keeps the
    4 centre columns and every third other column.
    """
    g = torch.Generator().manual_seed(seed)
    y, x = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    images = []
    for _ in range(batch):
        cx, cy = (torch.rand(2, generator=g) - 0.5) * 0.4
        disc = ((x - cx) ** 2 + (y - cy) ** 2 < 0.5).float() + 0.5 * ((x + cx) ** 2 + y**2 < 0.1).float()
        images.append(disc * torch.exp(1j * 0.5 * x))
    target = torch.stack(images).to(torch.complex64)
    maps = []
    for c in range(coils):
        angle = 2 * math.pi * c / coils
        amplitude = torch.exp(-((x - 0.7 * math.cos(angle)) ** 2 + (y - 0.7 * math.sin(angle)) ** 2))
        maps.append(amplitude * torch.exp(1j * (angle + 0.3 * y)))
    sens = torch.stack(maps).to(torch.complex64)
    sens = sens / sens.abs().pow(2).sum(0, keepdim=True).sqrt()
    sens = sens.expand(batch, -1, -1, -1).contiguous()
    mask = torch.zeros(1, 1, 1, size)
    mask[..., ::3] = 1
    mask[..., size // 2 - 2 : size // 2 + 2] = 1
    kspace = mask_kspace(fft2c(target.unsqueeze(1) * sens), mask)
    return kspace, mask, sens, target


def _loss_decreases(model: torch.nn.Module, steps: int = 20, lr: float = 1e-3) -> tuple[float, float]:
    """Train ``model`` for ``steps`` Adam steps on one synthetic slice; return (first loss, last loss)."""
    torch.manual_seed(0)
    kspace, mask, sens, target = make_slice()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    for _ in range(steps + 1):
        optimizer.zero_grad()
        preds = [p for cascade in model.predictions(kspace, mask, sens) for p in cascade]
        loss = sum((p - target).abs().mean() for p in preds) / len(preds)
        losses.append(loss.item())
        loss.backward()
        optimizer.step()
    return losses[0], losses[-1]


@pytest.fixture
def synthetic_slice() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Batch of two slices: ``(masked_kspace, mask, sens_maps, target)``."""
    return make_slice(batch=2)


@pytest.fixture
def loss_decreases():
    """``loss_decreases(model, steps=20, lr=1e-3) -> (first loss, last loss)``."""
    return _loss_decreases
