"""MD-TPE: the multi-dimensional Toeplitz positional encoding of LightNet (Qin et al., arXiv 2405.21022).

Layout: channels-last grid ``x [B, H, W, C]`` with ``C = num_heads * head_dim`` and ``log_decay [num_heads]``
(``log lambda <= 0``). Every form returns ``y [B, H, W, C]`` in ``x``'s dtype.
"""

from .naive import md_tpe_torch, naive_md_tpe
from .scan import MdTpeFunction, md_tpe

__all__ = ["MdTpeFunction", "md_tpe", "md_tpe_torch", "naive_md_tpe"]
