"""Tests of the PyTorch paths of MD-TPE (``recvision.ops.md_tpe``): ``md_tpe_torch`` and ``md_tpe`` with the torch
backend against the loop reference ``naive_md_tpe``, which is itself checked against a brute-force Toeplitz sum and
with ``gradcheck`` in float64. The Triton kernels are tested in ``test_md_tpe_triton.py``.

Tolerances are relative RMS errors (:func:`recvision.ops.utils.assert_close`, ``atol=0``); both forms compute in
float32 (float64) and differ only by summation order.
"""

from __future__ import annotations

import math

import pytest
import torch

from recvision.ops.md_tpe import md_tpe, md_tpe_torch, naive_md_tpe
from recvision.ops.utils import assert_close

RATIO = {torch.float32: 5e-6, torch.float64: 1e-13}
# lambda per head: fast, medium, slow decay and no decay at all (the lambda = 1 edge)
LAMBDAS = (0.25, 0.9, 1 - 1 / 64, 1.0)
SHAPES = [(2, 7, 5, 8), (1, 1, 9, 4), (1, 6, 1, 4), (2, 4, 4, 8), (1, 3, 70, 4)]


def _log_decay(num_heads: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.tensor([math.log(LAMBDAS[h % len(LAMBDAS)]) for h in range(num_heads)], dtype=dtype)


def _brute_force(x: torch.Tensor, log_decay: torch.Tensor, causal: bool) -> torch.Tensor:
    """``sum_axis sum_s lambda^{|t-s|} x_s`` from explicit Toeplitz matrices (float64)."""
    B, H, W, C = x.shape
    nh = log_decay.shape[0]
    lam = log_decay.double().exp().repeat_interleave(C // nh)  # [C]

    def kernel(L: int) -> torch.Tensor:
        t = torch.arange(L, dtype=torch.float64)
        diff = t[:, None] - t[None, :]
        mask = (diff >= 0) if causal else torch.ones(L, L, dtype=torch.bool)
        return torch.where(mask[..., None], lam ** diff.abs()[..., None], torch.zeros(()).double())  # [L, L, C]

    xd = x.double()
    return torch.einsum("ijc,bjwc->biwc", kernel(H), xd) + torch.einsum("ijc,bhjc->bhic", kernel(W), xd)


def _grads(fn, x: torch.Tensor, g: torch.Tensor, causal: bool, dy: torch.Tensor):
    x = x.detach().clone().requires_grad_()
    g = g.detach().clone().requires_grad_()
    y = fn(x, g, causal)
    (y * dy).sum().backward()
    return y.detach(), x.grad, g.grad


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("shape", SHAPES)
def test_naive_matches_brute_force(shape, causal):
    x = torch.randn(*shape, dtype=torch.float64)
    g = _log_decay(shape[-1] // 2 if shape[-1] >= 8 else 2, torch.float64)
    assert_close("y", _brute_force(x, g, causal), naive_md_tpe(x, g, causal), 1e-14, atol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("shape", SHAPES)
def test_torch_matches_naive_fwd_bwd(shape, causal, dtype):
    nh = 4 if shape[-1] % 4 == 0 else 2
    x = torch.randn(*shape, dtype=dtype)
    g = _log_decay(nh)
    dy = torch.randn(*shape, dtype=dtype)
    ref = _grads(naive_md_tpe, x, g, causal, dy)
    for fn in (md_tpe_torch, lambda a, b, c: md_tpe(a, b, c, backend="torch")):
        out = _grads(fn, x, g, causal, dy)
        for name, r, o in zip(("y", "dx", "dlog_decay"), ref, out, strict=True):
            assert_close(name, r, o, RATIO[dtype], atol=0)


@pytest.mark.parametrize("chunk_size", [1, 3, 16])
def test_torch_chunk_sizes(chunk_size):
    x = torch.randn(2, 11, 37, 8, dtype=torch.float64)
    g = _log_decay(4, torch.float64)
    for causal in (False, True):
        assert_close("y", naive_md_tpe(x, g, causal), md_tpe_torch(x, g, causal, chunk_size), 1e-13, atol=0)


@pytest.mark.parametrize("causal", [False, True])
def test_gradcheck_naive(causal):
    x = torch.randn(1, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    # lambda = 1 itself is not gradchecked: the finite difference would step to log_decay > 0, which is rejected;
    # its gradient is covered by the parity tests (LAMBDAS ends with 1.0)
    g = torch.tensor([math.log(0.7), math.log(0.999)], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: naive_md_tpe(a, b, causal), (x, g))
    assert torch.autograd.gradcheck(lambda a, b: md_tpe_torch(a, b, causal, 2), (x, g))


def test_lambda_one_counts_every_token():
    """With lambda = 1 the bidirectional scan sums the whole line: y = row sum + column sum."""
    x = torch.randn(2, 5, 3, 4, dtype=torch.float64)
    g = torch.zeros(2, dtype=torch.float64)
    expected = x.sum(1, keepdim=True) + x.sum(2, keepdim=True)
    assert_close("y", expected.expand_as(x), md_tpe(x, g, backend="torch"), 1e-14, atol=0)
    causal = x.cumsum(1) + x.cumsum(2)
    assert_close("y causal", causal, md_tpe(x, g, causal=True, backend="torch"), 1e-14, atol=0)


def test_bfloat16_input_keeps_dtype():
    x = torch.randn(1, 4, 5, 8).bfloat16()
    y = md_tpe(x, _log_decay(2), backend="torch")
    assert y.dtype == torch.bfloat16
    assert_close("y", naive_md_tpe(x.float(), _log_decay(2)), y.float(), 1e-2, atol=0)


@pytest.mark.parametrize(
    ("x", "log_decay", "match"),
    [
        (torch.randn(4, 4, 8), torch.zeros(2), "x must"),
        (torch.randn(1, 4, 4, 8, dtype=torch.float64).long(), torch.zeros(2), "x must"),
        (torch.randn(1, 0, 4, 8), torch.zeros(2), "x must"),
        (torch.randn(1, 4, 4, 8), torch.zeros(2, 1), "log_decay must"),
        (torch.randn(1, 4, 4, 8), torch.zeros(3), "num_heads"),
        (torch.randn(1, 4, 4, 8), torch.tensor([0.1, -0.1]), "log_decay"),
        (torch.randn(1, 4, 4, 8), torch.tensor([-float("inf"), -0.1]), "log_decay"),
        (torch.randn(1, 4, 4, 8), torch.tensor([float("nan"), -0.1]), "log_decay"),
    ],
)
@pytest.mark.parametrize("fn", [naive_md_tpe, md_tpe_torch, md_tpe])
def test_bad_inputs(fn, x, log_decay, match):
    with pytest.raises(ValueError, match=match):
        fn(x, log_decay)


def test_bad_chunk_size():
    with pytest.raises(ValueError, match="chunk_size"):
        md_tpe_torch(torch.randn(1, 2, 2, 2), torch.zeros(1), chunk_size=0)
