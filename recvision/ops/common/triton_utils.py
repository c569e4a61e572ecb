"""Helpers shared by the Triton kernel modules of :mod:`recvision.ops`; importing this module imports Triton.

Every constant and sizing rule the kernels of more than one op folder use is defined here once: the largest head
dim, the block sizes of ``tl.dot`` tiles, the accumulation and ``tl.dot`` operand dtypes, and the argument checks
that turn an unsupported size into one clear ``ValueError``. The ``@triton.jit`` helpers hold the index arithmetic
of a program over ``(block, chunk, b*h)`` in the flash-linear-attention layout ``x [B, T, H, D]``.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..utils.dtypes import compute_dtype

__all__ = [
    "MAX_BLOCK",
    "MAX_HEAD_DIM",
    "MIN_DOT",
    "acc_dtypes",
    "block_size",
    "check_chunk_size",
    "check_head_dims",
    "chunk_launch_meta",
    "interpreted",
    "kernel_dtypes",
    "num_sms",
    "num_stages",
    "state_blocks",
    "sum_combine",
]

# the largest K or V the kernels take: a [BT, K] tile of 256 float32 columns still fits the shared memory budget
MAX_HEAD_DIM = 256
# widest K or V block of one program
MAX_BLOCK = 64
# tl.dot needs every tile side to be at least 16
MIN_DOT = 16

# The combine function of ``tl.sum``. Kernels that reduce inside inner loops call ``tl.reduce(x, axis, sum_combine)``
# instead of ``tl.sum``: compiled it is the same reduction, but Triton's interpreter re-patches its language module
# on every call of a jitted helper such as ``tl.sum``, which makes the CPU tests several times slower.
sum_combine = tl.standard._sum_combine


def acc_dtypes(dtype: torch.dtype) -> tuple[torch.dtype, tl.dtype]:
    """``(torch, triton)`` accumulation dtype for inputs of ``dtype``: float64 stays float64, the rest float32."""
    acc = compute_dtype(dtype)
    return acc, (tl.float64 if acc == torch.float64 else tl.float32)


def kernel_dtypes(dtype: torch.dtype) -> tuple[torch.dtype, tl.dtype, tl.dtype, str]:
    """``(torch accumulation dtype, triton accumulation dtype, tl.dot operand dtype, tl.dot input precision)``.

    16-bit inputs keep their dtype as ``tl.dot`` operands (tensor cores, float32 accumulation); float32 and float64
    dots run with ``input_precision="ieee"``.
    """
    if dtype == torch.float64:
        return torch.float64, tl.float64, tl.float64, "ieee"
    if dtype == torch.float16:
        return torch.float32, tl.float32, tl.float16, "tf32"
    if dtype == torch.bfloat16:
        return torch.float32, tl.float32, tl.bfloat16, "tf32"
    if dtype == torch.float32:
        return torch.float32, tl.float32, tl.float32, "ieee"
    raise ValueError(f"the Triton kernels support float16/bfloat16/float32/float64; got {dtype}")


def block_size(dim: int, max_block: int = MAX_BLOCK) -> int:
    """Block of a K or V axis of ``dim`` elements: its power-of-two size clipped to ``[MIN_DOT, max_block]``."""
    return max(MIN_DOT, min(max_block, triton.next_power_of_2(dim)))


def num_sms(device: torch.device) -> int:
    """Streaming multiprocessors of ``device`` (1 for the CPU under the interpreter)."""
    return torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 1


def state_blocks(K: int, V: int, BH: int, device: torch.device) -> tuple[int, int]:
    """``(BK, BV)`` of the sequential state kernels (one program per ``(K-block, V-block, b*h)``).

    They walk the chunks one after another, so with few batches and heads 64-wide blocks leave most of the GPU
    idle; 32-wide blocks then give four times as many programs.
    """
    BK, BV = block_size(K), block_size(V)
    if BH * triton.cdiv(K, BK) * triton.cdiv(V, BV) < num_sms(device):
        BK, BV = block_size(K, 32), block_size(V, 32)
    return BK, BV


def num_stages(dtype: torch.dtype) -> int:
    """Software-pipelining stages: two keep the chunk kernels under the shared memory of sm_80/sm_90 (float64:
    one, whose tiles are twice as large)."""
    return 1 if dtype == torch.float64 else 2


def chunk_launch_meta(k: torch.Tensor, v: torch.Tensor, chunk_size: int) -> dict:
    """Launch keywords every chunk kernel takes: ``T, H, K, V, BT``, the accumulation / ``tl.dot`` dtypes
    ``ACC, DT, PREC``, 4 warps and the pipelining stages, for ``k [B, T, H, K]`` and ``v [B, T, H, V]``."""
    _, T, H, K = k.shape
    _, ACC, DT, PREC = kernel_dtypes(k.dtype)
    return dict(
        T=T, H=H, K=K, V=v.shape[-1], BT=chunk_size, ACC=ACC, DT=DT, PREC=PREC, num_warps=4,
        num_stages=num_stages(k.dtype),
    )  # fmt: skip


def check_head_dims(op: str, K: int, V: int) -> None:
    """Raise ``ValueError`` unless both head dims are at most :data:`MAX_HEAD_DIM`."""
    if K > MAX_HEAD_DIM or V > MAX_HEAD_DIM:
        raise ValueError(f"{op}'s Triton kernels support head dims K, V <= {MAX_HEAD_DIM}; got K={K}, V={V}")


def check_chunk_size(op: str, chunk_size: int, max_chunk: int) -> None:
    """Raise ``ValueError`` unless ``chunk_size`` is a power of two in ``[MIN_DOT, max_chunk]``."""
    if chunk_size < MIN_DOT or chunk_size > max_chunk or chunk_size & (chunk_size - 1):
        raise ValueError(
            f"{op}'s Triton kernels need chunk_size to be a power of two in [{MIN_DOT}, {max_chunk}]; got {chunk_size}"
        )


def interpreted(kernel: object) -> bool:
    """Whether ``kernel`` runs in Triton's interpreter (``TRITON_INTERPRET=1`` when it was defined)."""
    return not isinstance(kernel, triton.runtime.JITFunction)


