"""Tests of the PyTorch paths of the additive-recurrence ops (``recvision.ops.additive``, LightNet).

Every causal form is checked against :func:`naive_recurrent_additive` computed in float64 (the step-by-step
running-max reference) on the output and on the gradients of ``q, k, v, g`` driven by a random upstream gradient.
The non-causal form is checked against a direct softmax-weighted formula. The Triton kernels
(``backend="triton"``) are tested in ``test_additive_triton.py``.

Tolerances are relative RMS errors (:func:`recvision.ops.utils.assert_close`, ``atol=0`` except for a ``dg`` that
is exactly 0 at T = 1). Measured largest errors against the float64 reference: 1.4e-6 (o, dq, dk, dv; with
``|g|`` up to 50) and 1.1e-5 (dg, which passes through ``logcumsumexp``'s backward) in float32, 1e-14 in float64;
the bounds leave a margin of 10 to 30.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from recvision.ops.additive import (
    chunk_additive,
    chunk_additive_torch,
    global_additive,
    global_additive_readout,
    global_additive_state,
    naive_recurrent_additive,
)
from recvision.ops.utils import assert_close

AdditiveFn = Callable[..., tuple[torch.Tensor, None]]

# relative RMS error bounds against the float64 reference: (o, dq, dk, dv) and dg
RATIO = {torch.float32: (2e-5, 2e-4), torch.float64: (1e-13, 1e-13)}
DG_ATOL = {torch.float32: 1e-5, torch.float64: 1e-12}
NAMES = ("o", "dq", "dk", "dv", "dg")


def _chunked(fn: AdditiveFn, chunk_size: int, **kwargs: object) -> AdditiveFn:
    def call(*args: object, **kw: object) -> tuple[torch.Tensor, None]:
        return fn(*args, chunk_size=chunk_size, **kwargs, **kw)

    return call


def _inputs(
    B: int, T: int, H: int, K: int, V: int, g_scale: float = 3.0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """float64 ``q, k [B, T, H, K]``, ``v [B, T, H, V]`` and log-weights ``g`` with std ``g_scale``."""
    q = torch.randn(B, T, H, K, dtype=torch.float64)
    k = torch.randn(B, T, H, K, dtype=torch.float64)
    v = torch.randn(B, T, H, V, dtype=torch.float64)
    g = g_scale * torch.randn(B, T, H, K, dtype=torch.float64)
    return q, k, v, g


def _run(
    fn: AdditiveFn, inputs: tuple[torch.Tensor, ...], do: torch.Tensor, dtype: torch.dtype, **kwargs: object
) -> list[torch.Tensor | None]:
    """Forward in ``dtype`` and backward of ``(o * do).sum()``; returns ``[o, dq, dk, dv, dg]`` (float64 copies)."""
    q, k, v, g = (None if x is None else x.detach().to(dtype).requires_grad_(True) for x in inputs)
    o, state = fn(q, k, v, g, **kwargs)
    assert state is None
    assert o.dtype == dtype
    (o * do.to(dtype)).sum().backward()
    return [x.detach().double() if x is not None else None for x in (o, q.grad, None if k is None else k.grad)] + [
        v.grad.double(),
        g.grad.double(),
    ]


def _check(reference: list, result: list, dtype: torch.dtype) -> None:
    ratio, ratio_g = RATIO[dtype]
    for name, ref, got in zip(NAMES, reference, result, strict=True):
        if ref is None:
            assert got is None, name
            continue
        if name == "dg":
            # with T = 1 the true dg is 0 (a single token has softmax weight 1): judge it by an absolute bound
            assert_close(name, ref, got, ratio_g, atol=DG_ATOL[dtype])
        else:
            assert_close(name, ref, got, ratio, atol=0.0)


FORMS = [
    pytest.param(_chunked(chunk_additive_torch, 16), id="chunk_torch-C16"),
    pytest.param(_chunked(chunk_additive_torch, 64), id="chunk_torch-C64"),
    pytest.param(_chunked(chunk_additive, 16, backend="torch"), id="chunk-torch-C16"),
    pytest.param(_chunked(chunk_additive, 64, backend="torch"), id="chunk-torch-C64"),
    pytest.param(naive_recurrent_additive, id="naive_recurrent"),
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["fp32", "fp64"])
@pytest.mark.parametrize("T", [1, 17, 64, 200])
@pytest.mark.parametrize("fn", FORMS)
def test_form_matches_naive_recurrent(fn: AdditiveFn, T: int, dtype: torch.dtype) -> None:
    B, H, K, V = 2, 3, 16, 12
    inputs = _inputs(B, T, H, K, V)
    do = torch.randn(B, T, H, V, dtype=torch.float64)
    reference = _run(naive_recurrent_additive, inputs, do, torch.float64)
    _check(reference, _run(fn, inputs, do, dtype), dtype)


@pytest.mark.parametrize("fn", FORMS)
def test_key_none_is_all_ones(fn: AdditiveFn) -> None:
    """``k=None`` (LightNet's form: the key is its own log-weight) equals an explicit all-ones key."""
    B, T, H, K, V = 2, 37, 2, 8, 6
    q, _, v, g = _inputs(B, T, H, K, V)
    do = torch.randn(B, T, H, V, dtype=torch.float64)
    reference = _run(naive_recurrent_additive, (q, torch.ones_like(q), v, g), do, torch.float64)
    result = _run(fn, (q, None, v, g), do, torch.float32)
    assert result[2] is None
    reference[2] = None
    _check(reference, result, torch.float32)


@pytest.mark.parametrize("fn", FORMS)
@pytest.mark.parametrize("pattern", ["uniform", "plus50", "minus50", "alternating", "ramp"])
def test_large_log_weights_are_stable(fn: AdditiveFn, pattern: str) -> None:
    """float32 with ``g`` in [-50, 50]: ``exp(g)`` alone would overflow (or underflow to 0) in float32."""
    B, T, H, K, V = 1, 150, 2, 8, 6
    q, k, v, _ = _inputs(B, T, H, K, V)
    shape = (B, T, H, K)
    if pattern == "uniform":
        g = torch.rand(shape, dtype=torch.float64) * 100 - 50
    elif pattern == "plus50":
        g = torch.full(shape, 50.0, dtype=torch.float64) + 0.1 * torch.randn(shape, dtype=torch.float64)
    elif pattern == "minus50":
        g = torch.full(shape, -50.0, dtype=torch.float64) + 0.1 * torch.randn(shape, dtype=torch.float64)
    elif pattern == "alternating":
        g = 50.0 * (1 - 2 * (torch.arange(T) % 2)).to(torch.float64).view(1, T, 1, 1).expand(shape).clone()
    else:  # a steady climb from -50 to 50: every new token dominates the prefix
        g = torch.linspace(-50, 50, T, dtype=torch.float64).view(1, T, 1, 1).expand(shape).clone()
    do = torch.randn(B, T, H, V, dtype=torch.float64)
    reference = _run(naive_recurrent_additive, (q, k, v, g), do, torch.float64)
    result = _run(fn, (q, k, v, g), do, torch.float32)
    for name, x in zip(NAMES, result, strict=True):
        assert torch.isfinite(x).all(), name
    _check(reference, result, torch.float32)


def test_shift_of_g_over_time_does_not_change_the_output() -> None:
    """Adding a per-channel constant to ``g`` (over all t) cancels between ``s_t`` and ``Δ_t``."""
    q, k, v, g = _inputs(2, 30, 2, 8, 6)
    shift = 40.0 * torch.randn(2, 1, 2, 8, dtype=torch.float64)
    o, _ = chunk_additive_torch(q, k, v, g, chunk_size=8)
    o_shift, _ = chunk_additive_torch(q, k, v, g + shift, chunk_size=8)
    assert_close("o", o, o_shift, 1e-12, atol=0.0)


def test_causality() -> None:
    """Changing tokens after ``t0`` leaves ``o[:, :t0 + 1]`` unchanged."""
    q, k, v, g = _inputs(1, 40, 2, 8, 6)
    t0 = 21
    o, _ = chunk_additive(q, k, v, g, chunk_size=16, backend="torch")
    k2, v2, g2 = k.clone(), v.clone(), g.clone()
    k2[:, t0 + 1 :] += 1.0
    v2[:, t0 + 1 :] -= 2.0
    g2[:, t0 + 1 :] += 5.0
    o2, _ = chunk_additive(q, k2, v2, g2, chunk_size=16, backend="torch")
    torch.testing.assert_close(o[:, : t0 + 1], o2[:, : t0 + 1], rtol=1e-12, atol=1e-12)
    assert not torch.allclose(o[:, t0 + 1 :], o2[:, t0 + 1 :])


def test_scale_multiplies_q() -> None:
    q, k, v, g = _inputs(1, 20, 2, 8, 6)
    o, _ = chunk_additive(q, k, v, g, scale=0.37, chunk_size=8, backend="torch")
    ref, _ = naive_recurrent_additive(0.37 * q, k, v, g)
    assert_close("o", ref, o, 1e-12, atol=0.0)
    ref_rec, _ = naive_recurrent_additive(q, k, v, g, scale=0.37)
    assert_close("o", ref, ref_rec, 1e-13, atol=0.0)


def test_half_precision_inputs_return_their_dtype() -> None:
    q, k, v, g = (x.to(torch.bfloat16) for x in _inputs(1, 20, 2, 8, 6))
    o, _ = chunk_additive(q, k, v, g, chunk_size=8, backend="torch")
    assert o.dtype == torch.bfloat16
    ref, _ = naive_recurrent_additive(q.double(), k.double(), v.double(), g.double())
    assert_close("o", ref, o, 1e-2)


# ----------------------------------------------------------------------------------------------------------------
# non-causal (global) form


def _direct_global(q, k, v, g):
    """``o_t = sum_c q_{t,c} sum_s w_{s,c} k_{s,c} v_s`` with ``w = exp(g) / sum_s exp(g)`` written out (float64)."""
    w = torch.exp(g) / torch.exp(g).sum(dim=1, keepdim=True)
    kk = torch.ones_like(q) if k is None else k
    return torch.einsum("bthc,bshc,bshc,bshv->bthv", q, w, kk, v)


@pytest.mark.parametrize("with_k", [True, False], ids=["k", "k-None"])
@pytest.mark.parametrize(
    "fn",
    [
        pytest.param(global_additive, id="global"),
        pytest.param(lambda *a, **kw: naive_recurrent_additive(*a, causal=False, **kw), id="naive_recurrent"),
        pytest.param(lambda *a, **kw: chunk_additive_torch(*a, causal=False, **kw), id="chunk_torch"),
        pytest.param(lambda *a, **kw: chunk_additive(*a, causal=False, backend="torch", **kw), id="chunk"),
    ],
)
def test_non_causal_matches_direct_softmax_formula(fn: AdditiveFn, with_k: bool) -> None:
    B, T, H, K, V = 2, 33, 2, 8, 6
    q, k, v, g = _inputs(B, T, H, K, V, g_scale=2.0)
    k = k if with_k else None
    leaves = [x.clone().requires_grad_(True) if x is not None else None for x in (q, k, v, g)]
    ref_leaves = [x.clone().requires_grad_(True) if x is not None else None for x in (q, k, v, g)]
    do = torch.randn(B, T, H, V, dtype=torch.float64)
    o, state = fn(*leaves, scale=0.5)
    assert state is None
    ref = _direct_global(0.5 * ref_leaves[0], *ref_leaves[1:])
    (o * do).sum().backward()
    (ref * do).sum().backward()
    assert_close("o", ref, o, 1e-13, atol=0.0)
    for name, a, b in zip(("dq", "dk", "dv", "dg"), ref_leaves, leaves, strict=True):
        if a is None:
            continue
        assert_close(name, a.grad, b.grad, 1e-12, atol=0.0)


def test_non_causal_last_token_equals_causal_and_is_order_independent() -> None:
    q, k, v, g = _inputs(1, 25, 2, 8, 6)
    o_glob, _ = global_additive(q, k, v, g)
    o_causal, _ = naive_recurrent_additive(q, k, v, g)
    assert_close("o[T-1]", o_causal[:, -1], o_glob[:, -1], 1e-13, atol=0.0)
    perm = torch.randperm(25)
    # permuting the tokens that build the state changes nothing for a fixed query
    o_perm, _ = global_additive(q, k[:, perm], v[:, perm], g[:, perm])
    assert_close("o", o_glob, o_perm, 1e-13, atol=0.0)


def test_non_causal_without_autograd_is_bitwise_and_leaves_inputs_alone() -> None:
    # without autograd global_additive multiplies the key into its softmax in place; the inputs must not change
    q, k, v, g = (x.float() for x in _inputs(2, 33, 3, 8, 6))
    copies = [x.clone() for x in (q, k, v, g)]
    ref, _ = global_additive(q, k, v, g, scale=0.3)
    with torch.no_grad():
        o, _ = global_additive(q, k, v, g, scale=0.3)
        w = torch.softmax(g, dim=1) * k
        split = global_additive_readout(q * 0.3, global_additive_state(w, v, torch.float32))
    assert torch.equal(o, ref) and torch.equal(split, ref)
    assert all(torch.equal(a, b) for a, b in zip((q, k, v, g), copies, strict=True))


def test_non_causal_large_log_weights_float32() -> None:
    q, k, v, _ = _inputs(1, 64, 2, 8, 6)
    g = torch.rand(1, 64, 2, 8, dtype=torch.float64) * 100 - 50
    o, _ = global_additive(q.float(), k.float(), v.float(), g.float())
    ref, _ = global_additive(q, k, v, g)
    assert_close("o", ref, o, 1e-5, atol=0.0)


# ----------------------------------------------------------------------------------------------------------------
# gradcheck in float64


@pytest.mark.parametrize("with_k", [True, False], ids=["k", "k-None"])
def test_gradcheck_naive_recurrent(with_k: bool) -> None:
    q, k, v, g = (x.requires_grad_(True) for x in _inputs(1, 5, 2, 3, 2, g_scale=2.0))
    if with_k:
        assert torch.autograd.gradcheck(lambda *a: naive_recurrent_additive(*a, scale=0.7)[0], (q, k, v, g))
    else:
        assert torch.autograd.gradcheck(lambda q, v, g: naive_recurrent_additive(q, None, v, g)[0], (q, v, g))


@pytest.mark.parametrize(("T", "chunk_size"), [pytest.param(7, 3, id="T7-C3-padded"), pytest.param(8, 4, id="T8-C4")])
def test_gradcheck_chunk_torch(T: int, chunk_size: int) -> None:
    q, k, v, g = (x.requires_grad_(True) for x in _inputs(1, T, 2, 3, 2, g_scale=2.0))
    assert torch.autograd.gradcheck(lambda *a: chunk_additive_torch(*a, chunk_size=chunk_size)[0], (q, k, v, g))


def test_gradcheck_global() -> None:
    q, k, v, g = (x.requires_grad_(True) for x in _inputs(1, 6, 2, 3, 2, g_scale=2.0))
    assert torch.autograd.gradcheck(lambda *a: global_additive(*a)[0], (q, k, v, g))


# ----------------------------------------------------------------------------------------------------------------
# input validation

ALL_FNS = [naive_recurrent_additive, chunk_additive_torch, chunk_additive, global_additive]


def _bad(case: str):
    B, T, H, K, V = 2, 5, 2, 4, 3
    q, k, v, g = (x.float() for x in _inputs(B, T, H, K, V))
    if case == "q-3d":
        return (q[0], k, v, g), "q"
    if case == "k-shape":
        return (q, k[..., :3], v, g), "k"
    if case == "g-shape":
        return (q, k, v, g[:, :4]), "g"
    if case == "v-shape":
        return (q, k, v[:, :4], g), "v"
    if case == "v-dtype":
        return (q, k, v.double(), g), "v"
    if case == "g-int":
        return (q, k, v, g.long()), "g"
    if case == "T0":
        return (q[:, :0], k[:, :0], v[:, :0], g[:, :0]), "T >= 1"
    if case == "v-not-tensor":
        return (q, k, v.tolist(), g), "v"
    raise AssertionError(case)


@pytest.mark.parametrize("fn", ALL_FNS, ids=lambda f: f.__name__)
@pytest.mark.parametrize("case", ["q-3d", "k-shape", "g-shape", "v-shape", "v-dtype", "g-int", "T0", "v-not-tensor"])
def test_bad_inputs_raise_value_error_naming_the_argument(fn: AdditiveFn, case: str) -> None:
    args, name = _bad(case)
    kwargs = {"causal": False} if fn is global_additive else {}
    with pytest.raises(ValueError, match=name):
        fn(*args, **kwargs)


def test_bad_options() -> None:
    q, k, v, g = _inputs(1, 5, 1, 4, 3)
    with pytest.raises(ValueError, match="chunk_size"):
        chunk_additive_torch(q, k, v, g, chunk_size=0)
    with pytest.raises(ValueError, match="chunk_size"):
        chunk_additive(q, k, v, g, chunk_size=0, backend="torch")
    with pytest.raises(ValueError, match="causal"):
        global_additive(q, k, v, g, causal=True)
    with pytest.raises(ValueError, match="scale"):
        naive_recurrent_additive(q, k, v, g, scale="1")
    with pytest.raises(ValueError, match="backend"):
        chunk_additive(q, k, v, g, backend="cuda")
