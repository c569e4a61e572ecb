"""Input guard for the host wrappers of Triton kernels."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from typing import Any, TypeVar

import torch

__all__ = ["input_guard"]

F = TypeVar("F", bound=Callable[..., Any])


def _contiguous(x: Any) -> Any:
    return x.contiguous() if isinstance(x, torch.Tensor) else x


def input_guard(fn: F) -> F:
    """Make every tensor argument contiguous and run ``fn`` on the CUDA device of its first CUDA tensor.

    The kernels index their inputs with explicit row-major offsets, so non-contiguous views (transposes,
    expanded zero gradients from autograd) must be copied first. Setting the current device makes a launch on a
    tensor that lives on ``cuda:1`` go to ``cuda:1``. CPU tensors (Triton's interpreter) pass through unchanged.
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        args = tuple(_contiguous(a) for a in args)
        kwargs = {name: _contiguous(value) for name, value in kwargs.items()}
        device = next(
            (a.device for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor) and a.is_cuda),
            None,
        )
        ctx = torch.cuda.device(device) if device is not None else contextlib.nullcontext()
        with ctx:
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]
