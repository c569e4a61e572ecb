"""Linear-recurrence ops shared by the recvision backbones (and usable by ``recon``).

One folder per op, in flash-linear-attention's layout: a readable ``naive`` reference beside PyTorch and Triton
implementations with the same signature.

* :mod:`recvision.ops.retention`: retention with a constant per-head decay (ViR).
* :mod:`recvision.ops.additive`: the additive linear recurrence (LightNet).
* :mod:`recvision.ops.md_tpe`: decayed scans along each image axis (MD-TPE).
* :mod:`recvision.ops.md_lrpe`: cosine multi-dimensional relative position phases (MD-LRPE).
"""
