"""Timing and peak-memory helpers shared by the benchmark scripts (imported as ``_measure``; the scripts' own
folder is on ``sys.path`` when they run as ``python benchmarks/<script>.py``)."""

from __future__ import annotations

import resource
import statistics
import sys
import time
from collections.abc import Callable

__all__ = ["status_kib", "maxrss_mib", "reset_peak_rss", "median_time"]


def status_kib(field: str) -> int | None:
    """A ``/proc/self/status`` field in KiB (``VmRSS``, ``VmHWM``), or ``None`` where procfs is unavailable."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def maxrss_mib() -> float:
    """Peak RSS of this process (``ru_maxrss``) in MiB; Linux reports KiB, macOS bytes."""
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return maxrss / 2**20 if sys.platform == "darwin" else maxrss / 1024


def reset_peak_rss() -> bool:
    """Reset the kernel's RSS high-water mark (and so ``ru_maxrss``) to the current RSS; Linux >= 4.0 only.

    Without the reset, ``ru_maxrss`` after the measured call could still be a transient peak of set-up work.
    """
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def median_time(fn: Callable[[], object], repeats: int, warmup: int = 1) -> tuple[float, list[float]]:
    """Median wall time of ``fn()`` in seconds over ``repeats`` calls, after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), times
