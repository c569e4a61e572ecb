"""Linear-recurrence ops shared by the recvision backbones (and usable by ``recon``).

One folder per op, in flash-linear-attention's layout: ``naive.py`` holds the readable reference only; the
dispatcher (``chunk_<op>``, ``md_tpe``) and its PyTorch form (``<form>_<op>_torch``) sit in one module, the Triton
kernels in ``triton_*.py``. Every form of an op has the same signature.

* :mod:`recvision.ops.retention`: retention with a constant per-head decay (ViR).
* :mod:`recvision.ops.additive`: the additive linear recurrence (LightNet).
* :mod:`recvision.ops.md_tpe`: decayed scans along each image axis (MD-TPE).
* :mod:`recvision.ops.md_lrpe`: cosine multi-dimensional relative position phases (MD-LRPE).
* :mod:`recvision.ops.plstm2d`: the 2-D pLSTM recurrence over an image grid (pLSTM).

Shared pieces: :mod:`recvision.ops.common` (helpers of the Triton kernels) and :mod:`recvision.ops.utils` (input
guards, dtype policy, test comparisons). No module imported here imports Triton; each op's ``triton_*`` modules
are imported by its dispatcher on the first call that takes a Triton path.
"""

from . import additive, md_lrpe, md_tpe, plstm2d, retention

__all__ = ["additive", "md_lrpe", "md_tpe", "plstm2d", "retention"]
