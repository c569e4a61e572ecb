"""Triton kernels of the additive recurrence (``chunk_additive(..., backend="triton")``) against the PyTorch reference.

Without a GPU the kernels run on CPU tensors under ``TRITON_INTERPRET=1`` (set in ``tests/conftest.py``), at about
1 ms per program instance, so the shapes here are small. Outputs and the gradients of q, k, v and g (driven by a
random upstream ``do``) are compared with :func:`naive_recurrent_additive` in float64 by relative RMS error.
bfloat16 is not tested: Triton's interpreter computes bfloat16 wrongly (values ~1e37); it needs a GPU (the wrapper
upcasts 16-bit inputs to float32 before the kernels anyway).
"""

from __future__ import annotations

import sys

import pytest
import torch
from aot_compile import check_compiles_for_nvidia

from recvision.ops.additive import chunk_additive, global_additive, naive_recurrent_additive
from recvision.ops.utils import assert_close

pytestmark = [pytest.mark.triton, pytest.mark.usefixtures("nan_poison")]

NAMES = ("o", "dq", "dk", "dv", "dg")


def _inputs(B: int, T: int, H: int, K: int, V: int, device: str, g_range: float = 6.0):
    """float64 ``q, k, v`` and ``g`` uniform in ``[-g_range, g_range]``."""
    q = torch.randn(B, T, H, K, dtype=torch.float64, device=device)
    k = torch.randn(B, T, H, K, dtype=torch.float64, device=device)
    v = torch.randn(B, T, H, V, dtype=torch.float64, device=device)
    g = (torch.rand(B, T, H, K, dtype=torch.float64, device=device) * 2 - 1) * g_range
    return q, k, v, g


def _run(fn, inputs, do, dtype, **kwargs) -> list[torch.Tensor | None]:
    q, k, v, g = (None if x is None else x.detach().to(dtype).requires_grad_(True) for x in inputs)
    o, state = fn(q, k, v, g, **kwargs)
    assert state is None and o.dtype == dtype
    (o.double() * do).sum().backward()
    return [o.detach(), q.grad, None if k is None else k.grad, v.grad, g.grad]


def _compare(B, T, H, K, V, device, dtype=torch.float32, ratio=2e-5, ratio_g=2e-4, with_k=True, g_range=6.0, **kw):
    q, k, v, g = _inputs(B, T, H, K, V, device, g_range)
    do = torch.randn(B, T, H, V, dtype=torch.float64, device=device)
    k_ref = k if with_k else torch.ones_like(q)
    ref = _run(naive_recurrent_additive, (q, k_ref, v, g), do, torch.float64)
    tri = _run(chunk_additive, (q, k if with_k else None, v, g), do, dtype, backend="triton", **kw)
    for name, r, t in zip(NAMES, ref, tri, strict=True):
        if name == "dk" and not with_k:
            assert t is None
            continue
        assert t.dtype == dtype, name
        # with T = 1 the true dg is 0: judge it by an absolute bound
        assert_close(name, r, t, ratio_g if name == "dg" else ratio, atol=1e-5 if name == "dg" else 0.0)


# (B, T, H, K, V, chunk_size)
CASES = [
    pytest.param(2, 1, 2, 16, 16, 16, id="B2-T1-H2-K16-V16-C16"),
    pytest.param(2, 17, 2, 24, 40, 16, id="B2-T17-H2-K24-V40-C16"),
    pytest.param(1, 64, 2, 16, 16, 16, id="B1-T64-H2-K16-V16-C16"),
    pytest.param(1, 70, 2, 16, 24, 32, id="B1-T70-H2-K16-V24-C32"),
    pytest.param(1, 200, 1, 16, 16, 64, id="B1-T200-H1-K16-V16-C64"),
    # K, V above one 64-wide block: the kernels loop over / split into K- and V-blocks
    pytest.param(1, 40, 1, 72, 80, 16, id="B1-T40-H1-K72-V80-C16"),
]


@pytest.mark.parametrize("B, T, H, K, V, chunk_size", CASES)
def test_chunk_additive_matches_naive(
    triton_device: str, B: int, T: int, H: int, K: int, V: int, chunk_size: int
) -> None:
    _compare(B, T, H, K, V, triton_device, chunk_size=chunk_size)


def test_float64_is_exact(triton_device: str) -> None:
    """float64 inputs run the kernels in float64: agreement to rounding, a sharp check of the formulas."""
    _compare(1, 37, 2, 24, 40, triton_device, torch.float64, ratio=1e-12, ratio_g=1e-12, chunk_size=16)


def test_key_none(triton_device: str) -> None:
    """``k=None`` (all ones): no dk, and dg collects both paths of g."""
    _compare(1, 37, 2, 16, 16, triton_device, with_k=False, chunk_size=16)


def test_large_log_weights(triton_device: str) -> None:
    """float32 with ``g`` in [-50, 50]: all exponents the kernels form are <= 0, nothing overflows."""
    _compare(1, 50, 2, 16, 16, triton_device, g_range=50.0, chunk_size=16)


def test_float16_and_scale(triton_device: str) -> None:
    """float16 inputs (upcast to float32 for the kernels) and a query scale; the reference sees the same inputs."""
    q, k, v, g = (x.half() for x in _inputs(1, 20, 2, 16, 16, triton_device))
    o, _ = chunk_additive(q, k, v, g, scale=0.3, chunk_size=16, backend="triton")
    assert o.dtype == torch.float16
    ref, _ = naive_recurrent_additive(q.double(), k.double(), v.double(), g.double(), scale=0.3)
    assert_close("o", ref, o, 2e-3)


