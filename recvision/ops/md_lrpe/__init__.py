"""MD-LRPE (cosine): the multi-dimensional linearised relative positional encoding of LightNet
(Qin et al., arXiv 2405.21022). Layout ``x [B, T, H, D]`` with tokens row-major over a spatial grid."""

from .cosine import md_lrpe_cosine, md_lrpe_phase, md_lrpe_theta_dim

__all__ = ["md_lrpe_cosine", "md_lrpe_phase", "md_lrpe_theta_dim"]
