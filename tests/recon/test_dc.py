"""Data-consistency layers: exactness, agreement with direct solves and autograd, finite gradients, errors."""

from __future__ import annotations

import pytest
import torch

from recon.layers import ConjugateGradientDC, HardDataConsistency, LogLikelihoodGradient, SoftDataConsistency
from recon.ops.coils import rss
from recon.ops.forward import log_likelihood_gradient, sense_adjoint, sense_forward


def _problem(h: int = 5, w: int = 6, coils: int = 3, batch: tuple[int, ...] = (), seed: int = 0):
    """Random complex128 maps (RSS-normalised), image, measured k-space and a [1, W] line mask."""
    g = torch.Generator().manual_seed(seed)
    sens = torch.randn(*batch, coils, h, w, dtype=torch.complex128, generator=g)
    sens = sens / rss(sens).unsqueeze(-3)
    image = torch.randn(*batch, h, w, dtype=torch.complex128, generator=g)
    mask = torch.zeros(1, w)
    mask[0, ::2] = 1.0
    noise = torch.randn(*batch, coils, h, w, dtype=torch.complex128, generator=g)
    y = (
        sense_forward(image, sens, mask)
        + 0.1 * sense_forward(torch.zeros_like(image), sens, mask)
        + torch.where(mask.bool(), 0.05 * noise, 0)
    )
    return sens, image, y, mask


def test_hard_dc_keeps_sampled_kspace_exactly() -> None:
    _, _, y, mask = _problem(batch=(2,))
    k = torch.randn_like(y)
    out = HardDataConsistency()(k, y, mask)
    sampled = mask.bool().expand_as(y)
    assert torch.equal(out[sampled], y[sampled])
    assert torch.equal(out[~sampled], k[~sampled])
    nu = 3.0
    noisy = HardDataConsistency(noise_level=nu)(k, y, mask)
    torch.testing.assert_close(noisy[sampled], (k[sampled] + nu * y[sampled]) / (1 + nu))
    assert torch.equal(noisy[~sampled], k[~sampled])


def test_soft_dc() -> None:
    _, _, y, mask = _problem()
    k = torch.randn_like(y)
    layer = SoftDataConsistency().double()
    sampled = mask.bool().expand_as(y)
    out = layer(k, y, mask)
    torch.testing.assert_close(out[sampled], y[sampled], rtol=0, atol=1e-14)  # lambda = 1 -> replacement
    assert torch.equal(out[~sampled], k[~sampled])
    with torch.no_grad():
        layer.dc_weight.fill_(0.25)
    torch.testing.assert_close(layer(k, y, mask), torch.where(sampled, k - 0.25 * (k - y), k))
    assert isinstance(layer.dc_weight, torch.nn.Parameter)
    assert not isinstance(SoftDataConsistency(learnable=False).dc_weight, torch.nn.Parameter)


