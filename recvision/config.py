"""Global switches for the kernels recvision dispatches to.

Modelled on ``timm.layers.config`` (``use_fused_attn``/``set_fused_attn``): models and ops ask
:func:`use_triton` and never read the environment themselves.

The backend is one of

* ``"auto"`` (default): Triton kernels on CUDA tensors when Triton is importable, PyTorch otherwise;
* ``"torch"``: always the PyTorch implementations;
* ``"triton"``: always the Triton kernels, also on CPU tensors. On a machine without a GPU this only works
  with ``TRITON_INTERPRET=1`` set before ``recvision`` is imported; the test-suite uses it to check kernels.

The initial value comes from the ``RECVISION_BACKEND`` environment variable.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch

__all__ = ["BACKENDS", "get_backend", "set_backend", "backend", "use_triton", "triton_available"]

BACKENDS = ("auto", "torch", "triton")


def _check(name: str, value: str) -> str:
    if value not in BACKENDS:
        raise ValueError(f"{name} must be one of {BACKENDS}, got {value!r}")
    return value


_BACKEND = _check("RECVISION_BACKEND", os.environ.get("RECVISION_BACKEND", "auto").strip().lower() or "auto")


def triton_available() -> bool:
    """Whether the ``triton`` package can be imported."""
    return importlib.util.find_spec("triton") is not None


def get_backend() -> str:
    """The current global backend: ``"auto"``, ``"torch"`` or ``"triton"``."""
    return _BACKEND


def set_backend(value: str) -> None:
    """Set the global backend (``"auto"``, ``"torch"`` or ``"triton"``)."""
    global _BACKEND
    _BACKEND = _check("backend", value)


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
        if not triton_available():
            raise RuntimeError("backend 'triton' was requested but the triton package is not installed")
        return True
    return tensor.is_cuda and triton_available()
