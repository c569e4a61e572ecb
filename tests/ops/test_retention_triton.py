"""Triton retention kernels (chunk and fused recurrent) against the PyTorch step-by-step reference.

Without a GPU the kernels run on CPU tensors under ``TRITON_INTERPRET=1`` (set in ``tests/conftest.py``), at about
1 ms per program instance, so the shapes here are small. Forward outputs, final states and the gradients of q, k, v,
the log decays and the initial state (driven by random upstream ``do`` and ``dht``) are compared with relative RMS
error.
bfloat16 is not tested: Triton's interpreter computes bfloat16 wrongly (values ~1e37); it needs a GPU.
"""

from __future__ import annotations

import math
import sys

import pytest
import torch
from aot_compile import check_compiles_for_nvidia

from recvision.ops.retention import chunk_retention, fused_recurrent_retention, naive_recurrent_retention
from recvision.ops.utils import assert_close

pytestmark = [pytest.mark.triton, pytest.mark.usefixtures("nan_poison")]

# gamma = 1 - 1/32, 1 - 1/128, 1 - 1/512, 1 (g = 0) and a fast decay 0.25 (gamma^T underflows to 0 at T = 200)
GAMMAS = (1 - 1 / 32, 1 - 1 / 128, 1 - 1 / 512, 1.0, 0.25)


def _g_gamma(num_heads: int, device: str) -> torch.Tensor:
    return torch.tensor([math.log(GAMMAS[h % len(GAMMAS)]) for h in range(num_heads)], device=device)


def _inputs(B: int, T: int, H: int, K: int, V: int, dtype: torch.dtype, device: str, use_h0: bool):
    q = torch.randn(B, T, H, K, dtype=dtype, device=device)
    k = torch.randn(B, T, H, K, dtype=dtype, device=device)
    v = torch.randn(B, T, H, V, dtype=dtype, device=device)
    h0 = torch.randn(B, H, K, V, dtype=torch.float32, device=device) if use_h0 else None
    return q, k, v, h0


def _run(fn, q, k, v, g, h0, output_final_state, do, dht, grad_g, **kwargs):
    """Forward + backward; returns ``[o, ht, dq, dk, dv, dh0, dg]`` (``None`` where absent)."""
    leaves = [x.detach().clone().requires_grad_(True) if x is not None else None for x in (q, k, v, h0)]
    q, k, v, h0 = leaves
    g = g.detach().clone().requires_grad_(grad_g)
    o, ht = fn(q, k, v, g, initial_state=h0, output_final_state=output_final_state, **kwargs)
    loss = (o.float() * do).sum()
    if output_final_state:
        assert ht is not None and ht.dtype == (torch.float64 if q.dtype == torch.float64 else torch.float32)
        loss = loss + (ht * dht).sum()
    else:
        assert ht is None
    loss.backward()
    return [o, ht, q.grad, k.grad, v.grad, None if h0 is None else h0.grad, g.grad]


def _compare(
    fn, B, T, H, K, V, device, use_h0, output_final_state, dtype=torch.float32, ratio=1e-4, grad_g=True, **kwargs
):
    q, k, v, h0 = _inputs(B, T, H, K, V, dtype, device, use_h0)
    g = _g_gamma(H, device).to(torch.float64 if dtype == torch.float64 else torch.float32)
    do = torch.randn(B, T, H, V, device=device, dtype=torch.float64 if dtype == torch.float64 else torch.float32)
    dht = torch.randn(B, H, K, V, device=device, dtype=do.dtype)
    ref = _run(naive_recurrent_retention, q, k, v, g, h0, output_final_state, do, dht, grad_g)
    tri = _run(fn, q, k, v, g, h0, output_final_state, do, dht, grad_g, **kwargs)
    assert tri[0].dtype == dtype
    for name, r, t in zip(("o", "ht", "dq", "dk", "dv", "dh0", "dg"), ref, tri, strict=True):
        if r is None:
            assert t is None, name
            continue
        assert t.dtype == r.dtype, name
        assert_close(name, r, t, ratio)


