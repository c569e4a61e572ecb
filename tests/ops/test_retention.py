"""Tests of the PyTorch paths of the retention ops (``recvision.ops.retention``) and of ``recvision.config``.

Every form is checked against :func:`naive_recurrent_retention`, the step-by-step reference, on the output, the
final state and every gradient (``q, k, v, initial_state``) driven by random upstream gradients ``do`` and ``dht``.
The Triton kernels (``backend="triton"``) are tested in their own file.

Tolerances are relative RMS errors (:func:`recvision.ops.utils.assert_close`). All forms compute in float32
(float64 for float64 inputs) on the CPU, so they differ from the reference only by summation order: the largest
measured errors are 3e-7 in float32 and 2e-15 in float64, and the bounds below leave a factor of 15 to 50. The
absolute-error shortcut of ``assert_close`` is switched off (``atol=0``): at 1e-6 it would pass any float64 result.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import pytest
import torch

from recvision import config
from recvision.ops.retention import (
    chunk_retention,
    chunk_retention_torch,
    fused_recurrent_retention,
    fused_recurrent_retention_torch,
    naive_recurrent_retention,
    parallel_retention,
    retnet_g_gamma,
)
from recvision.ops.utils import assert_close, relative_rms_error

RetentionFn = Callable[..., tuple[torch.Tensor, torch.Tensor | None]]

# Relative RMS error allowed between two forms computed in the same precision.
RATIO = {torch.float32: 5e-6, torch.float64: 1e-13}

# Decays of the parity tests: log-spaced from 1 - 1/32 (fast) to 1 - 1/512 (slow), plus no decay at all.
GAMMAS = (1 - 1 / 32, 1 - 1 / 64, 1 - 1 / 128, 1 - 1 / 256, 1 - 1 / 512, 1.0)


def _log_gammas(gammas: tuple[float, ...]) -> torch.Tensor:
    """``g_gamma = log(gamma)`` as a float32 ``[H]`` tensor, computed in float64 (``log1p`` keeps 1 - 2^-9 exact)."""
    return torch.tensor([math.log1p(x - 1.0) for x in gammas], dtype=torch.float64).float()


def _inputs(
    B: int, T: int, H: int, K: int, V: int, dtype: torch.dtype, with_h0: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Random leaf tensors ``q, k [B, T, H, K]``, ``v [B, T, H, V]`` and ``h0 [B, H, K, V]`` (or ``None``)."""
    q = torch.randn(B, T, H, K, dtype=dtype, requires_grad=True)
    k = torch.randn(B, T, H, K, dtype=dtype, requires_grad=True)
    v = torch.randn(B, T, H, V, dtype=dtype, requires_grad=True)
    h0 = torch.randn(B, H, K, V, dtype=dtype, requires_grad=True) if with_h0 else None
    return q, k, v, h0


def _run(
    fn: RetentionFn,
    leaves: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None],
    g_gamma: torch.Tensor,
    output_final_state: bool,
    do: torch.Tensor,
    dht: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor | None, list[torch.Tensor | None]]:
    """Call ``fn``, backpropagate ``do`` (and ``dht`` when the final state is returned), collect the gradients.

    Returns:
        ``o``, the final state (or ``None``) and the gradients of ``q, k, v, h0`` (``None`` where there is no h0).
    """
    for leaf in leaves:
        if leaf is not None:
            leaf.grad = None
    q, k, v, h0 = leaves
    o, ht = fn(q, k, v, g_gamma, None, h0, output_final_state)
    loss = (o * do).sum()
    if ht is not None:
        loss = loss + (ht * dht).sum()
    loss.backward()
    grads = [None if leaf is None else leaf.grad.clone() for leaf in leaves]
    return o.detach(), (None if ht is None else ht.detach()), grads


def _chunked(fn: RetentionFn, chunk_size: int) -> RetentionFn:
    """``fn`` with a fixed ``chunk_size`` keyword, so that every form has the reference's signature."""

    def call(*args: object) -> tuple[torch.Tensor, torch.Tensor | None]:
        return fn(*args, chunk_size=chunk_size)

    return call


