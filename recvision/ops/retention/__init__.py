"""Multi-head retention with a constant per-head decay (the token mixer of ViR).

Layout and argument order follow flash-linear-attention: ``q, k [B, T, H, K]``, ``v [B, T, H, V]``,
``g_gamma [H] = log gamma``; every form returns ``(o, final_state)``.

* ``naive.py``: :func:`naive_recurrent_retention`, the step-by-step reference;
* ``chunk.py``: :func:`chunk_retention` (dispatcher) and :func:`chunk_retention_torch` (the PyTorch chunk form);
* ``fused_recurrent.py``: :func:`fused_recurrent_retention` (dispatcher) and :func:`fused_recurrent_retention_torch`
  (the PyTorch token loop);
* ``parallel.py``: :func:`parallel_retention` (quadratic, attention-like);
* ``triton_chunk.py``, ``triton_fused_recurrent.py``: the Triton kernels, imported only on a Triton path.
"""

from .chunk import chunk_retention, chunk_retention_torch
from .common import retnet_g_gamma
from .fused_recurrent import fused_recurrent_retention, fused_recurrent_retention_torch
from .naive import naive_recurrent_retention
from .parallel import parallel_retention

__all__ = [
    "chunk_retention",
    "chunk_retention_torch",
    "fused_recurrent_retention",
    "fused_recurrent_retention_torch",
    "naive_recurrent_retention",
    "parallel_retention",
    "retnet_g_gamma",
]
