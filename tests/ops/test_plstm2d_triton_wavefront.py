"""2-D pLSTM Triton kernels (``triton_wavefront_plstm2d``) against the cell-by-cell reference ``naive_plstm2d``.

Without a GPU the kernels run on CPU tensors under ``TRITON_INTERPRET=1`` (set in ``tests/conftest.py``), at several
milliseconds per program instance (one per cell, batch and head, per launch), so the grids are small. The output
and the gradients of all twelve inputs (driven by a random upstream ``do``) are compared with relative RMS error.
Fresh buffers are NaN-poisoned, so a state or gradient a kernel forgets to write (or reads unmasked) fails.
bfloat16 is not tested here: Triton's interpreter computes bfloat16 wrongly; it needs a GPU.
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

from recvision.ops.plstm2d import GATE_NAMES
from recvision.ops.plstm2d.triton_wavefront import triton_wavefront_plstm2d
from recvision.ops.utils import assert_close

pytestmark = [pytest.mark.triton, pytest.mark.usefixtures("nan_poison")]


def _compare(inputs, ratio, ref_dtype=torch.float32, **kwargs):
    compare_with_naive(triton_wavefront_plstm2d, inputs, ratio, ref_dtype, **kwargs)


# (B, X, Y, H, K, V, gate mode, chunk_size): the chunk sizes divide the number X + Y - 1 of diagonals or not
CASES = [
    pytest.param(2, 1, 1, 1, 16, 8, "P", None, id="1x1-P"),
    pytest.param(1, 1, 4, 2, 16, 8, "free", 2, id="1x4-free-c2"),
    pytest.param(1, 5, 1, 1, 16, 8, "free", 3, id="5x1-free-c3"),
    pytest.param(1, 3, 5, 2, 16, 8, "P", 3, id="3x5-P-c3"),
    pytest.param(1, 3, 5, 2, 16, 8, "DL", 7, id="3x5-DL-c7"),
    pytest.param(2, 3, 5, 1, 16, 8, "DR", 1, id="3x5-DR-c1"),
    pytest.param(1, 3, 5, 2, 16, 8, "free", 100, id="3x5-free-c100"),
    pytest.param(1, 7, 9, 1, 16, 8, "DL", 4, id="7x9-DL-c4"),
    pytest.param(1, 8, 8, 1, 16, 8, "P", None, id="8x8-P"),
    pytest.param(1, 9, 6, 1, 16, 8, "DR", 7, id="9x6-DR-c7"),
    pytest.param(1, 9, 6, 1, 16, 8, "free", 5, id="9x6-free-c5"),
    # non-power-of-two K, and V over two blocks (DK = 64 gives 32-wide V blocks)
    pytest.param(1, 4, 3, 1, 24, 12, "free", 2, id="4x3-free-K24-V12"),
    pytest.param(1, 3, 4, 1, 64, 40, "P", 2, id="3x4-P-K64-V40"),
    pytest.param(1, 7, 9, 2, 16, 8, "P", 5, id="7x9-P-c5", marks=pytest.mark.slow),
    pytest.param(1, 8, 8, 2, 16, 8, "DR", 3, id="8x8-DR-c3", marks=pytest.mark.slow),
    pytest.param(2, 9, 6, 1, 16, 8, "DL", None, id="9x6-DL", marks=pytest.mark.slow),
]


@pytest.mark.parametrize("B, X, Y, H, K, V, mode, chunk_size", CASES)
def test_triton_matches_naive(triton_device, B, X, Y, H, K, V, mode, chunk_size):
    inputs = random_inputs(B, X, Y, H, K, V, mode, triton_device)
    _compare(inputs, RATIO[torch.float32], chunk_size=chunk_size)


@pytest.mark.parametrize(
    "X, Y, mode, gate_dtype",
    [(3, 5, "P", None), pytest.param(9, 6, "DL", torch.float32, id="9-6-DL-fp32gates", marks=pytest.mark.slow)],
)
def test_float16(triton_device, X, Y, mode, gate_dtype):
    """float16 inputs (float32 states); the reference computes on the same float16 values in float32."""
    inputs = random_inputs(1, X, Y, 2, 16, 8, mode, triton_device, torch.float16, gate_dtype)
    _compare(inputs, RATIO[torch.float16])


def test_float64_is_exact(triton_device):
    """float64 inputs run the kernels in float64: agreement to rounding, a sharp check of every formula."""
    inputs = random_inputs(1, 4, 5, 1, 8, 4, "free", triton_device, torch.float64)
    _compare(inputs, RATIO[torch.float64], ref_dtype=torch.float64, scale=0.7, chunk_size=3)


def test_chunk_size_does_not_change_the_result(triton_device):
    """The checkpoint interval only trades memory for recomputation: the gradients agree to rounding."""
    inputs = random_inputs(1, 4, 3, 1, 8, 4, "free", triton_device)
    compare_options(triton_wavefront_plstm2d, inputs, [dict(chunk_size=c) for c in (1, 2, 6)], 1e-6)


def test_partial_grads_no_grad_and_non_contiguous(triton_device):
    """Only some inputs need gradients; no_grad skips the checkpoints; transposed views are made contiguous."""
    B, X, Y, H, K, V = 1, 3, 4, 2, 16, 8
    inputs = list(random_inputs(B, X, Y, H, K, V, "P", triton_device))
    inputs[0] = torch.randn(B, H, Y, X, K, device=triton_device).permute(0, 3, 2, 1, 4)  # q, not contiguous
    assert not inputs[0].is_contiguous()
    compare_partial_grads(triton_wavefront_plstm2d, inputs, (0, 5), RATIO[torch.float32])
    compare_partial_grads(triton_wavefront_plstm2d, inputs, (9,), RATIO[torch.float32])


def test_matches_pytorch_chunk_form(triton_device):
    """Forward agreement with the PyTorch chunked wavefront (another independent implementation)."""
    from recvision.ops.plstm2d import chunk_plstm2d

    inputs = random_inputs(1, 6, 5, 2, 16, 8, "DL", triton_device)
    assert_close("o", chunk_plstm2d(*inputs, chunk_size=4), triton_wavefront_plstm2d(*inputs), RATIO[torch.float32])


def test_gradcheck(triton_device):
    inputs = [x.requires_grad_(True) for x in random_inputs(1, 2, 3, 1, 4, 2, "free", triton_device, torch.float64)]
    assert torch.autograd.gradcheck(lambda *a: triton_wavefront_plstm2d(*a, chunk_size=2), inputs, fast_mode=True)


@pytest.mark.parametrize("chunk_size", [0, -2, 2.5, True])
def test_bad_chunk_size(triton_device, chunk_size):
    inputs = random_inputs(1, 2, 2, 1, 4, 4, "P", triton_device)
    with pytest.raises(ValueError, match="chunk_size"):
        triton_wavefront_plstm2d(*inputs, chunk_size=chunk_size)


def test_bad_inputs(triton_device):
    check_rejects_bad_inputs(triton_wavefront_plstm2d, triton_device)


# ---------------------------------------------------------------------------------------------------------------
# Ahead-of-time compilation for NVIDIA targets (see tests/ops/aot_compile.py): the interpreter misses what only the
# compiler checks (loop-carried types, masks, reductions, register and shared-memory limits).


def _compile_all(arch: int) -> None:
    """Compile every kernel variant for ``sm_<arch>`` (run without TRITON_INTERPRET)."""
    from recvision.ops.plstm2d import triton_wavefront as C

    scalars = dict(scale="fp32", d="i32", x_lo="i32", X="i32", Y="i32", N="i32")
    for dtype, K, V in (
        (torch.bfloat16, 64, 64),
        (torch.float16, 256, 200),
        (torch.float32, 24, 40),
        (torch.float64, 32, 32),
    ):
        dt = DTYPE_NAMES[dtype]
        acc = DTYPE_NAMES[C.compute_dtype(dtype)]
        BK, BV = C._blocks(K, V)
        constants = dict(H=12, K=K, V=V, BK=BK, BV=BV, ACC=C._acc_dtype(dtype))
        inputs = {name: dt for name in ("q", "k", "v", *GATE_NAMES)}
        states = dict(r_src=acc, r_dst=acc, d_src=acc, d_dst=acc)
        for write_o in (True, False):
            pointers = dict(inputs, o=dt if write_o else None, **states)
            aot_build(
                C.plstm2d_fwd_kernel, arch, pointers, scalars, dict(constants, WRITE_O=write_o), C._num_warps(BK, BV)
            )
        grads = dict(do=dt, dq=acc, dk=acc, dv=acc, dg=acc, r_in=acc, d_in=acc, a_r=acc, a_d=acc)
        aot_build(
            C.plstm2d_bwd_kernel, arch, dict(inputs, **grads), scalars, constants, C._num_warps(BK, BV, backward=True)
        )


@pytest.mark.slow
def test_kernels_compile_for_nvidia_gpus(triton_device: str) -> None:
    """Compile all kernel variants to cubins for sm_90 (Hopper) and sm_80 (Ampere); no GPU needed."""
    check_compiles_for_nvidia(__file__)


if __name__ == "__main__":
    # python tests/ops/test_plstm2d_triton_wavefront.py --compile-for 90 80   (with TRITON_INTERPRET unset)
    if len(sys.argv) >= 3 and sys.argv[1] == "--compile-for":
        for arch in sys.argv[2:]:
            _compile_all(int(arch))