# (B, T, H, K, V, chunk_size, initial state, output final state)
CHUNK_CASES = [
    pytest.param(2, 1, 4, 24, 40, 64, True, True, id="B2-T1-H4-K24-V40-C64-h0-ht"),
    pytest.param(2, 17, 4, 24, 40, 16, False, False, id="B2-T17-H4-K24-V40-C16"),
    pytest.param(1, 17, 5, 24, 40, 16, True, True, id="B1-T17-H5-K24-V40-C16-h0-ht"),
    pytest.param(1, 64, 4, 24, 40, 64, True, False, id="B1-T64-H4-K24-V40-C64-h0"),
    pytest.param(1, 64, 4, 24, 40, 16, False, True, id="B1-T64-H4-K24-V40-C16-ht"),
    pytest.param(1, 200, 5, 24, 40, 64, True, True, id="B1-T200-H5-K24-V40-C64-h0-ht"),
    pytest.param(1, 200, 2, 16, 16, 16, False, True, id="B1-T200-H2-K16-V16-C16-ht"),
    # K, V above one 64-wide block: the kernels loop over / split into K- and V-blocks
    pytest.param(1, 40, 2, 72, 80, 16, True, True, id="B1-T40-H2-K72-V80-C16-h0-ht"),
]


@pytest.mark.parametrize("B, T, H, K, V, chunk_size, use_h0, output_final_state", CHUNK_CASES)
def test_chunk_retention_matches_recurrent(
    triton_device: str, B: int, T: int, H: int, K: int, V: int, chunk_size: int, use_h0: bool, output_final_state: bool
) -> None:
    _compare(
        chunk_retention,
        B,
        T,
        H,
        K,
        V,
        triton_device,
        use_h0,
        output_final_state,
        chunk_size=chunk_size,
        backend="triton",
    )


