"""Tests of the PyTorch forms of the 2-D pLSTM (``recvision.ops.plstm2d``).

The chain of references: :func:`naive_plstm2d` (the recurrence, cell by cell) is checked by ``gradcheck`` and
against the two parallel constructions on small grids; :func:`chunk_plstm2d_torch` is checked against
:func:`parallel_plstm2d` on grids too large for the naive loop. Every comparison covers the output and the
gradients of all twelve tensor inputs, driven by a random upstream gradient.

Tolerances are relative RMS errors (:func:`recvision.ops.utils.assert_close`, absolute shortcut switched off).
The forms differ only in summation order: the largest measured errors are 3e-7 (float32) and 6e-16 (float64), so
the bounds below leave a factor of about 15. Half-precision inputs are compared with float32 runs on the same
rounded inputs (measured 3e-3 for bfloat16, 5e-4 for float16).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from recvision.ops.plstm2d import (
    GATE_NAMES,
    chunk_plstm2d_torch,
    d_mode_gates,
    naive_plstm2d,
    orient,
    p_mode_gates,
    parallel_plstm2d,
    plstm2d,
    unorient,
)
from recvision.ops.plstm2d.block_scan import scan_plstm2d_blocks
from recvision.ops.plstm2d.chunk import DEFAULT_CHUNK_SIZE, chunk_sides
from recvision.ops.plstm2d.parallel import BlockOperators, plstm2d_blocks
from recvision.ops.utils import assert_close

Op = Callable[..., torch.Tensor]

RATIO = {torch.float32: 5e-6, torch.float64: 1e-14}


def _leaves(
    B: int, X: int, Y: int, H: int, DK: int, DV: int, dtype: torch.dtype = torch.float64
) -> dict[str, torch.Tensor]:
    """Random leaf inputs: ``q, k, v`` and the nine gates, each gate in its natural range.

    Sources, marks and direct lie in ``(0, 1)`` (sigmoids in the paper), transitions in ``(-1, 1)`` (tanh), so the
    gates are generic (no symmetry a wrong index could hide behind) but the states stay of order one.
    """
    shape = (B, X, Y, H)
    t = {
        "q": torch.randn(*shape, DK, dtype=dtype),
        "k": torch.randn(*shape, DK, dtype=dtype),
        "v": torch.randn(*shape, DV, dtype=dtype),
    }
    for name in GATE_NAMES:
        t[name] = (
            torch.rand(*shape, dtype=dtype) * 2 - 1 if name.startswith("trans") else torch.rand(*shape, dtype=dtype)
        )
    return {name: x.requires_grad_() for name, x in t.items()}


def _run(op: Op, leaves: dict[str, torch.Tensor], do: torch.Tensor, **kwargs: object) -> list[torch.Tensor]:
    """``[o, d q, d k, d v, d source_r, ..., d direct]`` of ``op`` for the upstream gradient ``do``."""
    for x in leaves.values():
        x.grad = None
    o = op(**leaves, **kwargs)
    (o * do).sum().backward()
    # on a 1x1 grid most gates take no part: no gradient is a zero gradient
    return [o.detach()] + [torch.zeros_like(x) if x.grad is None else x.grad.clone() for x in leaves.values()]


def _assert_all_close(reference: list[torch.Tensor], actual: list[torch.Tensor], ratio: float, tag: str) -> None:
    names = ["o", "q", "k", "v", *GATE_NAMES]
    for name, ref, act in zip(names, reference, actual, strict=True):
        assert_close(f"{tag}: {name if name == 'o' else 'd' + name}", ref, act, ratio, atol=0.0)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["fp64", "fp32"])
@pytest.mark.parametrize("X, Y", [(1, 1), (3, 5), (7, 9)], ids=["1x1", "3x5", "7x9"])
def test_forms_match_naive(X: int, Y: int, dtype: torch.dtype) -> None:
    leaves = _leaves(2, X, Y, 2, 4, 3, dtype)
    do = torch.randn(2, X, Y, 2, 3, dtype=dtype)
    reference = _run(naive_plstm2d, leaves, do)
    _assert_all_close(reference, _run(parallel_plstm2d, leaves, do), RATIO[dtype], "parallel")
    # chunk side 2 divides neither 3, 5, 7 nor 9; the default is a single (clipped) chunk on these grids
    for chunk_size in (2, None):
        _assert_all_close(
            reference, _run(chunk_plstm2d_torch, leaves, do, chunk_size=chunk_size), RATIO[dtype], "chunk"
        )


@pytest.mark.parametrize(
    "X, Y, chunk_size, dtype",
    [
        pytest.param(16, 16, 4, torch.float64, id="16x16-c4-fp64"),
        pytest.param(16, 16, 8, torch.float32, id="16x16-c8-fp32"),
        pytest.param(23, 17, 8, torch.float64, id="23x17-c8-fp64"),
        pytest.param(23, 17, 4, torch.float32, id="23x17-c4-fp32"),
    ],
)
def test_chunk_matches_parallel(X: int, Y: int, chunk_size: int, dtype: torch.dtype) -> None:
    leaves = _leaves(1, X, Y, 2, 4, 4, dtype)
    do = torch.randn(1, X, Y, 2, 4, dtype=dtype)
    reference = _run(parallel_plstm2d, leaves, do)
    _assert_all_close(reference, _run(chunk_plstm2d_torch, leaves, do, chunk_size=chunk_size), RATIO[dtype], "chunk")


def test_naive_gradcheck() -> None:
    leaves = _leaves(1, 2, 3, 1, 2, 2)
    names = list(leaves)

    def fn(*inputs: torch.Tensor) -> torch.Tensor:
        return naive_plstm2d(**dict(zip(names, inputs, strict=True)))

    assert torch.autograd.gradcheck(fn, tuple(leaves.values()))


def test_naive_matches_hand_computed_2x2() -> None:
    """The recurrence written out by hand on a 2x2 grid with DK = DV = 1 and scale 1."""
    t = {name: torch.rand(1, 2, 2, 1, dtype=torch.float64) for name in GATE_NAMES}
    q, k, v = (torch.randn(1, 2, 2, 1, 1, dtype=torch.float64) for _ in range(3))
    o = naive_plstm2d(q, k, v, **t, scale=1.0)

    def g(name: str, x: int, y: int) -> float:
        return t[name][0, x, y, 0].item()

    kv = {(x, y): (k[0, x, y, 0, 0] * v[0, x, y, 0, 0]).item() for x in range(2) for y in range(2)}
    r00, d00 = g("source_r", 0, 0) * kv[0, 0], g("source_d", 0, 0) * kv[0, 0]
    r01 = g("trans_ru", 0, 1) * d00 + g("source_r", 0, 1) * kv[0, 1]  # cell (0, 1) is below (0, 0)
    d10 = g("trans_dl", 1, 0) * r00 + g("source_d", 1, 0) * kv[1, 0]  # cell (1, 0) is right of (0, 0)
    state = {
        (0, 0): g("direct", 0, 0) * kv[0, 0],
        (1, 0): g("mark_l", 1, 0) * r00 + g("direct", 1, 0) * kv[1, 0],
        (0, 1): g("mark_u", 0, 1) * d00 + g("direct", 0, 1) * kv[0, 1],
        (1, 1): g("mark_l", 1, 1) * r01 + g("mark_u", 1, 1) * d10 + g("direct", 1, 1) * kv[1, 1],
    }
    for (x, y), s in state.items():
        expected = q[0, x, y, 0, 0].item() * s
        assert o[0, x, y, 0, 0].item() == pytest.approx(expected, rel=1e-12, abs=1e-14)


def _mode_gates(mode: str, B: int, X: int, Y: int, H: int) -> tuple[dict[str, torch.Tensor], list[torch.Tensor]]:
    """Gates of one mode built from leaf pre-activations (sigmoid / tanh as in the paper) and those leaves."""
    shape = (B, X, Y, H)
    if mode == "P":
        raw = [torch.randn(*shape, dtype=torch.float64, requires_grad=True) for _ in range(5)]
        s, t, m, d, o = raw
        return p_mode_gates(s.sigmoid(), t.tanh(), m.sigmoid(), d.sigmoid(), o.sigmoid()), raw
    raw = [torch.randn(*shape, dtype=torch.float64, requires_grad=True) for _ in range(8)]
    s_r, s_d, t_r, t_d, t_x, m_l, m_u, d = raw
    gates = d_mode_gates(
        s_r.sigmoid(), s_d.sigmoid(), t_r.tanh(), t_d.tanh(), t_x.tanh(), m_l.sigmoid(), m_u.sigmoid(), d.sigmoid(),
        chirality=mode[-1],
    )  # fmt: skip
    return gates, raw


@pytest.mark.parametrize("orientation", [0, 1, 2, 3])
@pytest.mark.parametrize("mode", ["P", "D-L", "D-R"])
def test_modes_and_orientations(mode: str, orientation: int) -> None:
    """P- and D-mode gates (both chiralities) in every orientation: chunk and parallel match naive, including
    the gradients of the raw activations that flow through the gate constructors and :func:`orient`."""
    B, X, Y, H = 1, 5, 6, 2
    q, k, v = (torch.randn(B, X, Y, H, 3, dtype=torch.float64, requires_grad=True) for _ in range(3))
    do = torch.randn(B, X, Y, H, 3, dtype=torch.float64)
    results = []
    for op, kwargs in ((naive_plstm2d, {}), (parallel_plstm2d, {}), (chunk_plstm2d_torch, {"chunk_size": 2})):
        torch.manual_seed(7)  # the same pre-activations for every form
        gates, raw = _mode_gates(mode, B, X, Y, H)
        oriented = {name: orient(t, orientation) for name, t in gates.items()}
        o = unorient(
            op(orient(q, orientation), orient(k, orientation), orient(v, orientation), **oriented, **kwargs),
            orientation,
        )
        leaves = [q, k, v, *raw]
        grads = torch.autograd.grad((o * do).sum(), leaves)
        results.append([o.detach(), *grads])
    for other in results[1:]:
        for i, (ref, act) in enumerate(zip(results[0], other, strict=True)):
            assert_close(f"{mode} orientation {orientation} tensor {i}", ref, act, RATIO[torch.float64], atol=0.0)


@pytest.mark.parametrize("orientation", [0, 1, 2, 3])
def test_orientation_sets_the_flow_direction(orientation: int) -> None:
    """``o[x, y]`` depends on exactly the cells upstream in the oriented grid (checked through ``d o / d k``)."""
    B, X, Y, H = 1, 6, 5, 1
    leaves = _leaves(B, X, Y, H, 2, 2)
    x0, y0 = 2, 3
    oriented = {name: orient(t, orientation) for name, t in leaves.items()}
    o = unorient(chunk_plstm2d_torch(**oriented, chunk_size=2), orientation)
    (grad_k,) = torch.autograd.grad(o[0, x0, y0].sum(), leaves["k"])
    depends = grad_k.abs().sum(dim=(0, 3, 4)) > 0  # [X, Y]
    xs, ys = torch.arange(X)[:, None], torch.arange(Y)[None, :]
    flip_x, flip_y = orientation in (1, 3), orientation in (2, 3)
    upstream = ((xs >= x0) if flip_x else (xs <= x0)) & ((ys >= y0) if flip_y else (ys <= y0))
    assert torch.equal(depends, upstream)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_chunk_low_precision_inputs(dtype: torch.dtype) -> None:
    """Half-precision inputs are computed in float32: the result is the float32 result of the rounded inputs,
    rounded once to the input dtype (relative RMS ~ one half-precision ulp)."""
    leaves32 = _leaves(1, 9, 11, 2, 8, 8, torch.float32)
    low = {name: x.detach().to(dtype).requires_grad_() for name, x in leaves32.items()}
    rounded = {name: x.detach().float().requires_grad_() for name, x in low.items()}
    do = torch.randn(1, 9, 11, 2, 8)
    reference = _run(chunk_plstm2d_torch, rounded, do, chunk_size=4)
    actual = _run(chunk_plstm2d_torch, low, do.to(dtype), chunk_size=4)
    assert actual[0].dtype == dtype and all(g.dtype == dtype for g in actual[1:])
    ratio = 1e-2 if dtype == torch.bfloat16 else 2e-3
    _assert_all_close(reference, actual, ratio, str(dtype))


@pytest.mark.parametrize("mode", ["P", "P-T=1", "D-L"])
def test_bounded_gates_stay_finite_on_a_large_grid(mode: str) -> None:
    """128 x 128 cells with the paper's bounded gates (sigmoid sources/marks/direct, tanh transitions pushed
    towards 1 as by the bias init; "P-T=1" is the P-mode limit of transitions exactly 1, where the number of paths
    grows binomially): nothing overflows in float32, the output stays of order one, and it does not depend on the
    chunk size."""
    B, X, Y, H, D = 1, 128, 128, 2, 4
    shape = (B, X, Y, H)
    q, k, v = (torch.randn(*shape, D) for _ in range(3))
    act = [torch.randn(shape) for _ in range(8)]
    if mode.startswith("P"):
        transition = torch.ones(shape) if mode == "P-T=1" else (5 * (1 + act[1])).tanh()
        gates = p_mode_gates(act[0].sigmoid(), transition, act[2].sigmoid(), act[3].sigmoid(), act[4].sigmoid())
    else:
        gates = d_mode_gates(
            act[0].sigmoid(), act[1].sigmoid(), (5 * (1 + act[2])).tanh(), (5 * (1 + act[3])).tanh(),
            (5 * (1 + act[4])).tanh(), act[5].sigmoid(), act[6].sigmoid(), act[7].sigmoid(), chirality="L",
        )  # fmt: skip
    with torch.no_grad():
        o = chunk_plstm2d_torch(q, k, v, **gates)
        o_wide = chunk_plstm2d_torch(q, k, v, **gates, chunk_size=16)
    assert torch.isfinite(o).all()
    assert o.abs().max() < 1e3
    assert_close(f"{mode}: chunk 4 vs 16", o_wide, o, 1e-5, atol=0.0)


def _saved_bytes(fn: Callable[[], torch.Tensor]) -> tuple[int, int]:
    """Total and largest size in bytes of the storages autograd saves while running ``fn`` (each storage counted
    once, however many ops save a view of it)."""
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(storages.values()), max(storages.values())


def test_chunk_memory_is_subquadratic() -> None:
    """The chunked form keeps ``O(cells * chunk^2)`` gating entries: the memory autograd saves grows ~4x when the
    grid side doubles (it would grow 16x if quadratic), its largest tensor stays within a small multiple of
    ``cells * chunk^2``, and the parallel form at 32x32 saves far more."""
    c, H, D = 8, 1, 4

    def chunk_at(side: int) -> tuple[int, int]:
        leaves = _leaves(1, side, side, H, D, D, torch.float32)
        return _saved_bytes(lambda: chunk_plstm2d_torch(**leaves, chunk_size=c))

    total32, largest32 = chunk_at(32)
    total64, largest64 = chunk_at(64)
    assert total64 < 5 * total32
    assert largest64 <= 2 * (64 * 64 * H) * c * c * 4
    leaves = _leaves(1, 32, 32, H, D, D, torch.float32)
    parallel_total, parallel_largest = _saved_bytes(lambda: parallel_plstm2d(**leaves))
    assert parallel_largest >= (32 * 32) ** 2 * 4  # the full gating tensor
    assert total32 * 4 < parallel_total


def test_dispatcher_torch_backend_is_the_chunk_form() -> None:
    leaves = _leaves(1, 5, 7, 2, 4, 4, torch.float32)
    with torch.no_grad():
        expected = chunk_plstm2d_torch(**leaves, chunk_size=2)
        assert torch.equal(plstm2d(**leaves, chunk_size=2, backend="torch"), expected)
        assert torch.equal(plstm2d(**leaves, chunk_size=2, backend="auto"), expected)  # CPU tensors


def _kwargs(**overrides: torch.Tensor) -> dict[str, torch.Tensor]:
    leaves = {name: x.detach() for name, x in _leaves(1, 3, 4, 2, 4, 5, torch.float32).items()}
    leaves.update(overrides)
    return leaves


@pytest.mark.parametrize(
    "op", [naive_plstm2d, parallel_plstm2d, chunk_plstm2d_torch], ids=["naive", "parallel", "chunk"]
)
@pytest.mark.parametrize(
    "overrides, match",
    [
        pytest.param({"q": torch.randn(1, 3, 4, 8)}, r"q, k of shape \[B, X, Y, H, DK\]", id="q-4d"),
        pytest.param({"k": torch.randn(1, 3, 4, 2, 3)}, "q and k must have the same shape", id="k-shape"),
        pytest.param({"v": torch.randn(1, 4, 4, 2, 5)}, "v must be", id="v-grid"),
        pytest.param({"trans_du": torch.rand(1, 3, 4, 1)}, "gate trans_du must have shape", id="gate-shape"),
        pytest.param({"mark_u": torch.ones(1, 3, 4, 2, dtype=torch.long)}, "gate mark_u must be a floating", id="int"),
        pytest.param({"v": torch.randn(1, 3, 4, 2, 5, dtype=torch.float64)}, "share one floating dtype", id="dtype"),
    ],
)
def test_bad_inputs_name_the_argument(op: Op, overrides: dict[str, torch.Tensor], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        op(**_kwargs(**overrides))


@pytest.mark.parametrize("chunk_size", [3, 0, -4, 2.0])
def test_bad_chunk_size(chunk_size: object) -> None:
    with pytest.raises(ValueError, match="chunk_size"):
        chunk_plstm2d_torch(**_kwargs(), chunk_size=chunk_size)


def test_gate_constructors() -> None:
    shape = (1, 2, 3, 2)
    s, t, m, d, o = (torch.rand(shape) for _ in range(5))
    p = p_mode_gates(s, t, m, d, o)
    assert tuple(p) == GATE_NAMES
    torch.testing.assert_close(p["source_r"] + p["source_d"], s)
    torch.testing.assert_close(p["trans_rl"] + p["trans_dl"], t)  # transitions leaving the left edge sum to T
    torch.testing.assert_close(p["trans_ru"] + p["trans_du"], t)
    left, right = (d_mode_gates(s, s, t, t, o, m, m, d, chirality=c) for c in ("L", "R"))
    assert tuple(left) == GATE_NAMES
    assert torch.equal(left["trans_ru"], o) and not left["trans_dl"].any()
    assert torch.equal(right["trans_dl"], o) and not right["trans_ru"].any()
    with pytest.raises(ValueError, match="chirality"):
        d_mode_gates(s, s, t, t, o, m, m, d, chirality="X")
    with pytest.raises(ValueError, match="share one shape"):
        p_mode_gates(s, t, m, d, o[:, :1])
    with pytest.raises(ValueError, match="orientation"):
        orient(s, 4)
    for orientation in range(4):
        assert torch.equal(unorient(orient(s, orientation), orientation), s)


@pytest.mark.parametrize(
    "X, Y, bx, by", [(1, 1, 1, 1), (2, 4, 2, 4), (4, 4, 2, 2), (8, 8, 8, 8), (8, 16, 4, 8), (4, 2, 4, 1)]
)
def test_scan_block_operators_match_doubling(X: int, Y: int, bx: int, by: int) -> None:
    """The anti-diagonal scan builds the same nine chunk operators as the doubling, and the same gate gradients."""
    gates = {name: (torch.rand(3, X, Y, dtype=torch.float64) * 2 - 1).requires_grad_() for name in GATE_NAMES}
    ref, scan = plstm2d_blocks(gates, bx, by), scan_plstm2d_blocks(gates, bx, by)
    weights = [torch.randn_like(t) for t in ref]
    for name, a, b in zip(BlockOperators._fields, ref, scan, strict=True):
        assert_close(name, a, b, 1e-13, atol=0.0)
    ref_grads, scan_grads = (
        torch.autograd.grad(sum((w * t).sum() for w, t in zip(weights, ops, strict=True)), list(gates.values()))
        for ops in (ref, scan)
    )
    for name, a, b in zip(GATE_NAMES, ref_grads, scan_grads, strict=True):
        assert_close(f"d{name}", a, b, 1e-13, atol=0.0)
    if X == bx and Y == by:
        only_g = scan_plstm2d_blocks(gates, bx, by, boundary=False)
        assert only_g.t_rr is None and only_g.s_r is None
        assert_close("g without boundary", ref.g, only_g.g, 1e-13, atol=0.0)


def test_scan_gating_of_a_non_power_of_two_block_matches_naive() -> None:
    """G of one 5x3 block read off the naive recurrence: with ``q = k = 1`` and ``v = e_c'`` the output at ``c`` is
    ``G[c, c']``."""
    N, X, Y = 2, 5, 3
    gates = {name: torch.rand(N, X, Y, dtype=torch.float64) * 2 - 1 for name in GATE_NAMES}
    ones = torch.ones(N, X, Y, 1, 1, dtype=torch.float64)
    v = torch.eye(X * Y, dtype=torch.float64).reshape(1, X, Y, 1, X * Y).expand(N, -1, -1, -1, -1)
    o = naive_plstm2d(ones, ones, v, **{name: t[..., None] for name, t in gates.items()}, scale=1.0)
    expected = o[:, :, :, 0].reshape(N, 1, 1, X, Y, X, Y)
    assert_close("G", expected, scan_plstm2d_blocks(gates, X, Y).g, 1e-13, atol=0.0)


def test_default_chunk_sides() -> None:
    """One chunk for grids padding to at most 8x8 cells, chunks of side 4 beyond; an explicit size always wins."""
    assert chunk_sides(1, 1, None) == (1, 1)
    assert chunk_sides(7, 5, None) == (8, 8)
    assert chunk_sides(16, 4, None) == (16, 4)
    assert chunk_sides(16, 8, None) == (4, 4)
    assert chunk_sides(23, 17, None) == (DEFAULT_CHUNK_SIZE, DEFAULT_CHUNK_SIZE)
    assert chunk_sides(8, 8, 2) == (2, 2)
