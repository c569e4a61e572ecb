"""2-D pLSTM (Pöppel et al., "pLSTM: parallelizable Linear Source Transition Mark networks", arXiv 2506.11997).

Layout (channels last, one head axis): ``q, k [B, X, Y, H, DK]``, ``v [B, X, Y, H, DV]``, nine gates
``[B, X, Y, H]`` passed by keyword (``plstm2d(q, k, v, **p_mode_gates(...))``); every form returns
``o [B, X, Y, H, DV]``. States flow towards ``+x`` and ``+y``; :func:`orient` flips the grid for the other three
directions. The maths is in ``README.md``.

* ``naive.py``: :func:`naive_plstm2d`, the cell-by-cell reference;
* ``parallel.py``: :func:`parallel_plstm2d`, the authors' one-chunk parallel form (a second reference);
* ``chunk.py``: :func:`chunk_plstm2d` (dispatcher, also named :func:`plstm2d`) and :func:`chunk_plstm2d_torch`;
* ``fused_recurrent.py``: :func:`fused_recurrent_plstm2d`, the forward on the CPU by a native C kernel
  (``csrc/``, compiled on first use; no backward);
* ``triton_chunk.py``: the Triton kernels of the chunk form, imported only on a Triton path;
* ``gates.py``: the gate parametrisations and the four orientations.
"""

from .chunk import DEFAULT_CHUNK_SIZE, chunk_plstm2d, chunk_plstm2d_torch, plstm2d
from .common import GATE_NAMES
from .fused_recurrent import fused_recurrent_available, fused_recurrent_plstm2d
from .gates import d_mode_gates, orient, p_mode_gates, unorient
from .naive import naive_plstm2d
from .parallel import parallel_plstm2d

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "GATE_NAMES",
    "chunk_plstm2d",
    "chunk_plstm2d_torch",
    "d_mode_gates",
    "fused_recurrent_available",
    "fused_recurrent_plstm2d",
    "naive_plstm2d",
    "orient",
    "p_mode_gates",
    "parallel_plstm2d",
    "plstm2d",
    "unorient",
]
