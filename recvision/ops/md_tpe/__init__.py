"""MD-TPE: the multi-dimensional Toeplitz positional encoding of LightNet (Qin et al., arXiv 2405.21022).

Layout: channels-last grid ``x [B, H, W, C]`` with ``C = num_heads * head_dim`` and ``log_decay [num_heads]``
(``log lambda <= 0``). Every form returns ``y [B, H, W, C]`` in ``x``'s dtype.

* ``naive.py``: :func:`naive_md_tpe`, the loop reference;
* ``scan.py``: :func:`md_tpe` (dispatcher) and :func:`md_tpe_torch` (the chunked PyTorch form);
* ``triton_scan.py``: the Triton kernels, imported only on a Triton path.
"""

from .naive import naive_md_tpe
from .scan import md_tpe, md_tpe_torch

__all__ = ["md_tpe", "md_tpe_torch", "naive_md_tpe"]