def test_soft_dc_gradcheck() -> None:
    _, _, y, mask = _problem(h=3, w=4, coils=2)
    layer = SoftDataConsistency(init_weight=0.7).double()
    k = torch.randn_like(y).requires_grad_()
    weight = layer.dc_weight

    def fn(kk: torch.Tensor, ww: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            layer.dc_weight.copy_(ww.detach())
        return kk - ww * torch.where(mask.bool(), kk - y, 0)

    assert torch.autograd.gradcheck(lambda kk: layer(kk, y, mask), (k,))
    assert torch.autograd.gradcheck(fn, (k, weight.detach().clone().requires_grad_()))


@pytest.mark.parametrize("sigma", [1.0, 0.3])
def test_log_likelihood_gradient_matches_autograd(sigma: float) -> None:
    sens, _, y, mask = _problem(batch=(2,))
    eta = torch.randn(2, 5, 6, dtype=torch.complex128, requires_grad=True)
    loss = 0.5 * (sense_forward(eta, sens, mask) - y).abs().square().sum() / sigma
    (expected,) = torch.autograd.grad(loss, eta)
    layer = LogLikelihoodGradient(sigma=sigma).double()
    torch.testing.assert_close(layer(eta.detach(), y, sens, mask), expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(log_likelihood_gradient(eta.detach(), y, sens, mask, sigma), expected)
    # the explicit formula (1/sigma) sum_c S_c^H F^-1 M (F S_c eta - y_c)
    torch.testing.assert_close(
        layer(eta.detach(), y, sens, mask), sense_adjoint(sense_forward(eta.detach(), sens, mask) - y, sens) / sigma
    )


def test_log_likelihood_gradient_gradcheck() -> None:
    sens, _, y, mask = _problem(h=3, w=4, coils=2)
    layer = LogLikelihoodGradient(sigma=2.0, learnable=True).double()
    eta = torch.randn(3, 4, dtype=torch.complex128, requires_grad=True)
    assert torch.autograd.gradcheck(lambda e: layer(e, y, sens, mask), (eta,))
    layer(eta, y, sens, mask).abs().sum().backward()
    assert torch.isfinite(layer.log_sigma.grad)


def _explicit_matrix(sens: torch.Tensor, mask: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """A = M F S as an explicit [C*H*W, H*W] matrix."""
    basis = torch.eye(h * w, dtype=torch.complex128).reshape(h * w, h, w)
    return sense_forward(basis, sens, mask).reshape(h * w, -1).T


def test_cg_dc_matches_direct_solve() -> None:
    h, w = 4, 5
    sens, _, y, mask = _problem(h=h, w=w, coils=3, batch=(2,))
    z = torch.randn(2, h, w, dtype=torch.complex128)
    layer = ConjugateGradientDC(mu=0.05, num_iterations=3 * h * w).double()
    out = layer(z, y, sens, mask)
    mu = layer.mu.item()
    for i in range(2):
        a = _explicit_matrix(sens[i], mask, h, w)
        lhs = a.conj().T @ a + mu * torch.eye(h * w, dtype=torch.complex128)
        rhs = a.conj().T @ y[i].reshape(-1) + mu * z[i].reshape(-1)
        expected = torch.linalg.solve(lhs, rhs).reshape(h, w)
        torch.testing.assert_close(out[i], expected, rtol=0, atol=1e-8)


def test_cg_dc_gradcheck_and_finite_gradients() -> None:
    sens, _, y, mask = _problem(h=3, w=4, coils=2)
    layer = ConjugateGradientDC(mu=0.5, num_iterations=4).double()
    z = torch.randn(3, 4, dtype=torch.complex128, requires_grad=True)
    yy = y.clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda zz, k: layer(zz, k, sens, mask), (z, yy))

    log_mu = layer.log_mu.detach().clone().requires_grad_()

    def as_fn_of_mu(lm: torch.Tensor) -> torch.Tensor:
        module = ConjugateGradientDC(num_iterations=4, learnable=False).double()
        module.log_mu = lm  # replace the buffer by a differentiable tensor
        return module(z.detach(), y, sens, mask)

    assert torch.autograd.gradcheck(as_fn_of_mu, (log_mu,))
    out = layer(z, y, sens, mask)
    out.abs().square().sum().backward()
    assert torch.isfinite(layer.log_mu.grad) and layer.log_mu.grad != 0
    assert torch.isfinite(torch.view_as_real(z.grad)).all()


def test_dc_layers_run_in_complex64() -> None:
    sens, image, y, mask = (t.to(torch.complex64) if t.is_complex() else t for t in _problem(batch=(2,)))
    assert ConjugateGradientDC()(image, y, sens, mask).dtype == torch.complex64
    assert LogLikelihoodGradient()(image, y, sens, mask).dtype == torch.complex64
    assert SoftDataConsistency()(y, y, mask).dtype == torch.complex64
    assert "num_iterations=10" in repr(ConjugateGradientDC())


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (
            lambda: HardDataConsistency()(torch.zeros(2, 3, 4) + 0j, torch.zeros(2, 3, 5) + 0j, torch.ones(1, 4)),
            "kspace .* and ref_kspace .* must have the same shape",
        ),
        (
            lambda: HardDataConsistency()(torch.zeros(2, 3, 4), torch.zeros(2, 3, 4), torch.ones(1, 4)),
            "kspace must be a complex",
        ),
        (
            lambda: SoftDataConsistency()(torch.zeros(2, 3, 4) + 0j, torch.zeros(2, 3, 4) + 0j, torch.ones(1, 5)),
            "mask of shape",
        ),
        (lambda: HardDataConsistency(noise_level=0.0), "noise_level must be positive"),
        (lambda: ConjugateGradientDC(mu=-1.0), "mu must be positive"),
        (lambda: ConjugateGradientDC(num_iterations=2.5), "num_iterations"),
        (lambda: LogLikelihoodGradient(sigma=0.0), "sigma must be positive"),
        (
            lambda: ConjugateGradientDC()(
                torch.zeros(3, 4) + 0j, torch.zeros(2, 3, 4) + 0j, torch.ones(2, 3, 4) + 0j, torch.ones(5)
            ),
            "mask of shape",
        ),
    ],
    ids=["shape", "real", "mask", "noise", "mu", "iterations", "sigma", "cg-mask"],
)
def test_errors(call, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call()


def test_shape_mismatch_errors_name_the_argument() -> None:
    sens, image, y, mask = _problem(batch=(2,))
    with pytest.raises(ValueError, match="kspace of shape"):
        LogLikelihoodGradient()(image, y[..., :4], sens, mask)
    with pytest.raises(ValueError, match="kspace of shape"):
        LogLikelihoodGradient()(image[0], y, sens[0], mask)
    with pytest.raises(ValueError, match="z of shape"):
        ConjugateGradientDC()(image[0], y, sens, mask)
    with pytest.raises(ValueError, match="z must be a complex"):
        ConjugateGradientDC()(image.real, y, sens, mask)
