"""bfloat16 on the CPU for every PyTorch form of the ops: under ``torch.autocast("cpu", dtype=torch.bfloat16)``
and with bfloat16 inputs.

The policy (:mod:`recvision.ops.utils.dtypes`): the products run in bfloat16 (accumulating in float32 inside), the
states, decays, cumulative sums and normalisers in float32. Each form is compared with ITSELF in float32 on the
same values (inputs rounded to bfloat16 first, so only the arithmetic differs; the float32 forms are checked
against the references in each op's own test file): the output and the gradient of every input, driven by a
random upstream gradient. Tolerances are relative RMS errors (:func:`recvision.ops.utils.assert_close`, no
absolute shortcut): bfloat16 keeps 8 significant bits (a rounding error of up to 2^-9 = 2e-3 per product
operand), and the bounds are a few times that. A spy checks that
the products really ran in bfloat16. One long sequence (16384 tokens; the parallel retention form, O(T^2) in
memory, 4096) per op is marked slow.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from recvision.ops.additive import chunk_additive_torch, global_additive
from recvision.ops.md_lrpe import md_lrpe_cosine
from recvision.ops.md_tpe import md_tpe_torch
from recvision.ops.plstm2d import GATE_NAMES, chunk_plstm2d_torch, p_mode_gates, parallel_plstm2d
from recvision.ops.retention import (
    chunk_retention,
    chunk_retention_torch,
    fused_recurrent_retention_torch,
    parallel_retention,
)
from recvision.ops.utils import assert_close

OUTPUT_RATIO = 1.5e-2
GRAD_RATIO = 2.5e-2

_PRODUCTS = {"mm", "bmm", "addmm", "baddbmm", "addbmm", "matmul"}


class _ProductDtypes(TorchDispatchMode):
    """Records the dtypes of the operands of every matrix product run inside it."""

    def __init__(self) -> None:
        super().__init__()
        self.dtypes: set[torch.dtype] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        if func.overloadpacket.__name__ in _PRODUCTS:
            self.dtypes |= {a.dtype for a in args if isinstance(a, torch.Tensor)}
        return func(*args, **(kwargs or {}))


def _retention(fn: Callable, **kw: object) -> Callable:
    def call(q, k, v, g, h0):  # noqa: ANN001, ANN202
        o, ht = fn(q, k, v, g, None, h0, True, **kw)
        return o, ht

    return call


def _retention_inputs(T: int, H: int = 2, K: int = 16, V: int = 12) -> list[torch.Tensor]:
    q, k, v = (torch.randn(1, T, H, d) for d in (K, K, V))
    g = torch.log(torch.tensor([1 - 1 / 32, 1 - 1 / 512][:H]))
    return [q, k, v, g, torch.randn(1, H, K, V)]


def _additive(fn: Callable, **kw: object) -> Callable:
    def call(q, k, v, g):  # noqa: ANN001, ANN202
        return (fn(q, k, v, g, 0.25, **kw)[0],)

    return call


def _additive_inputs(T: int, H: int = 2, K: int = 16, V: int = 12) -> list[torch.Tensor]:
    return [torch.randn(1, T, H, K), torch.randn(1, T, H, K), torch.randn(1, T, H, V), torch.randn(1, T, H, K)]


def _plstm(fn: Callable, **kw: object) -> Callable:
    def call(q, k, v, *gates):  # noqa: ANN001, ANN202
        return (fn(q, k, v, *gates, **kw),)

    return call


def _plstm_inputs(X: int, Y: int, H: int = 1, K: int = 8, V: int = 8) -> list[torch.Tensor]:
    shape = (1, X, Y, H)
    gates = p_mode_gates(
        *(torch.sigmoid(torch.randn(shape)) for _ in range(1)),
        torch.tanh(torch.randn(shape)),
        *(torch.sigmoid(torch.randn(shape)) for _ in range(3)),
    )
    return [torch.randn(1, X, Y, H, K), torch.randn(1, X, Y, H, K), torch.randn(1, X, Y, H, V)] + [
        gates[name] for name in GATE_NAMES
    ]


def _md_tpe(causal: bool, **kw: object) -> Callable:
    def call(x, g):  # noqa: ANN001, ANN202
        return (md_tpe_torch(x, g, causal, **kw),)

    return call


def _md_tpe_inputs(H: int, W: int, heads: int = 2, head_dim: int = 6) -> list[torch.Tensor]:
    return [torch.randn(1, H, W, heads * head_dim), torch.log(torch.tensor([0.9, 0.99][:heads]))]


def _md_lrpe(grid: tuple[int, int], extra: int) -> Callable:
    def call(x, theta):  # noqa: ANN001, ANN202
        return (md_lrpe_cosine(x, theta, grid, extra),)

    return call


def _md_lrpe_inputs(T: int, H: int = 2, D: int = 8) -> list[torch.Tensor]:
    return [torch.randn(1, T, H, D), torch.rand(H, 4) * 0.5]


# (form, inputs, whether it has matrix products that must run in bfloat16); MD-TPE and MD-LRPE are elementwise
# (scans and rotations), so only their accuracy and dtypes are checked

CASES = {
    "retention-parallel": (_retention(parallel_retention), lambda: _retention_inputs(200), True),
    "retention-chunk_torch": (_retention(chunk_retention_torch, chunk_size=64), lambda: _retention_inputs(200), True),
    "retention-chunk": (_retention(chunk_retention, chunk_size=32), lambda: _retention_inputs(77), True),
    "retention-fused_recurrent_torch": (
        _retention(fused_recurrent_retention_torch),
        lambda: _retention_inputs(70),
        False,
    ),
    "additive-global": (_additive(global_additive), lambda: _additive_inputs(200), True),
    "additive-chunk_torch": (_additive(chunk_additive_torch, chunk_size=32), lambda: _additive_inputs(150), True),
    "plstm2d-chunk_torch": (_plstm(chunk_plstm2d_torch, chunk_size=4), lambda: _plstm_inputs(12, 10), True),
    "plstm2d-parallel": (_plstm(parallel_plstm2d), lambda: _plstm_inputs(8, 6), True),
    "md_tpe-bidirectional": (_md_tpe(False, chunk_size=4), lambda: _md_tpe_inputs(9, 11), False),
    "md_tpe-causal": (_md_tpe(True, chunk_size=4), lambda: _md_tpe_inputs(9, 11), False),
    "md_lrpe-cosine": (_md_lrpe((6, 7), 1), lambda: _md_lrpe_inputs(43), False),
}
LONG_CASES = {
    "retention-parallel": (_retention(parallel_retention), lambda: _retention_inputs(4096, H=1), True),
    "retention-chunk_torch": (_retention(chunk_retention_torch), lambda: _retention_inputs(16384), True),
    "retention-fused_recurrent_torch": (
        _retention(fused_recurrent_retention_torch),
        lambda: _retention_inputs(16384, H=1, K=8, V=8),
        False,
    ),
    "additive-global": (_additive(global_additive), lambda: _additive_inputs(16384), True),
    "additive-chunk_torch": (_additive(chunk_additive_torch), lambda: _additive_inputs(16384), True),
    "plstm2d-chunk_torch": (_plstm(chunk_plstm2d_torch, chunk_size=16), lambda: _plstm_inputs(128, 128), True),
    "md_tpe-bidirectional": (_md_tpe(False), lambda: _md_tpe_inputs(128, 128), False),
    "md_lrpe-cosine": (_md_lrpe((128, 128), 1), lambda: _md_lrpe_inputs(16385), False),
}


def _run(fn: Callable, inputs: list[torch.Tensor], grads_out: list[torch.Tensor], autocast: bool) -> list:
    """Outputs and the gradient of every floating input (``None`` where autograd gives none)."""
    leaves = [x.detach().clone().requires_grad_(True) for x in inputs]
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        outputs = fn(*leaves)
    loss = sum((o.float() * d).sum() for o, d in zip(outputs, grads_out, strict=True))
    loss.backward()
    return [*outputs, *(leaf.grad for leaf in leaves)]


def _check(fn: Callable, make_inputs: Callable, has_products: bool, mode: str) -> None:
    # round the inputs to bfloat16 values first: the float32 run then sees exactly what the bfloat16 run sees
    inputs = [x.bfloat16().float() for x in make_inputs()]
    with torch.no_grad():
        shapes = [o.shape for o in fn(*inputs)]
    grads_out = [torch.randn(s) for s in shapes]
    ref = _run(fn, inputs, grads_out, autocast=False)
    spy = _ProductDtypes()
    with spy:
        if mode == "autocast":
            got = _run(fn, inputs, grads_out, autocast=True)
        else:
            got = _run(fn, [x.bfloat16() for x in inputs], grads_out, autocast=False)
    if has_products:
        assert torch.bfloat16 in spy.dtypes, "no matrix product ran in bfloat16"
    n_out = len(shapes)
    for i, (r, t) in enumerate(zip(ref, got, strict=True)):
        if r is None:
            assert t is None
            continue
        name = f"output {i}" if i < n_out else f"grad of input {i - n_out}"
        assert torch.isfinite(t).all(), name
        assert_close(name, r, t, OUTPUT_RATIO if i < n_out else GRAD_RATIO, atol=0.0)
    # a bfloat16 input gives a bfloat16 output; the float32 state stays float32
    if mode == "bf16":
        assert got[0].dtype == torch.bfloat16


@pytest.mark.parametrize("mode", ["autocast", "bf16"])
@pytest.mark.parametrize("case", list(CASES))
def test_bf16_matches_fp32(case: str, mode: str) -> None:
    _check(*CASES[case], mode)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["autocast", "bf16"])
@pytest.mark.parametrize("case", list(LONG_CASES))
def test_bf16_long_sequence_matches_fp32(case: str, mode: str) -> None:
    _check(*LONG_CASES[case], mode)
