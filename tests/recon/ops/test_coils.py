"""Coil operators and coil-map estimation (ACS and ESPIRiT) on simulated multi-coil data."""

from __future__ import annotations

import math

import pytest
import torch
from scipy.ndimage import binary_dilation, binary_erosion
from skimage.data import shepp_logan_phantom
from skimage.transform import resize

from recon.ops.coils import _espirit_operator, estimate_sens_maps, rss, sens_expand, sens_reduce
from recon.ops.fft import fft2c, ifft2c


def _grid(h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    y = torch.linspace(-1, 1, h, dtype=torch.float64)
    x = torch.linspace(-1, 1, w, dtype=torch.float64)
    return torch.meshgrid(y, x, indexing="ij")


def _smooth_maps(num_coils: int, h: int, w: int) -> torch.Tensor:
    """Birdcage-like maps: Gaussian magnitude around a ring of coils, smooth phase; sum |S|^2 = 1. [C, H, W]."""
    yy, xx = _grid(h, w)
    maps = []
    for c in range(num_coils):
        a = 2 * math.pi * c / num_coils
        mag = torch.exp(-((yy - 1.5 * math.sin(a)) ** 2 + (xx - 1.5 * math.cos(a)) ** 2) / (2 * 1.2**2))
        maps.append(mag * torch.exp(1j * (a + 0.8 * (xx * math.cos(a) + yy * math.sin(a)))))
    s = torch.stack(maps)
    return s / rss(s).unsqueeze(0)


def _phantom(n: int) -> torch.Tensor:
    """Shepp-Logan with a smooth complex phase, complex128 [n, n]."""
    img = torch.from_numpy(resize(shepp_logan_phantom(), (n, n), anti_aliasing=True))
    yy, xx = _grid(n, n)
    return img * torch.exp(1j * (0.5 * xx + 0.3 * yy**2))


def _aligned_error(est: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
    """Per-pixel ||est - e^{i phi} true|| after removing the best common (per-pixel) phase phi. [H, W]."""
    inner = (true.conj() * est).sum(dim=-3)
    phase = torch.where(inner.abs() > 0, inner / inner.abs().clamp_min(1e-30), 1.0)
    return rss(est - phase.unsqueeze(-3) * true)


@pytest.fixture(scope="module")
def simulated() -> dict[str, torch.Tensor]:
    n, coils = 64, 8
    true = _smooth_maps(coils, n, n)
    image = _phantom(n)
    g = torch.Generator().manual_seed(0)
    kspace = fft2c(true * image)
    kspace = kspace + 1e-4 * torch.complex(
        torch.randn(kspace.shape, generator=g, dtype=torch.float64),
        torch.randn(kspace.shape, generator=g, dtype=torch.float64),
    )
    inside = torch.from_numpy(binary_erosion(image.abs().numpy() > 0.1, iterations=2))
    return {"true": true, "image": image, "kspace": kspace, "inside": inside}


def test_reduce_expand_is_identity_for_normalised_maps() -> None:
    sens = torch.randn(2, 5, 6, 7, dtype=torch.complex128)
    sens = sens / rss(sens).unsqueeze(-3)
    x = torch.randn(2, 6, 7, dtype=torch.complex128)
    torch.testing.assert_close(sens_reduce(sens_expand(x, sens), sens), x, rtol=0, atol=1e-12)


def test_expand_and_reduce_definitions() -> None:
    sens = torch.randn(3, 4, 5, dtype=torch.complex128)
    x = torch.randn(4, 5, dtype=torch.complex128)
    k = sens_expand(x, sens)
    for c in range(3):
        torch.testing.assert_close(k[c], fft2c(sens[c] * x))
    expected = sum(sens[c].conj() * ifft2c(k[c]) for c in range(3))
    torch.testing.assert_close(sens_reduce(k, sens), expected)


def test_broadcast_maps_over_batch() -> None:
    sens = torch.randn(3, 4, 5, dtype=torch.complex64)
    x = torch.randn(2, 4, 5, dtype=torch.complex64)
    k = sens_expand(x, sens)
    assert k.shape == (2, 3, 4, 5)
    assert sens_reduce(k, sens).shape == (2, 4, 5)


def test_rss() -> None:
    x = torch.randn(2, 3, 4, 5, dtype=torch.complex128)
    torch.testing.assert_close(rss(x), x.abs().square().sum(1).sqrt())
    torch.testing.assert_close(rss(x.real, dim=0), x.real.square().sum(0).sqrt())
    z = torch.zeros(3, 2, 2, dtype=torch.complex128, requires_grad=True)
    out = rss(z)
    assert torch.equal(out, torch.zeros(2, 2, dtype=torch.float64))
    out.sum().backward()
    assert torch.isfinite(torch.view_as_real(z.grad)).all()


@pytest.mark.parametrize("method", ["acs", "espirit"])
def test_estimated_maps_recover_simulated_maps(simulated: dict[str, torch.Tensor], method: str) -> None:
    est = estimate_sens_maps(simulated["kspace"], 16, method)
    assert est.shape == simulated["true"].shape and est.dtype == simulated["kspace"].dtype
    inside = simulated["inside"]
    err = _aligned_error(est, simulated["true"])[inside]
    power = rss(est)[inside]
    torch.testing.assert_close(power, torch.ones_like(power), rtol=0, atol=1e-10)  # sum |S|^2 = 1 on the object
    if method == "espirit":
        assert err.mean() < 0.01 and err.max() < 0.06
    else:  # low-pass division: exact only where the object is locally smooth
        assert err.mean() < 0.05 and torch.quantile(err, 0.9) < 0.1


def test_espirit_crops_background_and_phase_options(simulated: dict[str, torch.Tensor]) -> None:
    kspace = simulated["kspace"]
    est = estimate_sens_maps(kspace, 16, "espirit")
    far = ~torch.from_numpy(binary_dilation(simulated["image"].abs().numpy() > 0, iterations=4))
    assert (rss(est)[far] == 0).float().mean() > 0.95  # no signal -> top eigenvalue < crop -> zero maps
    first = estimate_sens_maps(kspace, 16, "espirit", phase_reference="first")
    on = rss(first) > 0
    assert (first[0][on].imag.abs() < 1e-10).all() and (first[0][on].real >= 0).all()
    # same maps up to a per-pixel phase
    assert _aligned_error(first, est)[simulated["inside"]].max() < 1e-6


def test_only_the_centre_is_used(simulated: dict[str, torch.Tensor]) -> None:
    kspace = simulated["kspace"]
    width = kspace.shape[-1]
    keep = torch.zeros(width, dtype=torch.bool)
    keep[(width - 16 + 1) // 2 : (width - 16 + 1) // 2 + 16] = True
    keep[::4] = True
    under = torch.where(keep, kspace, 0)
    for method in ("acs", "espirit"):
        torch.testing.assert_close(
            estimate_sens_maps(under, 16, method), estimate_sens_maps(kspace, 16, method), rtol=0, atol=1e-10
        )


def test_batched_espirit_matches_per_slice(simulated: dict[str, torch.Tensor]) -> None:
    k = simulated["kspace"][..., ::2, ::2].to(torch.complex64)  # 32 x 32 (aliased, still a valid multi-coil set)
    batch = torch.stack([k, 2 * k.roll(3, dims=-1)])
    est = estimate_sens_maps(batch, 12, "espirit", kernel_size=5, acs_region="box")
    assert est.shape == batch.shape and est.dtype == torch.complex64
    for i in range(2):
        torch.testing.assert_close(est[i], estimate_sens_maps(batch[i], 12, "espirit", kernel_size=5, acs_region="box"))


def test_espirit_operator_interpolation_is_exact() -> None:
    """G(r) on the full grid (small grid + Fourier zero-padding) equals the direct per-kernel computation."""
    g = torch.Generator().manual_seed(3)
    kernels = torch.complex(torch.randn(4, 3, 5, 5, generator=g), torch.randn(4, 3, 5, 5, generator=g)).to(
        torch.complex128
    )
    for h, w in ((24, 30), (25, 17)):
        fast = _espirit_operator(kernels, h, w)
        padded = torch.zeros(4, 3, h, w, dtype=kernels.dtype)
        padded[..., (h - 5 + 1) // 2 : (h - 5 + 1) // 2 + 5, (w - 5 + 1) // 2 : (w - 5 + 1) // 2 + 5] = kernels
        u = ifft2c(padded) * math.sqrt(h * w)
        direct = torch.einsum("nchw,ndhw->hwcd", u, u.conj()) / 25
        torch.testing.assert_close(fast, direct, rtol=0, atol=1e-10)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: sens_expand(torch.randn(4, 4), torch.randn(2, 4, 4, dtype=torch.complex64)), "image must be"),
        (lambda: sens_expand(torch.randn(4, 4, dtype=torch.complex64), torch.randn(4, 4)), "sens must be"),
        (
            lambda: sens_expand(torch.randn(4, 5, dtype=torch.complex64), torch.randn(2, 4, 4, dtype=torch.complex64)),
            "image .* and sens .* must share H, W",
        ),
        (
            lambda: sens_reduce(
                torch.randn(3, 4, 4, dtype=torch.complex64), torch.randn(2, 4, 4, dtype=torch.complex64)
            ),
            "kspace and sens must share",
        ),
        (
            lambda: sens_expand(
                torch.randn(3, 4, 4, dtype=torch.complex64), torch.randn(2, 2, 4, 4, dtype=torch.complex64)
            ),
            "batch dimensions",
        ),
        (lambda: rss(torch.randn(3, 4), dim=2), "dim=2 is out of range"),
    ],
    ids=["image-real", "sens-real", "hw-mismatch", "coil-mismatch", "batch-mismatch", "rss-dim"],
)
def test_operator_errors(call, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.parametrize(
    ("args", "kwargs", "match"),
    [
        ((torch.randn(2, 8, 8), 4), {}, "kspace must be a complex"),
        ((torch.randn(2, 8, 8, dtype=torch.complex64), 0), {}, "num_low_frequencies must be in"),
        ((torch.randn(2, 8, 8, dtype=torch.complex64), 4.0), {}, "num_low_frequencies must be an int"),
        ((torch.randn(2, 8, 8, dtype=torch.complex64), 4, "bart"), {}, "method must be"),
        ((torch.randn(2, 8, 8, dtype=torch.complex64), 4), {"kernel": 3}, r"unknown option\(s\) \['kernel'\]"),
        ((torch.randn(2, 8, 8, dtype=torch.complex64), 4, "espirit"), {}, "smaller than kernel_size=6"),
        ((torch.randn(2, 8, 8, dtype=torch.complex64), 6, "espirit"), {"crop": 1.5}, "option crop"),
        ((torch.randn(2, 8, 8, dtype=torch.complex64), 6, "espirit"), {"threshold": -1}, "option threshold"),
        ((torch.randn(2, 8, 8, dtype=torch.complex64), 4), {"acs_region": "disc"}, "acs_region must be"),
        ((torch.randn(2, 8, 8, dtype=torch.complex64), 8, "espirit"), {"phase_reference": "x"}, "phase_reference"),
    ],
    ids=["real", "zero-acs", "float-acs", "method", "option", "tiny-calib", "crop", "threshold", "region", "phase"],
)
def test_estimate_errors(args: tuple, kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        estimate_sens_maps(*args, **kwargs)


def test_acs_options(simulated: dict[str, torch.Tensor]) -> None:
    kspace = simulated["kspace"]
    plain = estimate_sens_maps(kspace, 16, "acs")
    shrunk = estimate_sens_maps(kspace, 16, "acs", eps=0.05)
    assert (rss(shrunk) < 1).all() and (rss(shrunk) > 0.3)[simulated["inside"]].all()
    box = estimate_sens_maps(kspace, 16, "acs", acs_region="box")
    inside = simulated["inside"]
    assert _aligned_error(box, simulated["true"])[inside].mean() < 0.1  # coarser than lines along H
    assert not torch.allclose(box, plain)
