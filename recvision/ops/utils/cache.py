"""A small, bounded cache of decay tables that depend only on a few sizes and per-head decays.

The tables (``gamma^(i-j)`` masks and the like) are rebuilt from the same few numbers on every call of a
layer; keeping the last few saves that work. The cache is bounded both in entries and in bytes, so a sweep over
many sequence lengths cannot make it grow without end, and a table larger than the byte budget is built on every
call and never stored. Tables are built without autograd and never as inference tensors: callers bypass the
cache when the decays need a gradient.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any

import torch

__all__ = ["DecayTableCache", "cacheable", "decay_key"]


def cacheable(g: torch.Tensor) -> bool:
    """Whether tables built from the decays ``g`` may come from the cache: not when they need a gradient, and not
    for tensors without values (the meta device, used to build models without memory)."""
    return not (g.requires_grad and torch.is_grad_enabled()) and not g.is_meta


def decay_key(g: torch.Tensor) -> tuple[Any, ...]:
    """Hashable identity of a small decay tensor: its values, dtype and device (reads the values on the host)."""
    return (tuple(g.detach().flatten().tolist()), g.dtype, str(g.device))


def _nbytes(value: Any) -> int:
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, (tuple, list)):
        return sum(_nbytes(v) for v in value)
    if isinstance(value, dict):
        return sum(_nbytes(v) for v in value.values())
    return sum(_nbytes(v) for v in getattr(value, "__dict__", {}).values())


class DecayTableCache:
    """Least-recently-used cache of tables, bounded by ``max_entries`` and ``max_bytes``.

    Args:
        max_entries: most tables kept (0 disables the cache).
        max_bytes: most bytes of tensors kept over all entries; an entry larger than this is not stored.
    """

    def __init__(self, max_entries: int = 8, max_bytes: int = 256 * 2**20) -> None:
        self._entries: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()
        self.configure(max_entries, max_bytes)

    def configure(self, max_entries: int, max_bytes: int) -> None:
        """Change the bounds (dropping the oldest entries that no longer fit)."""
        if max_entries < 0 or max_bytes < 0:
            raise ValueError(f"max_entries and max_bytes must be >= 0; got {max_entries}, {max_bytes}")
        self.max_entries, self.max_bytes = int(max_entries), int(max_bytes)
        self._shrink()

    @property
    def nbytes(self) -> int:
        """Bytes of tensors held now."""
        return sum(size for _, size in self._entries.values())

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        """Drop every table."""
        self._entries.clear()

    def get(self, key: Hashable, build: Callable[[], Any]) -> Any:
        """The table stored under ``key``, or ``build()`` (run without autograd), stored if it fits."""
        hit = self._entries.get(key)
        if hit is not None:
            self._entries.move_to_end(key)
            return hit[0]
        # normal tensors even when the first call comes under inference_mode, so that a later call with autograd
        # can save them for its backward
        with torch.inference_mode(False), torch.no_grad():
            value = build()
        size = _nbytes(value)
        if self.max_entries > 0 and size <= self.max_bytes:
            self._entries[key] = (value, size)
            self._shrink()
        return value

    def _shrink(self) -> None:
        while self._entries and (len(self._entries) > self.max_entries or self.nbytes > self.max_bytes):
            self._entries.popitem(last=False)