FORMS = [
    pytest.param(parallel_retention, id="parallel"),
    pytest.param(fused_recurrent_retention, id="fused_recurrent"),
    pytest.param(fused_recurrent_retention_torch, id="fused_recurrent_torch"),
    pytest.param(_chunked(chunk_retention_torch, 16), id="chunk_torch-C16"),
    pytest.param(_chunked(chunk_retention_torch, 64), id="chunk_torch-C64"),
    pytest.param(_chunked(chunk_retention, 16), id="chunk-C16"),
    pytest.param(_chunked(chunk_retention, 64), id="chunk-C64"),
]

# (T, dtype, with initial state, output_final_state). T = 1 is a single step; T = 17 is one chunk plus one token
# for C = 16 and shorter than one chunk for C = 64; T = 64 fills chunks exactly; T = 200 leaves 8 tokens of
# padding in the last chunk for both chunk sizes and is long enough for gamma = 1 to let the state grow.
CASES = [
    pytest.param(1, torch.float32, True, True, id="T1-fp32-h0-ht"),
    pytest.param(17, torch.float32, False, False, id="T17-fp32"),
    pytest.param(17, torch.float64, True, True, id="T17-fp64-h0-ht"),
    pytest.param(64, torch.float32, True, False, id="T64-fp32-h0"),
    pytest.param(200, torch.float32, False, True, id="T200-fp32-ht"),
    pytest.param(200, torch.float64, True, True, id="T200-fp64-h0-ht"),
]


@pytest.mark.parametrize(("T", "dtype", "with_h0", "output_final_state"), CASES)
@pytest.mark.parametrize("fn", FORMS)
def test_form_matches_naive_recurrent(
    fn: RetentionFn, T: int, dtype: torch.dtype, with_h0: bool, output_final_state: bool
) -> None:
    B, H, K, V = 2, len(GAMMAS), 16, 12
    g_gamma = _log_gammas(GAMMAS)
    leaves = _inputs(B, T, H, K, V, dtype, with_h0)
    do = torch.randn(B, T, H, V, dtype=dtype)
    dht = torch.randn(B, H, K, V, dtype=dtype)

    ref_o, ref_ht, ref_grads = _run(naive_recurrent_retention, leaves, g_gamma, output_final_state, do, dht)
    o, ht, grads = _run(fn, leaves, g_gamma, output_final_state, do, dht)

    ratio = RATIO[dtype]
    assert o.dtype == dtype
    assert_close("o", ref_o, o, ratio, atol=0.0)
    if output_final_state:
        assert ht is not None and ht.dtype == dtype
        assert_close("ht", ref_ht, ht, ratio, atol=0.0)
    else:
        assert ht is None and ref_ht is None
    for name, ref, got in zip(("dq", "dk", "dv", "dh0"), ref_grads, grads, strict=True):
        if ref is None:
            assert got is None and name == "dh0"
            continue
        assert got is not None, name
        assert_close(name, ref, got, ratio, atol=0.0)


# ----------------------------------------------------------------------------------------------------------------
# gradcheck of the references in float64


