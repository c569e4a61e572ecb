"""A tiny synthetic multi-coil dataset for the training tests."""

from __future__ import annotations

import math

import torch

from recon.ops import fft2c, mask_kspace

TINY = {
    "rim": {"num_steps": 2, "hidden_channels": 8},
    "cirim": {"num_cascades": 2, "num_steps": 2, "hidden_channels": 8},
}


def tiny_dataset(n: int = 4, size: int = 16, coils: int = 2, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    """``n`` slices (discs with a phase ramp, smooth coil maps, equispaced mask + 4 centre columns)."""
    g = torch.Generator().manual_seed(seed)
    y, x = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    maps = []
    for c in range(coils):
        a = 2 * math.pi * c / coils
        amp = torch.exp(-((x - 0.7 * math.cos(a)) ** 2 + (y - 0.7 * math.sin(a)) ** 2))
        maps.append(amp * torch.exp(1j * (a + 0.3 * y)))
    sens = torch.stack(maps).to(torch.complex64)
    sens = sens / sens.abs().pow(2).sum(0, keepdim=True).sqrt()
    mask = torch.zeros(1, 1, size)
    mask[..., ::3] = 1
    mask[..., size // 2 - 2 : size // 2 + 2] = 1
    items = []
    for _ in range(n):
        cx, cy = (torch.rand(2, generator=g) - 0.5) * 0.6
        r = 0.4 + 0.2 * torch.rand(1, generator=g).item()
        image = ((x - cx) ** 2 + (y - cy) ** 2 < r).float() + 0.5 * ((x + cx) ** 2 + y**2 < 0.1).float()
        target = (image * torch.exp(1j * 0.5 * x)).to(torch.complex64)
        kspace = mask_kspace(fft2c(target.unsqueeze(0) * sens), mask)
        items.append({"masked_kspace": kspace, "mask": mask, "sens_maps": sens, "target": target.abs()})
    return items
