"""Centred orthonormal FFT: unitary (round trip, Parseval), centring convention, real <-> complex conversion."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recon.ops.fft import fft2c, ifft2c, to_complex, to_real_pair


@pytest.mark.parametrize("shape", [(8, 8), (2, 3, 7, 10), (5, 9)], ids=["square", "batched-odd-even", "odd"])
def test_round_trip_and_parseval(shape: tuple[int, ...]) -> None:
    x = torch.randn(shape, dtype=torch.complex128)
    k = fft2c(x)
    torch.testing.assert_close(ifft2c(k), x, rtol=0, atol=1e-12)
    torch.testing.assert_close(fft2c(ifft2c(x)), x, rtol=0, atol=1e-12)
    # Parseval per 2-D slice: ||F x|| = ||x||, and inner products are preserved.
    torch.testing.assert_close(k.abs().square().sum((-2, -1)), x.abs().square().sum((-2, -1)), rtol=1e-12, atol=0)
    y = torch.randn(shape, dtype=torch.complex128)
    torch.testing.assert_close((fft2c(y).conj() * k).sum(), (y.conj() * x).sum(), rtol=1e-12, atol=1e-12)


def test_centring_matches_numpy_definition() -> None:
    x = torch.randn(6, 7, dtype=torch.complex128)
    expected = np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(x.numpy()), norm="ortho"))
    np.testing.assert_allclose(fft2c(x).numpy(), expected, atol=1e-12)
    # DC of an all-ones image sits at the centre index (H // 2, W // 2) with value sqrt(H W).
    k = fft2c(torch.ones(6, 7, dtype=torch.complex128))
    assert k[3, 3].real.item() == pytest.approx(np.sqrt(42))
    assert k.abs().sum().item() == pytest.approx(np.sqrt(42))


def test_complex64_kept() -> None:
    assert fft2c(torch.randn(4, 4, dtype=torch.complex64)).dtype == torch.complex64


def test_real_pair_round_trip() -> None:
    x = torch.randn(3, 4, 5, dtype=torch.complex64)
    pair = to_real_pair(x)
    assert pair.shape == (3, 4, 5, 2)
    torch.testing.assert_close(to_complex(pair), x)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: fft2c(torch.randn(4, 4)), "image must be a complex tensor"),
        (lambda: ifft2c(torch.randn(4, dtype=torch.complex64)), "kspace must have at least 2"),
        (lambda: to_complex(torch.randn(4, 3)), "trailing dimension of 2"),
        (lambda: to_real_pair(torch.randn(4, 2)), "expected a complex tensor"),
    ],
    ids=["fft-real", "ifft-1d", "to-complex", "to-real-pair"],
)
def test_errors(call, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call()
