"""LightNet's additive linear recurrence (Qin et al., "You Only Scan Once", arXiv 2405.21022).

Layout follows flash-linear-attention: ``q, k, g [B, T, H, K]`` (``k`` may be ``None``: all ones),
``v [B, T, H, V]``; every form returns ``(o, None)``. See ``README.md`` in this folder for the maths.
"""

from .chunk import chunk_additive
from .naive import global_additive, naive_chunk_additive, naive_recurrent_additive

__all__ = ["chunk_additive", "global_additive", "naive_chunk_additive", "naive_recurrent_additive"]
