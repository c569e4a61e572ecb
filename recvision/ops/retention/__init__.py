"""Multi-head retention with a constant per-head decay (the token mixer of ViR).

Layout and argument order follow flash-linear-attention: ``q, k [B, T, H, K]``, ``v [B, T, H, V]``,
``g_gamma [H] = log gamma``; every form returns ``(o, final_state)``.
"""

from .chunk import chunk_retention
from .common import retnet_g_gamma
from .fused_recurrent import fused_recurrent_retention
from .naive import naive_chunk_retention, naive_recurrent_retention
from .parallel import parallel_retention

__all__ = [
    "chunk_retention",
    "fused_recurrent_retention",
    "naive_chunk_retention",
    "naive_recurrent_retention",
    "parallel_retention",
    "retnet_g_gamma",
]
