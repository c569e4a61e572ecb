"""Chunked 2-D pLSTM Triton kernels (``chunk_plstm2d_triton``) against the cell-by-cell reference ``naive_plstm2d``.

Without a GPU the kernels run on CPU tensors under ``TRITON_INTERPRET=1`` (set in ``tests/conftest.py``). The output
and the gradients of all twelve inputs (driven by a random upstream ``do``) are compared with relative RMS error.
The grids are chosen to give several chunks and partial chunks; some head dims give several DV blocks (partial sums
over them) and several cell blocks per chunk. Fresh buffers are NaN-poisoned, so a state or gradient a kernel
forgets to write (or reads unmasked) fails. bfloat16 is not tested here: Triton's interpreter computes bfloat16
wrongly; it needs a GPU.
"""

from __future__ import annotations

import sys

import pytest
import torch
from aot_compile import check_compiles_for_nvidia
from plstm2d_testing import (
    DTYPE_NAMES,
    RATIO,
    aot_build,
    check_rejects_bad_inputs,
    compare_options,
    compare_partial_grads,
    compare_with_naive,
    random_inputs,
)

from recvision.ops.plstm2d import naive_plstm2d
from recvision.ops.plstm2d.triton_chunk import chunk_plstm2d_triton, triton_chunk_sides
from recvision.ops.utils import assert_close

pytestmark = [pytest.mark.triton, pytest.mark.usefixtures("nan_poison")]


# (B, X, Y, H, K, V, gate mode, chunk_size); grids with several chunks are not multiples of the chunk side
CASES = [
    pytest.param(2, 1, 1, 1, 16, 8, "P", None, id="1x1-P"),
    pytest.param(1, 1, 6, 2, 16, 8, "free", 4, id="1x6-free-c4"),
    pytest.param(1, 3, 5, 2, 16, 8, "P", 4, id="3x5-P-c4"),
    pytest.param(1, 7, 9, 1, 16, 8, "DL", 4, id="7x9-DL-c4"),
    pytest.param(2, 9, 6, 1, 16, 8, "DR", 4, id="9x6-DR-c4"),
    pytest.param(1, 9, 6, 1, 16, 8, "free", 4, id="9x6-free-c4"),
    pytest.param(1, 9, 6, 2, 16, 8, "P", 8, id="9x6-P-c8"),
    pytest.param(1, 7, 9, 1, 16, 8, "DR", 8, id="7x9-DR-c8"),
    # non-power-of-two K and V (masked tiles); K = 128 gives two DV blocks and two cell blocks per 8x8 chunk
    pytest.param(1, 5, 6, 1, 24, 12, "free", 4, id="5x6-free-K24-V12"),
    pytest.param(1, 9, 6, 1, 128, 40, "P", 8, id="9x6-P-K128-V40-c8", marks=pytest.mark.slow),
    pytest.param(1, 7, 9, 2, 16, 8, "free", 8, id="7x9-free-c8", marks=pytest.mark.slow),
    pytest.param(1, 17, 5, 1, 8, 4, "DL", 16, id="17x5-DL-c16", marks=pytest.mark.slow),
]


@pytest.mark.parametrize("B, X, Y, H, K, V, mode, chunk_size", CASES)
def test_triton_chunk_matches_naive(triton_device, B, X, Y, H, K, V, mode, chunk_size):
    inputs = random_inputs(B, X, Y, H, K, V, mode, triton_device)
    compare_with_naive(chunk_plstm2d_triton, inputs, RATIO[torch.float32], chunk_size=chunk_size)


@pytest.mark.parametrize("mode, gate_dtype", [("P", None), ("DL", torch.float32)])
def test_float16(triton_device, mode, gate_dtype):
    """float16 inputs (float32 states); the reference computes on the same float16 values in float32."""
    inputs = random_inputs(1, 9, 6, 2, 16, 8, mode, triton_device, torch.float16, gate_dtype)
    compare_with_naive(chunk_plstm2d_triton, inputs, RATIO[torch.float16], chunk_size=4)