def test_chunk_retention_narrow_state_blocks(triton_device: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """With few batches x heads per GPU the state kernels switch to 32-wide K/V blocks; force that path here."""
    from recvision.ops.common import triton_utils

    monkeypatch.setattr(triton_utils, "num_sms", lambda device: 1 << 20)
    assert triton_utils.state_blocks(72, 80, 2, torch.device(triton_device)) == (32, 32)
    _compare(chunk_retention, 1, 40, 2, 72, 80, triton_device, True, True, chunk_size=16, backend="triton")


# (B, T, H, K, V, initial state, output final state)
RECURRENT_CASES = [
    pytest.param(2, 1, 4, 24, 40, True, True, id="B2-T1-H4-K24-V40-h0-ht"),
    pytest.param(2, 17, 5, 24, 40, False, False, id="B2-T17-H5-K24-V40"),
    pytest.param(1, 64, 4, 24, 40, True, False, id="B1-T64-H4-K24-V40-h0"),
    pytest.param(1, 200, 5, 24, 40, True, True, id="B1-T200-H5-K24-V40-h0-ht"),
    # V = 80 with K = 72: the state block is split into V-blocks (dq: K-blocks), dk is summed over V-blocks
    pytest.param(1, 20, 2, 72, 80, False, True, id="B1-T20-H2-K72-V80-ht"),
]


@pytest.mark.parametrize("B, T, H, K, V, use_h0, output_final_state", RECURRENT_CASES)
def test_fused_recurrent_retention_matches_recurrent(
    triton_device: str, B: int, T: int, H: int, K: int, V: int, use_h0: bool, output_final_state: bool
) -> None:
    _compare(
        fused_recurrent_retention,
        B,
        T,
        H,
        K,
        V,
        triton_device,
        use_h0,
        output_final_state,
        backend="triton",
    )


@pytest.mark.parametrize("op", ["chunk", "fused_recurrent"])
def test_float64_is_exact(triton_device: str, op: str) -> None:
    """float64 inputs run the kernels in float64: agreement to rounding, a sharp check of the formulas."""
    fn = chunk_retention if op == "chunk" else fused_recurrent_retention
    kwargs = {"chunk_size": 16} if op == "chunk" else {}
    _compare(fn, 1, 37, 3, 24, 40, triton_device, True, True, torch.float64, ratio=1e-12, backend="triton", **kwargs)


@pytest.mark.parametrize("op", ["chunk", "fused_recurrent"])
@pytest.mark.parametrize("grad_g", [False, True], ids=["const-decay", "learnt-decay"])
def test_float16(triton_device: str, op: str, grad_g: bool) -> None:
    """float16 inputs (float32 state and accumulation); the reference sees the same float16-rounded inputs.

    Without a decay gradient dq and dk are written in float16 directly, with one they pass through float32.
    """
    fn = chunk_retention if op == "chunk" else fused_recurrent_retention
    kwargs = {"chunk_size": 16} if op == "chunk" else {}
    _compare(fn, 1, 40, 3, 24, 40, triton_device, True, True, torch.float16, 5e-3, grad_g, backend="triton", **kwargs)


@pytest.mark.parametrize("op", ["chunk", "fused_recurrent"])
def test_non_contiguous_inputs_and_default_decay(triton_device: str, op: str) -> None:
    """Transposed views are made contiguous by the guard; ``g_gamma=None`` and ``scale`` are resolved as in torch."""
    B, T, H, K, V = 1, 20, 3, 16, 16
    q, k = (torch.randn(B, H, T, K, device=triton_device).transpose(1, 2) for _ in range(2))
    v = torch.randn(B, H, T, V, device=triton_device).transpose(1, 2)
    fn = chunk_retention if op == "chunk" else fused_recurrent_retention
    kwargs = {"chunk_size": 16} if op == "chunk" else {}
    o, ht = fn(q, k, v, scale=0.3, output_final_state=True, backend="triton", **kwargs)
    ref_o, ref_ht = naive_recurrent_retention(q, k, v, scale=0.3, output_final_state=True)
    assert_close("o", ref_o, o, 1e-4)
    assert_close("ht", ref_ht, ht, 1e-4)


def test_torch_backend_is_the_reference(triton_device: str) -> None:
    q, k, v, h0 = _inputs(1, 9, 2, 16, 16, torch.float32, triton_device, True)
    o, ht = chunk_retention(q, k, v, initial_state=h0, output_final_state=True, chunk_size=4, backend="torch")
    ref_o, ref_ht = naive_recurrent_retention(q, k, v, initial_state=h0, output_final_state=True)
    assert_close("o", ref_o, o, 1e-5)
    assert_close("ht", ref_ht, ht, 1e-5)


@pytest.mark.parametrize("chunk_size", [8, 48, 512])
def test_chunk_size_must_be_a_power_of_two_in_range(triton_device: str, chunk_size: int) -> None:
    q, k, v, _ = _inputs(1, 4, 1, 16, 16, torch.float32, triton_device, False)
    with pytest.raises(ValueError, match="chunk_size"):
        chunk_retention(q, k, v, chunk_size=chunk_size, backend="triton")


@pytest.mark.parametrize("op", ["chunk", "fused_recurrent"])
def test_head_dim_limit(triton_device: str, op: str) -> None:
    fn = chunk_retention if op == "chunk" else fused_recurrent_retention
    q, k, v, _ = _inputs(1, 2, 1, 264, 16, torch.float32, triton_device, False)
    with pytest.raises(ValueError, match="<= 256"):
        fn(q, k, v, backend="triton")


@pytest.mark.parametrize("op", ["chunk", "fused_recurrent"])
def test_constant_decay_and_no_final_state(triton_device: str, op: str) -> None:
    """The path without a decay gradient (dq, dk written directly) and without ``dht``."""
    fn = chunk_retention if op == "chunk" else fused_recurrent_retention
    kwargs = {"chunk_size": 16} if op == "chunk" else {}
    _compare(fn, 2, 23, 3, 24, 40, triton_device, True, False, grad_g=False, backend="triton", **kwargs)


# ---------------------------------------------------------------------------------------------------------------
# Ahead-of-time compilation for NVIDIA targets. The interpreter runs kernels as numpy code and misses what only the
# compiler checks (loop-carried dtypes, tl.dot operand types, shared memory). Triton can compile to a cubin without
# a GPU, so every kernel variant is compiled for sm_90 and sm_80 in a child process without TRITON_INTERPRET.

# sm_80/sm_86 limits on dynamic shared memory per block (bytes); the kernels should also fit consumer GPUs
SHARED_MEMORY_LIMIT = 101376


def _compile_all(arch: int) -> None:
    """Compile every kernel variant for ``sm_<arch>`` and check its shared memory (run without TRITON_INTERPRET)."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from recvision.ops.common import chunk_o as O
    from recvision.ops.common import chunk_state as S
    from recvision.ops.common import triton_utils as U
    from recvision.ops.retention import triton_fused_recurrent as F

    target = GPUTarget("cuda", arch, 32)
    names = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16", torch.float64: "fp64"}

    def build(kernel, pointers: dict, scalars: dict, constants: dict, num_stages: int) -> None:
        signature, constexprs, attrs = {}, {}, {}
        for i, name in enumerate(kernel.arg_names):
            if name in pointers and pointers[name] is not None:
                signature[name] = "*" + pointers[name]
                attrs[(i,)] = [["tt.divisibility", 16]]
            elif name in scalars:
                signature[name] = scalars[name]
            else:
                signature[name] = "constexpr"
                constexprs[name] = constants.get(name)
        compiled = triton.compile(
            ASTSource(kernel, signature, constexprs, attrs),
            target=target,
            options={"num_warps": 4, "num_stages": num_stages},
        )
        shared = compiled.metadata.shared
        assert shared <= SHARED_MEMORY_LIMIT, f"{kernel.__name__} {constants}: {shared} B of shared memory"

    # float32 dots use input_precision="ieee" (FMA code, slow to compile): keep its blocks small
    cases = [
        (torch.float32, 40, 72, 32),
        (torch.bfloat16, 64, 64, 64),
        (torch.float16, 256, 256, 64),
        (torch.float64, 24, 40, 16),
    ]
    for index, (dtype, K, V, BT) in enumerate(cases):
        dt = names[dtype]
        acc = names[U.kernel_dtypes(dtype)[0]]
        _, ACC, DT, PREC = U.kernel_dtypes(dtype)
        stages = U.num_stages(dtype)
        sizes = dict(H=12, K=K, V=V, BT=BT, ACC=ACC, DT=DT, PREC=PREC)
        blocks = dict(sizes, BK=U.block_size(K), BV=U.block_size(V))
        # all flag and block variants of the state kernels for the first case, the usual ones for the others
        for state_block in (U.MAX_BLOCK, 32) if index == 0 else (U.MAX_BLOCK,):
            state = dict(sizes, BK=U.block_size(K, state_block), BV=U.block_size(V, state_block))
            for flag in (True, False) if index == 0 else (True,):
                # the shared state walks with one decay per head (KEY_DECAY=False, no z)
                build(
                    S.chunk_fwd_h_kernel,
                    dict(k=dt, v=dt, g=acc, z=None, h=acc, h0="fp32" if flag else None, ht=acc if flag else None),
                    dict(T="i32"),
                    dict(state, KEY_DECAY=False, USE_INITIAL_STATE=flag, STORE_FINAL_STATE=flag),
                    stages,
                )
                build(
                    S.chunk_bwd_dh_kernel,
                    dict(q=dt, do=dt, g=acc, z=None, dh=acc, dht="fp32" if flag else None, dh0=acc if flag else None),
                    dict(T="i32", scale="fp32"),
                    dict(state, KEY_DECAY=False, USE_FINAL_STATE_GRADIENT=flag, STORE_INITIAL_STATE_GRADIENT=flag),
                    stages,
                )
        scalars = dict(T="i32", scale="fp32")
        # the shared per-chunk kernels with one decay per head (KEY_DECAY=False: no z, no precomputed scores)
        chunk = dict(blocks, KEY_DECAY=False)
        build(O.chunk_fwd_o_kernel, dict(q=dt, k=dt, v=dt, h=acc, g=acc, o=dt), scalars, chunk, stages)
        build(O.chunk_bwd_dv_kernel, dict(q=dt, k=dt, do=dt, dh=acc, g=acc, dv=dt), scalars, chunk, stages)
        build(
            O.chunk_bwd_dqk_kernel,
            dict(q=dt, k=dt, v=dt, h=acc, do=dt, dh=acc, g=acc, dq=dt, dk=dt),
            scalars,
            chunk,
            stages,
        )
        BK_full, BV_split = F._blocks(K, V)
        BV_full, BK_split = F._blocks(V, K)
        rec = dict(H=12, K=K, V=V, ACC=ACC)
        build(
            F.fused_recurrent_retention_fwd_kernel,
            dict(x=dt, k=dt, v=dt, g=acc, y=dt, h0="fp32", ht=acc),
            scalars,
            dict(rec, BK=BK_full, BV=BV_split, USE_INITIAL_STATE=True, STORE_FINAL_STATE=True, DQ=False),
            3,
        )
        # the same walk replayed for dq
        build(
            F.fused_recurrent_retention_fwd_kernel,
            dict(x=dt, k=dt, v=dt, g=acc, y=dt, h0="fp32", ht=None),
            scalars,
            dict(rec, BK=BK_split, BV=BV_full, USE_INITIAL_STATE=True, STORE_FINAL_STATE=False, DQ=True),
            3,
        )
        build(
            F.fused_recurrent_retention_bwd_dkv_kernel,
            dict(q=dt, k=dt, v=dt, g=acc, do=dt, dk=acc, dv=dt, dht="fp32", dh0=acc),
            dict(scalars, B="i32"),
            dict(rec, BK=BK_full, BV=BV_split, USE_FINAL_STATE_GRADIENT=True, STORE_INITIAL_STATE_GRADIENT=True),
            3,
        )


@pytest.mark.slow
def test_kernels_compile_for_nvidia_gpus(triton_device: str) -> None:
    """Compile all kernel variants to cubins for sm_90 (Hopper) and sm_80 (Ampere); no GPU needed."""
    check_compiles_for_nvidia(__file__)


if __name__ == "__main__":
    # python tests/ops/test_retention_triton.py --compile-for 90 80   (with TRITON_INTERPRET unset)
    if len(sys.argv) >= 3 and sys.argv[1] == "--compile-for":
        for arch in sys.argv[2:]:
            _compile_all(int(arch))