def test_gradcheck_naive_recurrent() -> None:
    B, T, H, K, V = 1, 5, 2, 3, 2
    q, k, v, h0 = _inputs(B, T, H, K, V, torch.float64, with_h0=True)
    # Decays well inside (0, 1) so that gradcheck's perturbations of g_gamma keep it <= 0.
    g_gamma = torch.tensor([math.log(0.9), math.log(0.5)], dtype=torch.float64, requires_grad=True)

    def fn(*args: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        q, k, v, g, h0 = args
        o, ht = naive_recurrent_retention(q, k, v, g, 0.7, h0, True)
        return o, ht

    assert torch.autograd.gradcheck(fn, (q, k, v, g_gamma, h0))


@pytest.mark.parametrize(
    ("T", "chunk_size"), [pytest.param(7, 3, id="T7-C3-padded"), pytest.param(8, 4, id="T8-C4-exact")]
)
def test_gradcheck_chunk_torch(T: int, chunk_size: int) -> None:
    B, H, K, V = 1, 2, 3, 2
    q, k, v, h0 = _inputs(B, T, H, K, V, torch.float64, with_h0=True)
    g_gamma = torch.tensor([math.log(0.9), math.log(0.5)], dtype=torch.float64, requires_grad=True)

    def fn(*args: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        q, k, v, g, h0 = args
        o, ht = chunk_retention_torch(q, k, v, g, 0.7, h0, True, chunk_size=chunk_size)
        return o, ht

    assert torch.autograd.gradcheck(fn, (q, k, v, g_gamma, h0))


# ----------------------------------------------------------------------------------------------------------------
# Long sequences: float32 forms against a float64 reference


@pytest.fixture(scope="module")
def long_sequence() -> dict[str, torch.Tensor]:
    """T = 16384 inputs with a slow (1 - 2^-9) and a fast (1 - 1/32) head, and the float64 reference outputs."""
    gen = torch.Generator().manual_seed(7)
    B, T, H, K, V = 1, 16384, 2, 16, 16
    q, k, v = (torch.randn(B, T, H, d, dtype=torch.float64, generator=gen) for d in (K, K, V))
    h0 = torch.randn(B, H, K, V, dtype=torch.float64, generator=gen)
    g_gamma = _log_gammas((1 - 2**-9, 1 - 1 / 32))
    o, ht = naive_recurrent_retention(q, k, v, g_gamma, None, h0, True)
    return {"q": q, "k": k, "v": v, "h0": h0, "g_gamma": g_gamma, "o": o, "ht": ht}


@pytest.mark.parametrize(
    "fn",
    [
        pytest.param(_chunked(chunk_retention, 64), id="chunk-C64"),
        pytest.param(_chunked(chunk_retention, 128), id="chunk-C128"),
        pytest.param(fused_recurrent_retention, id="fused_recurrent"),
    ],
)
def test_long_sequence_fp32(fn: RetentionFn, long_sequence: dict[str, torch.Tensor]) -> None:
    ref = long_sequence
    args = [ref[name].float() for name in ("q", "k", "v")]
    o, ht = fn(*args, ref["g_gamma"], None, ref["h0"].float(), True)
    assert o.dtype == torch.float32 and ht is not None
    assert torch.isfinite(o).all() and torch.isfinite(ht).all()
    for h, label in enumerate(("gamma=1-2^-9", "gamma=1-1/32")):
        # Per head, so that the larger slow-decay head cannot hide errors in the fast one.
        assert_close(f"o[{label}]", ref["o"][:, :, h], o[:, :, h], 1e-5, atol=0.0)
        assert_close(f"ht[{label}]", ref["ht"][:, h], ht[:, h], 1e-5, atol=0.0)
        # The last tokens must still carry signal (no underflow to zero) and be accurate on their own.
        tail_ref, tail = ref["o"][:, -256:, h], o[:, -256:, h]
        assert tail.abs().amax() > 0.1 * tail_ref.abs().amax()
        assert relative_rms_error(tail_ref, tail) < 1e-5


def test_strong_decay_with_padded_last_chunk_is_finite() -> None:
    # T = 65, C = 64: the last chunk holds 1 token and 63 padded ones; |log 0.1| * 63 = 145 > log(float32 max) = 88.7.
    B, T, H, K, V = 1, 65, 2, 4, 4
    q, k, v = (torch.randn(B, T, H, d) for d in (K, K, V))
    g_gamma = torch.tensor([math.log(0.1), math.log(0.9)], requires_grad=True)
    o, ht = chunk_retention_torch(q, k, v, g_gamma, None, None, True, chunk_size=64)
    ref_o, ref_ht = naive_recurrent_retention(q, k, v, g_gamma.detach(), None, None, True)
    o.sum().backward()
    assert torch.isfinite(g_gamma.grad).all()
    assert_close("o", ref_o, o, RATIO[torch.float32], atol=0.0)
    assert_close("ht", ref_ht, ht, RATIO[torch.float32], atol=0.0)


# ----------------------------------------------------------------------------------------------------------------
# Bad input


def _bad_inputs(case: str) -> tuple[dict[str, object], str]:
    """Keyword arguments of a retention call that must be rejected, and a regex the error message must match."""
    B, T, H, K, V = 2, 5, 3, 4, 6
    q, k, v = torch.randn(B, T, H, K), torch.randn(B, T, H, K), torch.randn(B, T, H, V)
    kwargs: dict[str, object] = {"q": q, "k": k, "v": v}
    if case == "q-rank3":
        return {**kwargs, "q": q[0]}, r"\bq\b"
    if case == "v-rank5":
        return {**kwargs, "v": v[None]}, r"\bv\b"
    if case == "k-shape":
        return {**kwargs, "k": torch.randn(B, T, H, K + 1)}, r"\bk\b"
    if case == "v-heads":
        return {**kwargs, "v": torch.randn(B, T, H + 1, V)}, r"\bv\b"
    if case == "T0":
        return {"q": q[:, :0], "k": k[:, :0], "v": v[:, :0]}, r"\bT\b"
    if case == "g_gamma-positive":
        return {**kwargs, "g_gamma": torch.tensor([-0.1, 0.05, 0.0])}, r"g_gamma"
    if case == "g_gamma-nan":
        return {**kwargs, "g_gamma": torch.tensor([-0.1, float("nan"), 0.0])}, r"g_gamma"
    if case == "g_gamma-shape":
        return {**kwargs, "g_gamma": torch.zeros(H + 1)}, r"g_gamma"
    if case == "initial_state-shape":
        return {**kwargs, "initial_state": torch.zeros(B, H, V, K)}, r"initial_state"
    if case == "dtype-mixed":
        return {**kwargs, "v": v.double()}, r"dtype"
    if case == "dtype-int":
        return {"q": q.long(), "k": k.long(), "v": v.long()}, r"dtype"
    raise AssertionError(case)


BAD_CASES = [
    "q-rank3",
    "v-rank5",
    "k-shape",
    "v-heads",
    "T0",
    "g_gamma-positive",
    "g_gamma-nan",
    "g_gamma-shape",
    "initial_state-shape",
    "dtype-mixed",
    "dtype-int",
]

ALL_FORMS = [
    pytest.param(naive_recurrent_retention, id="naive_recurrent"),
    pytest.param(chunk_retention_torch, id="chunk_torch"),
    pytest.param(parallel_retention, id="parallel"),
    pytest.param(chunk_retention, id="chunk"),
    pytest.param(fused_recurrent_retention, id="fused_recurrent"),
]


@pytest.mark.parametrize("case", BAD_CASES)
@pytest.mark.parametrize("fn", ALL_FORMS)
def test_bad_input_raises(fn: RetentionFn, case: str) -> None:
    kwargs, pattern = _bad_inputs(case)
    with pytest.raises(ValueError, match=pattern):
        fn(**kwargs)


@pytest.mark.parametrize("fn", [chunk_retention_torch, chunk_retention], ids=["chunk_torch", "chunk"])
@pytest.mark.parametrize("chunk_size", [0, -16])
def test_bad_chunk_size_raises(fn: RetentionFn, chunk_size: int) -> None:
    q = torch.randn(1, 5, 2, 4)
    with pytest.raises(ValueError, match="chunk_size"):
        fn(q, q, q, chunk_size=chunk_size)


# ----------------------------------------------------------------------------------------------------------------
# recvision.config


@pytest.fixture
def restore_backend() -> Iterator[None]:
    """Put the global backend back after a test that changes it."""
    previous = config.get_backend()
    yield
    config.set_backend(previous)


@pytest.mark.usefixtures("restore_backend")
def test_set_backend_rejects_unknown_value() -> None:
    config.set_backend("torch")
    with pytest.raises(ValueError, match="backend"):
        config.set_backend("cuda")
    assert config.get_backend() == "torch"
    with pytest.raises(ValueError, match="backend"), config.backend("Torch"):
        pass
    assert config.get_backend() == "torch"


@pytest.mark.usefixtures("restore_backend")
def test_backend_context_manager_restores() -> None:
    config.set_backend("auto")
    with config.backend("torch"):
        assert config.get_backend() == "torch"
        with config.backend("auto"):
            assert config.get_backend() == "auto"
        assert config.get_backend() == "torch"
    assert config.get_backend() == "auto"
    with pytest.raises(RuntimeError, match="boom"), config.backend("torch"):
        raise RuntimeError("boom")
    assert config.get_backend() == "auto"


def test_use_triton_is_false_for_cpu_tensors() -> None:
    x = torch.zeros(1)
    with config.backend("auto"):
        assert config.use_triton(x) is False
        assert config.use_triton(x, "torch") is False
        assert config.use_triton(x, "auto") is False
        with pytest.raises(ValueError, match="backend"):
            config.use_triton(x, "gpu")
    with config.backend("torch"):
        assert config.use_triton(x) is False


# ----------------------------------------------------------------------------------------------------------------
# Defaults


def test_retnet_g_gamma_values() -> None:
    H = 8
    g = retnet_g_gamma(H)
    assert g.shape == (H,) and g.dtype == torch.float32
    expected = torch.tensor([1 - 2.0 ** (-5 - h) for h in range(H)], dtype=torch.float64)
    torch.testing.assert_close(g.double().exp(), expected, rtol=0, atol=1e-7)
    assert (g < 0).all()


@pytest.mark.parametrize("fn", ALL_FORMS)
def test_default_decay_and_scale(fn: RetentionFn) -> None:
    B, T, H, K, V = 2, 19, 4, 8, 5
    q, k, v, h0 = (x.detach() for x in _inputs(B, T, H, K, V, torch.float64, with_h0=True))

    o_default, ht_default = fn(q, k, v, None, None, h0, True)
    o_explicit, ht_explicit = fn(q, k, v, retnet_g_gamma(H), K**-0.5, h0, True)
    # K ** -0.5 and 1 / sqrt(K) may differ in the last bit, hence a float64 rounding tolerance, not equality.
    torch.testing.assert_close(o_default, o_explicit, rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(ht_default, ht_explicit, rtol=1e-13, atol=1e-13)

    # The defaults are the ones used: another scale or another decay changes the output.
    o_scale_one, _ = fn(q, k, v, None, 1.0, h0, True)
    o_no_decay, _ = fn(q, k, v, torch.zeros(H), None, h0, True)
    assert not torch.allclose(o_default, o_scale_one)
    assert not torch.allclose(o_default, o_no_decay)


@pytest.mark.parametrize("T", [64, 200])
@pytest.mark.parametrize("group_size", [1, 64, 100, 512])
def test_chunk_torch_inference_mode_and_groups_match(T: int, group_size: int) -> None:
    """The in-place inference branch and every grouping of chunks give the recurrent result."""
    B, H, K, V = 2, 3, 8, 6
    q, k, v = (torch.randn(B, T, H, d) for d in (K, K, V))
    g = torch.log(torch.tensor([0.9, 0.97, 1.0]))
    s0 = torch.randn(B, H, K, V)
    ref, ref_state = naive_recurrent_retention(q, k, v, g, None, s0, True)
    with torch.inference_mode():
        o, state = chunk_retention_torch(q, k, v, g, None, s0, True, chunk_size=16, group_size=group_size)
    torch.testing.assert_close(o, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(state, ref_state, rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------------------------------------------
# the recurrent token loop, learnable decays and the decay-table caches

from recvision.ops.retention.chunk import CHUNK_TABLES  # noqa: E402
from recvision.ops.retention.parallel import DECAY_TABLES  # noqa: E402
from recvision.ops.utils import DecayTableCache  # noqa: E402

LEARNABLE_DECAY_FORMS = [
    pytest.param(parallel_retention, id="parallel"),
    pytest.param(fused_recurrent_retention_torch, id="fused_recurrent_torch"),
    pytest.param(_chunked(chunk_retention_torch, 16), id="chunk_torch-C16"),
]


@pytest.mark.parametrize("fn", LEARNABLE_DECAY_FORMS)
def test_learnable_decay_gradient_through_cached_forms(fn: RetentionFn) -> None:
    """A decay that needs a gradient bypasses the caches: ``dg_gamma`` matches the reference, call after call."""
    B, T, H, K, V = 2, 40, 3, 8, 6
    q, k, v, h0 = _inputs(B, T, H, K, V, torch.float32, True)
    do, dht = torch.randn(B, T, H, V), torch.randn(B, H, K, V)
    grads = []
    for f in (naive_recurrent_retention, fn, fn):  # the form twice: a cached first call must not change the second
        g = torch.log(torch.tensor([0.9, 0.97, 0.995])).requires_grad_(True)
        o, ht = f(q, k, v, g, None, h0, True)
        ((o * do).sum() + (ht * dht).sum()).backward()
        grads.append(g.grad.clone())
    assert_close("dg", grads[0], grads[1], 5e-6, atol=0.0)
    assert torch.equal(grads[1], grads[2])


def test_fused_recurrent_torch_inference_matches_autograd_path() -> None:
    """The in-place loop (no autograd) and the autograd loop give the same numbers; the caller's state is kept."""
    B, T, H, K, V = 2, 33, 3, 8, 6
    q, k, v = (torch.randn(B, T, H, d) for d in (K, K, V))
    g = torch.log(torch.tensor([0.9, 0.97, 1.0]))
    s0 = torch.randn(B, H, K, V)
    s0_copy = s0.clone()
    with torch.inference_mode():
        o, state = fused_recurrent_retention_torch(q, k, v, g, None, s0, True)
    o_grad, state_grad = fused_recurrent_retention_torch(q, k, v, g, None, s0.requires_grad_(True), True)
    assert torch.equal(s0.detach(), s0_copy)
    # in place, the update is one fused multiply-add, so the two loops round differently
    torch.testing.assert_close(o, o_grad.detach(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(state, state_grad.detach(), rtol=1e-5, atol=1e-5)


def test_decay_table_cache_is_bounded() -> None:
    """The LRU cache never holds more than its entry and byte bounds; an oversized table is built, not stored."""
    cache = DecayTableCache(max_entries=3, max_bytes=1000)
    for n in range(10):
        assert torch.equal(cache.get(("t", n), lambda n=n: torch.full((n + 1,), float(n))), torch.full((n + 1,), n))
        assert len(cache) <= 3 and cache.nbytes <= 1000
    assert [key[1] for key in cache._entries] == [7, 8, 9]
    cache.get(("t", 7), lambda: torch.zeros(1))  # a hit moves 7 to the back: 8 is now the oldest
    cache.get(("t", 10), lambda: torch.zeros(1))
    assert [key[1] for key in cache._entries] == [9, 7, 10]
    big = cache.get(("big",), lambda: torch.zeros(1000))  # 4000 bytes > 1000
    assert big.shape == (1000,) and ("big",) not in cache._entries and cache.nbytes <= 1000
    cache.configure(max_entries=1, max_bytes=1000)
    assert len(cache) == 1
    with pytest.raises(ValueError, match="max_entries"):
        cache.configure(-1, 10)


def test_retention_caches_stay_bounded_over_many_lengths() -> None:
    """Sweeping the sequence length fills the module caches only up to their bounds, and a hit is exact."""
    H, K = 2, 4
    g = torch.log(torch.tensor([0.9, 0.99]))
    DECAY_TABLES.clear()
    CHUNK_TABLES.clear()
    for T in range(1, 40):
        q, k, v = (torch.randn(1, T, H, K) for _ in range(3))
        first = parallel_retention(q, k, v, g)[0]
        assert torch.equal(first, parallel_retention(q, k, v, g)[0])
        chunk_retention_torch(q, k, v, g, chunk_size=max(1, T // 2))
        assert len(DECAY_TABLES) <= DECAY_TABLES.max_entries and DECAY_TABLES.nbytes <= DECAY_TABLES.max_bytes
        assert len(CHUNK_TABLES) <= CHUNK_TABLES.max_entries and CHUNK_TABLES.nbytes <= CHUNK_TABLES.max_bytes
    assert len(DECAY_TABLES) == DECAY_TABLES.max_entries


@pytest.mark.parametrize(
    "fn", [parallel_retention, _chunked(chunk_retention_torch, 16)], ids=["parallel", "chunk_torch"]
)
def test_tables_cached_under_inference_mode_serve_autograd(fn: RetentionFn) -> None:
    """A table first built under ``inference_mode`` is a normal tensor: a later call with autograd can use it."""
    DECAY_TABLES.clear()
    CHUNK_TABLES.clear()
    q, k, v, _ = _inputs(1, 20, 2, 4, 4, torch.float32, False)
    g = torch.log(torch.tensor([0.9, 0.99]))
    with torch.inference_mode():
        first, _ = fn(q, k, v, g, None, None, False)
    o, _ = fn(q, k, v, g, None, None, False)
    o.sum().backward()
    assert q.grad is not None
    # the chunk form's inference branch works in place, so it rounds differently from the autograd branch
    torch.testing.assert_close(o.detach(), first, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "fn", [parallel_retention, _chunked(chunk_retention_torch, 16)], ids=["parallel", "chunk_torch"]
)
def test_meta_tensors_bypass_the_decay_caches(fn: RetentionFn) -> None:
    """Models built on the meta device (timm's contract does) run the forms without touching the caches."""
    DECAY_TABLES.clear()
    CHUNK_TABLES.clear()
    q, k, v = (torch.empty(1, 20, 2, 4, device="meta") for _ in range(3))
    g = torch.empty(2, device="meta")
    o, _ = fn(q, k, v, g, None, None, False)
    assert o.shape == (1, 20, 2, 4) and o.is_meta
    assert len(DECAY_TABLES) == 0 and len(CHUNK_TABLES) == 0
