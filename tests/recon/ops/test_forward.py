"""Forward model A = M F S: adjointness, masking without -0.0, normal operator, conjugate gradients."""

from __future__ import annotations

import pytest
import torch

from recon.ops.forward import (
    conjugate_gradient,
    mask_kspace,
    sense_adjoint,
    sense_forward,
    sense_normal,
)


def _line_mask(width: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    mask = (torch.rand(width, generator=g) < 0.4).float()
    mask[width // 2 - 1 : width // 2 + 2] = 1.0
    return mask[None]  # [1, W], fastMRI line mask along the last dimension


@pytest.mark.parametrize("batch", [(), (2,)], ids=["single", "batched"])
def test_dot_product(batch: tuple[int, ...]) -> None:
    """<A x, y> = <x, A^H y> for random complex x, y."""
    g = torch.Generator().manual_seed(1)
    sens = torch.randn(*batch, 4, 6, 9, dtype=torch.complex128, generator=g)
    x = torch.randn(*batch, 6, 9, dtype=torch.complex128, generator=g)
    y = torch.randn(*batch, 4, 6, 9, dtype=torch.complex128, generator=g)
    mask = _line_mask(9)
    lhs = (sense_forward(x, sens, mask).conj() * y).sum()
    rhs = (x.conj() * sense_adjoint(y, sens, mask)).sum()
    torch.testing.assert_close(lhs, rhs, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(sense_normal(x, sens, mask), sense_adjoint(sense_forward(x, sens, mask), sens, mask))


def test_masking_is_exact_and_has_no_negative_zero() -> None:
    k = -torch.ones(3, 4, 5, dtype=torch.complex64)  # multiplying by a 0/1 mask would leave -0.0 here
    mask = torch.tensor([[1.0, 0.0, 1.0, 0.0, 0.0]])
    out = mask_kspace(k, mask)
    off = out[..., mask[0] == 0]
    assert torch.equal(off, torch.zeros_like(off))
    assert not torch.signbit(off.real).any() and not torch.signbit(off.imag).any()
    assert torch.equal(out[..., mask[0] == 1], k[..., mask[0] == 1])
    assert torch.equal(mask_kspace(k, mask.bool()), out)
    assert torch.equal(
        sense_forward(torch.ones(4, 5, dtype=torch.complex64), torch.ones(3, 4, 5) + 0j, mask)[..., 1],
        torch.zeros(3, 4, dtype=torch.complex64),
    )


def test_unmasked_forward_is_expand() -> None:
    sens = torch.randn(2, 4, 4, dtype=torch.complex128)
    x = torch.randn(4, 4, dtype=torch.complex128)
    torch.testing.assert_close(sense_forward(x, sens, torch.ones(1, 4)), sense_forward(x, sens))


def test_conjugate_gradient_matches_direct_solve() -> None:
    g = torch.Generator().manual_seed(2)
    n = 6
    b = torch.randn(n, n, dtype=torch.complex128, generator=g)
    mat = b.conj().T @ b + 0.5 * torch.eye(n, dtype=torch.complex128)  # Hermitian positive definite
    rhs = torch.randn(3, 1, n, dtype=torch.complex128, generator=g)  # 3 independent systems, unknowns [1, n]

    def op(v: torch.Tensor) -> torch.Tensor:
        return (mat @ v.unsqueeze(-1)).squeeze(-1)

    expected = torch.linalg.solve(mat, rhs.squeeze(1).T).T.unsqueeze(1)
    torch.testing.assert_close(conjugate_gradient(op, rhs, num_iterations=3 * n), expected, rtol=0, atol=1e-9)
    x0 = torch.randn(3, 1, n, dtype=torch.complex128, generator=g)
    torch.testing.assert_close(conjugate_gradient(op, rhs, x0=x0, num_iterations=3 * n), expected, rtol=0, atol=1e-9)
    assert torch.equal(conjugate_gradient(op, rhs, x0=x0, num_iterations=0), x0)
    # an exactly solved system (zero residual) stays finite
    assert torch.equal(conjugate_gradient(op, torch.zeros_like(rhs), num_iterations=5), torch.zeros_like(rhs))


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: mask_kspace(torch.randn(2, 4, 5, dtype=torch.complex64), torch.ones(1, 4)), "mask of shape"),
        (lambda: mask_kspace(torch.randn(2, 4, 5, dtype=torch.complex64), torch.ones(3, 1, 1, 5)), "mask of shape"),
        (lambda: mask_kspace(torch.randn(2, 4, 5, dtype=torch.complex64), torch.ones(5) + 0j), "mask must be real"),
        (lambda: mask_kspace(torch.randn(2, 4, 5), torch.ones(5)), "kspace must be a complex"),
        (lambda: sense_forward(torch.randn(4, 5, dtype=torch.complex64), torch.randn(2, 4, 5)), "sens must be"),
        (lambda: conjugate_gradient(lambda v: v, torch.ones(2, 2), num_iterations=-1), "num_iterations"),
        (lambda: conjugate_gradient(lambda v: v, torch.ones(2, 2), x0=torch.ones(3, 2)), "x0 of shape"),
    ],
    ids=["mask-width", "mask-batch", "mask-complex", "kspace-real", "sens-real", "cg-iterations", "cg-x0"],
)
def test_errors(call, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call()