def test_bfloat16(triton_device: str) -> None:
    # bfloat16 is silently wrong in Triton's interpreter (values ~1e37), so this only runs on a GPU
    if triton_device != "cuda":
        pytest.skip("bfloat16 is broken in Triton's interpreter; needs a GPU")
    q, k, v, g = (x.bfloat16() for x in _inputs(1, 40, 2, 16, 16, triton_device))
    o, _ = chunk_additive(q, k, v, g, chunk_size=16, backend="triton")
    assert o.dtype == torch.bfloat16
    ref, _ = naive_recurrent_additive(q.double(), k.double(), v.double(), g.double())
    assert_close("o", ref, o, 1e-2)


def test_non_contiguous_inputs(triton_device: str) -> None:
    B, T, H, K, V = 1, 20, 2, 16, 16
    q, k, g = (torch.randn(B, H, T, K, device=triton_device).transpose(1, 2) for _ in range(3))
    v = torch.randn(B, H, T, V, device=triton_device).transpose(1, 2)
    o, _ = chunk_additive(q, k, v, g, chunk_size=16, backend="triton")
    ref, _ = naive_recurrent_additive(q, k, v, g)
    assert_close("o", ref, o, 2e-5)


def test_non_causal_uses_the_global_form(triton_device: str) -> None:
    q, k, v, g = (x.float() for x in _inputs(1, 20, 2, 16, 16, triton_device))
    o, _ = chunk_additive(q, k, v, g, causal=False, backend="triton")
    ref, _ = global_additive(q, k, v, g)
    torch.testing.assert_close(o, ref, rtol=0, atol=0)


@pytest.mark.parametrize("chunk_size", [8, 48, 256])
def test_chunk_size_must_be_a_power_of_two_in_range(triton_device: str, chunk_size: int) -> None:
    q, k, v, g = (x.float() for x in _inputs(1, 4, 1, 16, 16, triton_device))
    with pytest.raises(ValueError, match="chunk_size"):
        chunk_additive(q, k, v, g, chunk_size=chunk_size, backend="triton")


def test_head_dim_limit(triton_device: str) -> None:
    q, k, v, g = (x.float() for x in _inputs(1, 2, 1, 264, 16, triton_device))
    with pytest.raises(ValueError, match="<= 256"):
        chunk_additive(q, k, v, g, backend="triton")


# ---------------------------------------------------------------------------------------------------------------
# Ahead-of-time compilation for NVIDIA targets: the interpreter runs kernels as numpy code and misses what only the
# compiler checks (loop-carried dtypes, tl.dot operand types, shared memory). Triton compiles to a cubin without a
# GPU, so every kernel is compiled for sm_90 and sm_80 in a child process without TRITON_INTERPRET.

SHARED_MEMORY_LIMIT = 101376


def _compile_all(arch: int) -> None:
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from recvision.ops.additive import triton_chunk as C
    from recvision.ops.common import chunk_o as O
    from recvision.ops.common import chunk_state as S
    from recvision.ops.common import triton_utils as U

    target = GPUTarget("cuda", arch, 32)

    def build(kernel, dt: str, constants: dict) -> None:
        signature, constexprs, attrs = {}, {}, {}
        for i, name in enumerate(kernel.arg_names):
            if name == "T":
                signature[name] = "i32"
            elif name == "scale":
                signature[name] = "fp32"
            elif name in constants:
                signature[name] = "constexpr"
                constexprs[name] = constants[name]
            else:
                signature[name] = "*" + dt
                attrs[(i,)] = [["tt.divisibility", 16]]
        compiled = triton.compile(
            ASTSource(kernel, signature, constexprs, attrs), target=target, options={"num_warps": 4, "num_stages": 2}
        )
        shared = compiled.metadata.shared
        assert shared <= SHARED_MEMORY_LIMIT, f"{kernel.__name__} {constants}: {shared} B of shared memory"

    for dtype, dt, K, V, BT in ((torch.float32, "fp32", 64, 64, 64), (torch.float64, "fp64", 24, 40, 16)):
        sizes = dict(H=4, K=K, V=V, BT=BT, BK=U.block_size(K), BV=U.block_size(V), ACC=U.acc_dtypes(dtype)[1])
        # the shared state walks and per-chunk kernels with per-key normalised decays (KEY_DECAY=True: no initial /
        # final states, dots on accumulation-dtype operands)
        walk = dict(sizes, DT=sizes["ACC"], PREC="ieee", KEY_DECAY=True)
        for kernel in (O.chunk_fwd_o_kernel, O.chunk_bwd_dv_kernel, O.chunk_bwd_dqk_kernel):
            build(kernel, dt, walk)
        build(S.chunk_fwd_h_kernel, dt, dict(walk, h0=None, ht=None, USE_INITIAL_STATE=False, STORE_FINAL_STATE=False))
        unused = dict(dht=None, dh0=None, scale=1.0, USE_FINAL_STATE_GRADIENT=False, STORE_INITIAL_STATE_GRADIENT=False)
        build(S.chunk_bwd_dh_kernel, dt, dict(walk, **unused))
        build(C.additive_fwd_A_kernel, dt, {n: sizes[n] for n in ("H", "K", "BT", "BK", "ACC")})


@pytest.mark.slow
def test_kernels_compile_for_nvidia_gpus(triton_device: str) -> None:
    """Compile all kernels to cubins for sm_90 (Hopper) and sm_80 (Ampere); no GPU needed."""
    check_compiles_for_nvidia(__file__)


if __name__ == "__main__":
    # python tests/ops/test_additive_triton.py --compile-for 90 80   (with TRITON_INTERPRET unset)
    if len(sys.argv) >= 3 and sys.argv[1] == "--compile-for":
        for arch in sys.argv[2:]:
            _compile_all(int(arch))