@pytest.mark.parametrize("K, V, chunk_size", [(8, 4, 4), (32, 80, 8)], ids=["K8-V4-c4", "K32-V80-c8"])
def test_float64_is_exact(triton_device, K, V, chunk_size):
    """float64 inputs run the kernels in float64: agreement to rounding, a sharp check of every formula. With
    K = 32, V = 80 (float64 tiles) there are two DV blocks, two cell blocks per 8x8 chunk and two sweep row blocks."""
    inputs = random_inputs(1, 9, 7, 1, K, V, "free", triton_device, torch.float64)
    compare_with_naive(
        chunk_plstm2d_triton, inputs, RATIO[torch.float64], ref_dtype=torch.float64, scale=0.7, chunk_size=chunk_size
    )


def test_chunk_sides():
    """Sides are clipped to the grid's power-of-two size, then raised to 4 (the smallest ``tl.dot`` tile)."""
    assert triton_chunk_sides(1, 1, None) == (4, 4)
    assert triton_chunk_sides(9, 100, None) == (8, 8)
    assert triton_chunk_sides(5, 100, 16) == (8, 16)
    assert triton_chunk_sides(30, 30, 2) == (4, 4)


def test_chunk_size_does_not_change_the_result(triton_device):
    """Chunk sides 2 (raised to 4), 4 and 8 give the same output and gradients up to rounding."""
    inputs = random_inputs(1, 6, 9, 1, 16, 8, "free", triton_device)
    compare_options(chunk_plstm2d_triton, inputs, [dict(chunk_size=c) for c in (4, 2, 8)], 1e-5)


def test_partial_grads_no_grad_and_non_contiguous(triton_device):
    """Only some inputs need gradients; no_grad saves nothing; transposed views are handled."""
    B, X, Y, H, K, V = 1, 5, 6, 2, 16, 8
    inputs = list(random_inputs(B, X, Y, H, K, V, "P", triton_device))
    inputs[0] = torch.randn(B, H, Y, X, K, device=triton_device).permute(0, 3, 2, 1, 4)  # q, not contiguous
    assert not inputs[0].is_contiguous()
    compare_partial_grads(chunk_plstm2d_triton, inputs, (0, 5), RATIO[torch.float32], chunk_size=4)
    compare_partial_grads(chunk_plstm2d_triton, inputs, (9,), RATIO[torch.float32], chunk_size=4)


