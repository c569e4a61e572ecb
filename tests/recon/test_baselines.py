"""Classical baselines: wavelets, zero-filled reconstructions and CS-SENSE (TV, wavelet) beating zero-filled at 4x."""

from __future__ import annotations

import math

import pytest
import torch
from skimage.data import shepp_logan_phantom
from skimage.transform import resize

from recon.baselines import (
    Wavelet2d,
    _grad,
    _grad_adjoint,
    daubechies_filter,
    tv_sense,
    wavelet_sense,
    zero_filled_rss,
    zero_filled_sense,
)
from recon.metrics import psnr, ssim
from recon.ops.coils import estimate_sens_maps, rss
from recon.ops.fft import fft2c, ifft2c


@pytest.mark.parametrize("order", [1, 2, 4, 8])
def test_daubechies_filters_are_orthonormal(order: int) -> None:
    h = daubechies_filter(order)
    assert h.numel() == 2 * order
    assert h.sum().item() == pytest.approx(math.sqrt(2), abs=1e-12)
    for shift in range(order):
        expected = 1.0 if shift == 0 else 0.0
        assert (h[: h.numel() - 2 * shift] * h[2 * shift :]).sum().item() == pytest.approx(expected, abs=1e-10)
    alternating = torch.tensor([(-1.0) ** k for k in range(h.numel())], dtype=torch.float64)
    assert (h * alternating).sum().item() == pytest.approx(0.0, abs=1e-10)  # a zero at the Nyquist frequency


def test_db2_closed_form() -> None:
    s3 = math.sqrt(3)
    expected = torch.tensor([1 + s3, 3 + s3, 3 - s3, 1 - s3], dtype=torch.float64) / (4 * math.sqrt(2))
    torch.testing.assert_close(daubechies_filter(2), expected)


@pytest.mark.parametrize(("shape", "order", "levels"), [((16, 16), 1, 4), ((32, 24), 4, 3), ((8, 40), 2, 2)])
def test_wavelet_is_orthonormal(shape: tuple[int, int], order: int, levels: int) -> None:
    wav = Wavelet2d(shape, order=order, levels=levels)
    x = torch.randn(2, *shape, dtype=torch.complex128)
    c = wav.forward(x)
    torch.testing.assert_close(wav.inverse(c), x, rtol=0, atol=1e-12)
    assert c.norm().item() == pytest.approx(x.norm().item(), rel=1e-12)
    real = torch.randn(*shape, dtype=torch.float64)
    torch.testing.assert_close(wav.inverse(wav.forward(real)), real, rtol=0, atol=1e-12)
    # a constant image lives in the approximation band only
    const = wav.forward(torch.ones(*shape, dtype=torch.float64))
    assert const[wav.detail_mask()].abs().max().item() < 1e-10


def test_gradient_adjoint() -> None:
    x = torch.randn(2, 7, 9, dtype=torch.complex128)
    q = torch.randn(2, 2, 7, 9, dtype=torch.complex128)
    torch.testing.assert_close((_grad(x).conj() * q).sum(), (x.conj() * _grad_adjoint(q)).sum())


def _maps(num_coils: int, n: int) -> torch.Tensor:
    yy, xx = torch.meshgrid(*(torch.linspace(-1, 1, n, dtype=torch.float64),) * 2, indexing="ij")
    maps = []
    for c in range(num_coils):
        a = 2 * math.pi * c / num_coils
        mag = torch.exp(-((yy - 1.5 * math.sin(a)) ** 2 + (xx - 1.5 * math.cos(a)) ** 2) / (2 * 1.2**2))
        maps.append(mag * torch.exp(1j * (a + 0.8 * (xx * math.cos(a) + yy * math.sin(a)))))
    s = torch.stack(maps)
    return s / rss(s).unsqueeze(0)


