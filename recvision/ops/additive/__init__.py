"""LightNet's additive linear recurrence (Qin et al., "You Only Scan Once", arXiv 2405.21022).

Layout follows flash-linear-attention: ``q, k, g [B, T, H, K]`` (``k`` may be ``None``: all ones),
``v [B, T, H, V]``; every form returns ``(o, None)``. See ``README.md`` in this folder for the maths.

* ``naive.py``: :func:`naive_recurrent_additive`, the step-by-step reference (causal and global);
* ``chunk.py``: :func:`chunk_additive` (dispatcher), :func:`chunk_additive_torch` (the PyTorch chunk form) and
  :func:`global_additive` (the non-causal form; its two halves :func:`global_additive_state` and
  :func:`global_additive_readout` for callers that build the state's inputs and the queries one after the other);
* ``triton_chunk.py``: the Triton kernels, imported only on a Triton path.
"""

from .chunk import (
    chunk_additive,
    chunk_additive_torch,
    global_additive,
    global_additive_readout,
    global_additive_state,
)
from .naive import naive_recurrent_additive

__all__ = [
    "chunk_additive",
    "chunk_additive_torch",
    "global_additive",
    "global_additive_readout",
    "global_additive_state",
    "naive_recurrent_additive",
]
