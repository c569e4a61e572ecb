"""Tests of cosine MD-LRPE (``recvision.ops.md_lrpe``): the relative-position property of ``q . k`` after the map,
shapes, row-major token order, extra tokens (phase 0), gradients and input errors."""

from __future__ import annotations

import math

import pytest
import torch

from recvision.ops.md_lrpe import md_lrpe_cosine, md_lrpe_phase, md_lrpe_theta_dim


def _scores(q: torch.Tensor, k: torch.Tensor, theta: torch.Tensor, grid: tuple[int, ...]) -> torch.Tensor:
    """``[B, H, T, T]`` dot products of the mapped queries and keys."""
    return torch.einsum("bshd,brhd->bhsr", md_lrpe_cosine(q, theta, grid), md_lrpe_cosine(k, theta, grid))


@pytest.mark.parametrize(("grid", "D"), [((5, 7), 8), ((4, 3, 5), 6), ((9,), 4), ((3, 4), 10)])
def test_scores_depend_only_on_relative_position(grid, D):
    """Put the same q at grid position p + o and the same k at r + o: q . k must not depend on the shift o."""
    H = 2
    T = math.prod(grid)
    theta = torch.randn(H, md_lrpe_theta_dim(D, len(grid)), dtype=torch.float64)
    q0 = torch.randn(1, 1, H, D, dtype=torch.float64)
    k0 = torch.randn(1, 1, H, D, dtype=torch.float64)
    q = q0.expand(1, T, H, D).contiguous()
    k = k0.expand(1, T, H, D).contiguous()
    scores = _scores(q, k, theta, grid)[0]  # [H, T, T]; all tokens share q0 and k0, only positions differ
    index = torch.stack(torch.meshgrid(*[torch.arange(n) for n in grid], indexing="ij"), -1).reshape(T, -1)
    rel = index[:, None, :] - index[None, :, :]  # [T, T, m]
    reference: dict[tuple[int, ...], torch.Tensor] = {}
    for s in range(T):
        for r in range(T):
            key = tuple(rel[s, r].tolist())
            if key in reference:
                torch.testing.assert_close(scores[:, s, r], reference[key], rtol=1e-12, atol=1e-12)
            else:
                reference[key] = scores[:, s, r]
    # and the pairs really differ across offsets (the map is not trivially position-free)
    assert len(reference) > 1
    values = torch.stack(list(reference.values()))
    assert values.std(0).max() > 1e-3


def test_explicit_shift():
    """Same q at (0, 2) and (1, 4), same k at (2, 1) and (3, 3): both pairs have offset (-2, 1), same score."""
    grid, H, D = (6, 6), 3, 8
    theta = torch.randn(H, md_lrpe_theta_dim(D, 2), dtype=torch.float64)
    q = torch.randn(1, 36, H, D, dtype=torch.float64)
    k = torch.randn(1, 36, H, D, dtype=torch.float64)
    q[:, 1 * 6 + 4] = q[:, 0 * 6 + 2]
    k[:, 3 * 6 + 3] = k[:, 2 * 6 + 1]
    s = _scores(q, k, theta, grid)[0]
    torch.testing.assert_close(s[:, 0 * 6 + 2, 2 * 6 + 1], s[:, 1 * 6 + 4, 3 * 6 + 3], rtol=1e-12, atol=1e-12)
    # a different offset gives a different score
    assert not torch.allclose(s[:, 0 * 6 + 2, 2 * 6 + 1], s[:, 1 * 6 + 4, 2 * 6 + 1])


def test_shapes_order_and_extra_tokens():
    B, H, D, grid = 2, 3, 6, (2, 3)
    theta = torch.randn(H, md_lrpe_theta_dim(D, 2))
    x = torch.randn(B, 6 + 2, H, D)
    y = md_lrpe_cosine(x, theta, grid, num_extra_tokens=2)
    assert y.shape == (B, 8, H, 2 * D) and y.dtype == x.dtype
    # extra tokens at the end: phase 0 -> [x, 0]
    torch.testing.assert_close(y[:, 6:, :, :D], x[:, 6:])
    torch.testing.assert_close(y[:, 6:, :, D:], torch.zeros_like(x[:, 6:]))
    # token 0 is grid index (0, 0): phase 0 as well
    torch.testing.assert_close(y[:, 0, :, :D], x[:, 0])
    # row-major: token 4 is (1, 1) -> phi = concat(1 * theta, 1 * theta)[:D]; token 3 is (1, 0)
    phi = md_lrpe_phase(theta, grid, D)
    E = theta.shape[1]
    torch.testing.assert_close(phi[4], torch.cat([theta, theta], -1)[:, :D])
    torch.testing.assert_close(phi[3], torch.cat([theta, torch.zeros_like(theta)], -1)[:, :D])
    assert E == 4


def test_small_theta_is_zero_padded():
    """m * E < D: the last features get phase 0 (left unrotated: cos 1, sin 0)."""
    theta = torch.randn(1, 2)
    phi = md_lrpe_phase(theta, (3, 3), head_dim=7)
    assert phi.shape == (9, 1, 7)
    assert torch.all(phi[..., 4:] == 0)


def test_grads_finite_and_dtype():
    x = torch.randn(2, 13, 2, 8, requires_grad=True)
    theta = torch.randn(2, 4, requires_grad=True)
    y = md_lrpe_cosine(x, theta, (3, 4), num_extra_tokens=1)
    (y * torch.randn_like(y)).sum().backward()
    assert torch.isfinite(x.grad).all() and torch.isfinite(theta.grad).all()
    assert theta.grad.abs().sum() > 0
    xh = x.detach().bfloat16()
    assert md_lrpe_cosine(xh, theta.detach(), (3, 4), 1).dtype == torch.bfloat16


def test_gradcheck():
    x = torch.randn(1, 6, 1, 3, dtype=torch.float64, requires_grad=True)
    theta = torch.randn(1, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: md_lrpe_cosine(a, b, (2, 3)), (x, theta))


@pytest.mark.parametrize(
    ("x", "theta", "grid", "extra", "match"),
    [
        (torch.randn(6, 2, 4), torch.randn(2, 2), (2, 3), 0, "x must"),
        (torch.ones(1, 6, 2, 4, dtype=torch.long), torch.randn(2, 2), (2, 3), 0, "x must"),
        (torch.randn(1, 7, 2, 4), torch.randn(2, 2), (2, 3), 0, "T = 7"),
        (torch.randn(1, 6, 2, 4), torch.randn(3, 2), (2, 3), 0, "theta must"),
        (torch.randn(1, 6, 2, 4), torch.randn(2), (2, 3), 0, "theta must"),
        (torch.randn(1, 6, 2, 4), torch.randn(2, 2), (), 0, "grid must"),
        (torch.randn(1, 6, 2, 4), torch.randn(2, 2), (2, 0), 0, "grid entries"),
        (torch.randn(1, 6, 2, 4), torch.randn(2, 2), (2.0, 3), 0, "grid entries"),
        (torch.randn(1, 6, 2, 4), torch.randn(2, 2), (2, 3), -1, "num_extra_tokens"),
    ],
)
def test_bad_inputs(x, theta, grid, extra, match):
    with pytest.raises(ValueError, match=match):
        md_lrpe_cosine(x, theta, grid, num_extra_tokens=extra)
