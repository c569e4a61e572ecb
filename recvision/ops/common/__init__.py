"""Pieces shared by the Triton kernels of every op folder (flash-linear-attention's ``fla/ops/common``).

Importing this package imports nothing from Triton; its modules do, and only the ``triton_*`` modules of the op
folders import them, which the dispatchers import on the first call that takes a Triton path:

* :mod:`recvision.ops.common.triton_utils`: block sizes, accumulation and ``tl.dot`` dtypes, head-dim and
  chunk-size checks, and small ``@triton.jit`` helpers for chunked kernels;
* :mod:`recvision.ops.common.chunk_state`: the chunked state walks (forward states before every chunk, backward
  state gradients after every chunk) shared by retention (one decay per head) and the additive recurrence
  (a normalised decay per key channel);
* :mod:`recvision.ops.common.chunk_o`: the per-chunk output and gradient kernels (``o``, ``dv``, ``dq`` / ``dk``) of
  the same two ops, and the launcher of their whole backward pass.
"""