def test_saved_memory_is_linear_in_the_cells(triton_device):
    """What autograd keeps grows ~4x when the grid side doubles, and the kernels' boundary states are
    ``E DK DV`` floats per chunk (no per-cell state)."""
    from test_plstm2d import _saved_bytes

    K = V = 16

    def saved_at(side: int) -> tuple[int, int]:
        leaves = [x.requires_grad_(True) for x in random_inputs(1, side, side, 1, K, V, "P", triton_device)]
        return _saved_bytes(lambda: chunk_plstm2d_triton(*leaves, chunk_size=4))

    total8, _ = saved_at(8)
    total16, largest16 = saved_at(16)
    assert total16 < 4.5 * total8
    assert largest16 == (16 // 4) ** 2 * (4 + 4) * K * V * 4  # the outgoing states of the 16 chunks, float32


def test_matches_pytorch_chunk_form(triton_device):
    """Forward agreement with the PyTorch chunk form at the same chunk side (another implementation)."""
    from recvision.ops.plstm2d import chunk_plstm2d_torch

    inputs = random_inputs(1, 10, 7, 2, 16, 8, "DL", triton_device)
    expected = chunk_plstm2d_torch(*inputs, chunk_size=4)
    assert_close("o", expected, chunk_plstm2d_triton(*inputs, chunk_size=4), RATIO[torch.float32])


def test_dispatcher_runs_the_chunk_kernels(triton_device, monkeypatch: pytest.MonkeyPatch):
    """``plstm2d(..., backend="triton")`` reaches ``chunk_plstm2d_triton`` and passes ``chunk_size`` on."""
    from recvision.ops.plstm2d import plstm2d
    from recvision.ops.plstm2d import triton_chunk as module

    calls = []
    original = module.chunk_plstm2d_triton

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return original(*args, **kwargs)

    monkeypatch.setattr(module, "chunk_plstm2d_triton", spy)
    inputs = random_inputs(1, 5, 3, 1, 8, 4, "P", triton_device)
    assert_close("o", naive_plstm2d(*inputs), plstm2d(*inputs, backend="triton", chunk_size=4), RATIO[torch.float32])
    assert calls == [dict(scale=None, chunk_size=4)]


def test_gradcheck(triton_device):
    """Finite differences in float64 on two chunks (5 x 3 cells, chunk side 4)."""
    inputs = random_inputs(1, 5, 3, 1, 4, 2, "free", triton_device, torch.float64)
    inputs = [x.requires_grad_(True) for x in inputs]
    assert torch.autograd.gradcheck(lambda *a: chunk_plstm2d_triton(*a, chunk_size=4), inputs, fast_mode=True)


@pytest.mark.parametrize("chunk_size", [0, -2, 3, 2.5, True])
def test_bad_chunk_size(triton_device, chunk_size):
    inputs = random_inputs(1, 2, 2, 1, 4, 4, "P", triton_device)
    with pytest.raises(ValueError, match="chunk_size"):
        chunk_plstm2d_triton(*inputs, chunk_size=chunk_size)


def test_bad_inputs(triton_device):
    check_rejects_bad_inputs(chunk_plstm2d_triton, triton_device)


def test_cpu_tensors_need_the_interpreter(monkeypatch: pytest.MonkeyPatch):
    from recvision.ops.plstm2d import triton_chunk as module

    monkeypatch.setattr(module, "_interpreted", lambda: False)
    with pytest.raises(ValueError, match="needs CUDA tensors"):
        chunk_plstm2d_triton(*random_inputs(1, 2, 2, 1, 4, 4, "P", "cpu"))


# ---------------------------------------------------------------------------------------------------------------
# Ahead-of-time compilation for NVIDIA targets (see tests/ops/aot_compile.py): the interpreter misses what only the
# compiler checks (loop-carried types, masks, reductions, register and shared-memory limits).


def _compile_all(arch: int) -> None:
    """Compile every kernel for ``sm_<arch>`` at the tiles of several head dims, chunk sides and dtypes."""
    from recvision.ops.plstm2d import triton_chunk as C

    scalars = dict(NCH="i32", NTOT="i32", i_lo="i32", d="i32", NX="i32", NY="i32")
    for dtype, K, V, side in (
        (torch.bfloat16, 64, 64, 8),
        (torch.float16, 256, 200, 16),
        (torch.float32, 24, 40, 4),
        (torch.float64, 32, 32, 8),
    ):
        acc = C.compute_dtype(dtype)
        BK, BV, BC = C._tiles(K, V, side * side, acc)
        meta = dict(K=K, V=V, BK=BK, BV=BV, BC=BC, PREC=C._dot_precision(dtype))
        warps = C._num_warps(BC, BK, BV)
        # every pointer argument of the kernels; all tensors are in the accumulation dtype
        pointers = dict.fromkeys("q k v g t s m o h do dh dq dk dv dg dt ds dm a b w".split(), DTYPE_NAMES[acc])
        cells, edges = dict(meta, C=side * side), dict(meta, BX=side, BY=side)
        aot_build(C.chunk_plstm2d_intra_fwd_kernel, arch, pointers, scalars, cells, warps)
        aot_build(C.chunk_plstm2d_intra_bwd_kernel, arch, pointers, scalars, cells, warps)
        aot_build(C.chunk_plstm2d_marks_kernel, arch, pointers, scalars, edges, warps)
        aot_build(C.chunk_plstm2d_inter_bwd_kernel, arch, pointers, scalars, edges, warps)
        for adjoint in (False, True):
            aot_build(C.chunk_plstm2d_sources_kernel, arch, pointers, scalars, dict(edges, ADJOINT=adjoint), warps)
            sweep = dict(edges, BKS=C.SWEEP_ROWS, ADJOINT=adjoint)
            aot_build(C.chunk_plstm2d_sweep_kernel, arch, pointers, scalars, sweep, 4)


@pytest.mark.slow
def test_kernels_compile_for_nvidia_gpus(triton_device: str) -> None:
    """Compile all kernels to cubins for sm_90 (Hopper) and sm_80 (Ampere); no GPU needed."""
    check_compiles_for_nvidia(__file__)


if __name__ == "__main__":
    # python tests/ops/test_plstm2d_triton.py --compile-for 90 80   (with TRITON_INTERPRET unset)
    if len(sys.argv) >= 3 and sys.argv[1] == "--compile-for":
        for arch in sys.argv[2:]:
            _compile_all(int(arch))