def _phantom_problem(n: int = 128, coils: int = 8, seed: int = 0, noise: float = 0.01):
    """Shepp-Logan (smooth phase) x smooth maps, 4x random line mask with 8% fully sampled centre, light noise."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(*(torch.linspace(-1, 1, n, dtype=torch.float64),) * 2, indexing="ij")
    image = torch.from_numpy(resize(shepp_logan_phantom(), (n, n), anti_aliasing=True))
    image = (image * torch.exp(1j * (0.5 * xx + 0.3 * yy**2))).to(torch.complex64)
    kspace = fft2c(_maps(coils, n).to(torch.complex64) * image)
    kspace = kspace + noise * torch.complex(
        torch.randn(kspace.shape, generator=g), torch.randn(kspace.shape, generator=g)
    )
    num_low = round(0.08 * n)
    start = (n - num_low + 1) // 2
    line = torch.rand(n, generator=g) < (n / 4 - num_low) / (n - num_low)
    line[start : start + num_low] = True
    mask = line.float()[None]  # [1, W]
    return torch.where(line, kspace, 0), mask, num_low, image


def test_zero_filled_reconstructions() -> None:
    sens = _maps(4, 16)
    image = torch.randn(16, 16, dtype=torch.complex128)
    full = fft2c(sens * image)
    torch.testing.assert_close(zero_filled_sense(full, sens), image)
    torch.testing.assert_close(zero_filled_rss(full), image.abs())
    torch.testing.assert_close(zero_filled_rss(full), rss(ifft2c(full)))


def test_cs_beats_zero_filled_at_4x() -> None:
    y, mask, num_low, image = _phantom_problem()
    acceleration = mask.numel() / mask.sum().item()
    assert 3.5 < acceleration < 4.8
    sens = estimate_sens_maps(y, num_low, "espirit")
    target = image.abs()[None].numpy()
    recons = {
        "zero-filled RSS": zero_filled_rss(y),
        "zero-filled SENSE": zero_filled_sense(y, sens).abs(),
        "TV (primal-dual)": tv_sense(y, sens, mask).abs(),
        "wavelet db4 (FISTA)": wavelet_sense(y, sens, mask).abs(),
    }
    scores = {name: ssim(target, r[None].numpy()) for name, r in recons.items()}
    print(
        f"\nacceleration {acceleration:.2f}: "
        + ", ".join(f"{k} SSIM {v:.4f} / PSNR {psnr(target, recons[k][None].numpy()):.2f}" for k, v in scores.items())
    )
    zero_filled = max(scores["zero-filled RSS"], scores["zero-filled SENSE"])
    assert scores["TV (primal-dual)"] > zero_filled + 0.25
    assert scores["wavelet db4 (FISTA)"] > zero_filled + 0.15


def test_cs_is_scale_invariant_and_batched() -> None:
    y, mask, num_low, _ = _phantom_problem(n=32, coils=4, seed=3)
    sens = estimate_sens_maps(y, num_low + 2, "acs")
    for solver in (tv_sense, wavelet_sense):
        kwargs = {"num_iterations": 5} if solver is tv_sense else {"num_iterations": 5, "levels": 2}
        ref = solver(y, sens, mask, **kwargs)
        torch.testing.assert_close(solver(1e-4 * y, sens, mask, **kwargs), 1e-4 * ref, rtol=1e-4, atol=1e-9)
        batched = solver(torch.stack([y, 2 * y]), sens, mask, **kwargs)
        torch.testing.assert_close(batched[0], ref, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(batched[1], 2 * ref, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: daubechies_filter(0), "order must be"),
        (lambda: Wavelet2d((12, 16), levels=3), "divisible by 2"),
        (lambda: Wavelet2d((16, 16), levels=0), "levels must be"),
        (lambda: Wavelet2d((16, 16)).forward(torch.ones(8, 16)), "x must be a tensor"),
        (lambda: zero_filled_rss(torch.ones(3, 4, 4)), "kspace must be a complex"),
        (lambda: tv_sense(torch.ones(2, 4, 4) + 0j, torch.ones(2, 4, 4) + 0j, torch.ones(1, 4), lam=-1), "lam"),
        (lambda: tv_sense(torch.ones(2, 4, 4) + 0j, torch.ones(2, 4, 4) + 0j, torch.ones(1, 3)), "mask of shape"),
        (lambda: tv_sense(torch.ones(2, 4, 4) + 0j, torch.ones(3, 4, 4) + 0j, torch.ones(1, 4)), "sens must be"),
        (
            lambda: wavelet_sense(
                torch.ones(2, 4, 4) + 0j, torch.ones(2, 4, 4) + 0j, torch.ones(1, 4), num_iterations=-2
            ),
            "num_iterations",
        ),
        (lambda: tv_sense(torch.ones(2, 4, 4) + 0j, torch.ones(2, 4, 4) + 0j, torch.ones(1, 4), step_ratio=0), "step"),
    ],
    ids=["order", "divisible", "levels", "wavelet-shape", "zf-real", "lam", "mask", "sens", "iterations", "ratio"],
)
def test_errors(call, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call()
