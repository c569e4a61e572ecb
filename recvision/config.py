"""Global switches for the kernels recvision dispatches to.

Modelled on ``timm.layers.config`` (``use_fused_attn``/``set_fused_attn``): models and ops ask
:func:`use_triton` and never read the environment themselves.

The backend is one of

* ``"auto"`` (default): Triton kernels on CUDA tensors when Triton is importable, PyTorch otherwise;
* ``"torch"``: always the PyTorch implementations;
* ``"triton"``: always the Triton kernels, also on CPU tensors. It needs the ``triton`` package and either a CUDA
  GPU or ``TRITON_INTERPRET=1`` (Triton's interpreter, which runs the kernels on CPU tensors; the test-suite uses
  it to check them); :func:`set_backend` refuses it otherwise, with one line that says what to do.

The initial value comes from the ``RECVISION_BACKEND`` environment variable. No module of recvision imports Triton
at import time: each op imports its Triton kernels on the first call that runs them, so the package works where
Triton is not installed (macOS, Windows, CPU-only Linux).

Separately, *native CPU kernels* (C sources compiled on first use, :mod:`recvision.ops.utils.native`) serve
inference on CPU tensors where an op has one (the 2-D pLSTM forward). :func:`use_native` allows them in backend
``"auto"`` only (``"torch"`` means the PyTorch implementations throughout) and while they are on: initially
``RECVISION_NATIVE`` (``1``, the default, or ``0``; also true / false, yes / no, on / off; anything else warns and
counts as ``1``), then :func:`set_native`.
"""

from __future__ import annotations

import importlib.util
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import torch

__all__ = [
    "BACKENDS",
    "backend",
    "get_backend",
    "native_enabled",
    "set_backend",
    "set_native",
    "triton_available",
    "triton_usable",
    "use_native",
    "use_triton",
]

BACKENDS = ("auto", "torch", "triton")


def _check(name: str, value: str) -> str:
    if value not in BACKENDS:
        raise ValueError(f"{name} must be one of {BACKENDS}, got {value!r}")
    return value


_BACKEND = _check("RECVISION_BACKEND", os.environ.get("RECVISION_BACKEND", "auto").strip().lower() or "auto")


def _native_from_env() -> bool:
    value = os.environ.get("RECVISION_NATIVE", "1").strip().lower() or "1"
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    # an optional accelerator: a typo must not stop `import recvision`
    warnings.warn(f"RECVISION_NATIVE must be 0 or 1, got {value!r}; using 1", RuntimeWarning, stacklevel=2)
    return True


_NATIVE = _native_from_env()


def triton_available() -> bool:
    """Whether the ``triton`` package is installed (found without importing it)."""
    try:
        return importlib.util.find_spec("triton") is not None
    except (ImportError, ValueError):
        # a blocked or half-imported module: treat as absent
        return False


def triton_usable() -> str | None:
    """``None`` if Triton kernels can run here, else one line saying why not and what to do instead."""
    if not triton_available():
        return (
            "backend 'triton' needs the triton package, which is not installed (pip install triton on Linux with a "
            "CUDA GPU); use set_backend('auto') or 'torch' to run the PyTorch implementations"
        )
    if os.environ.get("TRITON_INTERPRET") == "1" or torch.cuda.is_available():
        return None
    return (
        "backend 'triton' needs a CUDA GPU, and none is visible to PyTorch; use set_backend('auto') or 'torch' on "
        "this machine, or set TRITON_INTERPRET=1 before the first Triton call to run the kernels in Triton's "
        "interpreter on CPU tensors (slow, for tests)"
    )


def get_backend() -> str:
    """The current global backend: ``"auto"``, ``"torch"`` or ``"triton"``."""
    return _BACKEND


def set_backend(value: str) -> None:
    """Set the global backend (``"auto"``, ``"torch"`` or ``"triton"``).

    Raises:
        ValueError: for an unknown backend.
        RuntimeError: for ``"triton"`` where Triton kernels cannot run (:func:`triton_usable` gives the line).
    """
    global _BACKEND
    value = _check("backend", value)
    if value == "triton":
        _require_triton()
    _BACKEND = value


def _require_triton() -> None:
    problem = triton_usable()
    if problem is not None:
        # raised from None: the one line is the whole message, no chained traceback from a driver lookup
        raise RuntimeError(problem) from None


@contextmanager
def backend(value: str) -> Iterator[None]:
    """Context manager that sets the global backend and restores the previous one on exit."""
    previous = get_backend()
    set_backend(value)
    try:
        yield
    finally:
        set_backend(previous)


def use_triton(tensor: torch.Tensor, override: str | None = None) -> bool:
    """Decide whether an op called on ``tensor`` runs its Triton kernel.

    Args:
        tensor: an input of the op; its device decides in ``"auto"`` mode.
        override: a per-call backend that wins over the global one (``None`` = use the global one).
    """
    choice = get_backend() if override is None else _check("backend", override)
    if choice == "torch":
        return False
    if choice == "triton":
        _require_triton()
        return True
    return tensor.is_cuda and triton_available()


def native_enabled() -> bool:
    """Whether native CPU kernels may be used (built on first use; see :mod:`recvision.ops.utils.native`)."""
    return _NATIVE


def set_native(enabled: bool) -> None:
    """Allow (``True``) or forbid (``False``) native CPU kernels for the rest of the process."""
    global _NATIVE
    if not isinstance(enabled, bool):
        raise ValueError(f"set_native expects True or False, got {enabled!r}")
    _NATIVE = enabled


def use_native(tensor: torch.Tensor, override: str | None = None) -> bool:
    """Whether an op called on ``tensor`` may run a native CPU kernel: a CPU tensor, backend ``"auto"`` (global or
    ``override``) and native kernels on. The op still falls back to PyTorch where its kernel cannot be built."""
    choice = get_backend() if override is None else _check("backend", override)
    return choice == "auto" and tensor.device.type == "cpu" and _NATIVE