@triton.jit
def chunk_program(i_bh, T, H: tl.constexpr, BT: tl.constexpr):
    """Batch ``i_b`` (int64), head ``i_h``, ``i_bh`` as int64 and the number of chunks ``NT`` of program ``i_bh``."""
    i_b, i_h, i_bh64 = head_program(i_bh, H)
    NT = tl.cdiv(T, BT)
    return i_b, i_h, i_bh64, NT


@triton.jit
def head_program(i_bh, H: tl.constexpr):
    """Batch ``i_b`` (int64), head ``i_h`` and ``i_bh`` as int64 of a program over ``b*h``."""
    i_b = tl.cast(i_bh // H, tl.int64)
    i_h = i_bh % H
    i_bh64 = tl.cast(i_bh, tl.int64)
    return i_b, i_h, i_bh64


@triton.jit
def state_tile(i_k, i_v, K: tl.constexpr, V: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr):
    """Offsets and masks of the ``[BK, BV]`` block ``(i_k, i_v)`` of a row-major ``[K, V]`` state.

    Returns ``o_k [BK]``, ``o_v [BV]``, their masks ``m_k``, ``m_v``, the block mask ``m_kv`` and the offsets
    ``o_kv [BK, BV]`` inside one state.
    """
    o_k = i_k * BK + tl.arange(0, BK)
    o_v = i_v * BV + tl.arange(0, BV)
    m_k = o_k < K
    m_v = o_v < V
    m_kv = m_k[:, None] & m_v[None, :]
    o_kv = o_k[:, None] * V + o_v[None, :]
    return o_k, o_v, m_k, m_v, m_kv, o_kv


@triton.jit
def load_state(x, i_bh64, K: tl.constexpr, V: tl.constexpr, o_kv, m_kv):
    """Block ``o_kv`` of the ``[K, V]`` state number ``i_bh64`` in ``x [B*H, K, V]`` (zeros outside ``m_kv``)."""
    return tl.load(x + i_bh64 * K * V + o_kv, mask=m_kv, other=0)


@triton.jit
def start_state(
    x, i_bh64, K: tl.constexpr, V: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, o_kv, m_kv, ACC: tl.constexpr,
    LOAD: tl.constexpr,
):  # fmt: skip
    """The ``[BK, BV]`` accumulator a state walk starts from: zeros, plus block ``o_kv`` of state ``i_bh64`` of
    ``x [B*H, K, V]`` when ``LOAD`` (an initial state, or the gradient of the final state)."""
    b_h = tl.zeros([BK, BV], dtype=ACC)
    if LOAD:
        b_h += load_state(x, i_bh64, K, V, o_kv, m_kv).to(ACC)
    return b_h


@triton.jit
def store_state(x, value, i_bh64, K: tl.constexpr, V: tl.constexpr, o_kv, m_kv):
    """Store a ``[BK, BV]`` state block into ``x [B*H, K, V]`` (cast to its dtype)."""
    tl.store(x + i_bh64 * K * V + o_kv, value.to(x.dtype.element_ty), mask=m_kv)


@triton.jit
def load_row_vector(x, i_b, i_h, t, T, H: tl.constexpr, K: tl.constexpr, o_k, m_k):
    """Load ``x[i_b, t, i_h, o_k]`` of a ``[B, T, H, K]`` tensor (zeros where ``t`` or the channel is out of range)."""
    row = (i_b * T + t) * H + i_h
    return tl.load(x + row * K + o_k, mask=m_k & (t < T), other=0)


@triton.jit
def chunk_rows(i_b, i_h, i_t, T, H: tl.constexpr, BT: tl.constexpr):
    """Positions ``o_t [BT]`` in chunk ``i_t``, their validity ``m_t`` and row offsets ``o_row`` in ``[B, T, H, *]``."""
    o_t = tl.arange(0, BT)
    o_tt = i_t * BT + o_t
    m_t = o_tt < T
    o_row = (i_b * T + o_tt) * H + i_h
    return o_t, m_t, o_row
