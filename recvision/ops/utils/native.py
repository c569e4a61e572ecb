"""Native CPU kernels: C sources shipped with the package, compiled on first use and loaded through :mod:`ctypes`.

A kernel is one C file under an op's ``csrc/`` folder with plain C entry points (pointers and sizes, no Python or
PyTorch headers), so that building it takes a second with the system's C compiler and nothing else. The shared
library is cached under ``$RECVISION_CACHE_DIR`` (default ``$XDG_CACHE_HOME/recvision`` or ``~/.cache/recvision``),
in ``native/<name>-<hash>.so``; the hash covers the source, the compiler and its version, the flags and the platform,
so an edited source or another compiler builds a new file. Builds are written atomically (a temporary beside the
target, then a rename), so concurrent first uses never load a half-written library.

Where no C compiler is found (``$CC``, ``cc``, ``gcc`` or ``clang``), on Windows, when the build fails, or when
:func:`recvision.config.set_native` turned native kernels off (initially ``RECVISION_NATIVE=0``), :func:`load_native`
returns ``None`` and :func:`native_problem` says why in one line; the ops then run their PyTorch forms.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from ...utils.atomic import atomic_write

__all__ = ["NativeKernel", "load_native", "native_cache_dir", "native_problem"]

# -O3 vectorises the kernels' inner loops; no -ffast-math (it would change rounding and NaN handling) and no
# -march=native (a cached library must run on every CPU that shares the cache; the sources select instruction sets
# per function where the compiler supports it)
_FLAGS = ("-O3", "-std=gnu11", "-shared", "-fPIC", "-pthread")
_COMPILE_TIMEOUT_S = 300


@dataclass
class NativeKernel:
    """A C source and the signatures of the entry points it exports.

    Attributes:
        name: short name, used in the cached file name and in messages.
        source: path of the C file.
        signatures: ``{symbol: (argtypes, restype)}`` in :mod:`ctypes` types.
    """

    name: str
    source: Path
    signatures: dict[str, tuple[list, object]] = field(default_factory=dict)


class _NotBuildable(RuntimeError):
    """This platform cannot build native kernels at all (no compiler, Windows): expected, so no warning."""


_LOCK = threading.Lock()
_LOADED: dict[str, ctypes.CDLL | None] = {}
_PROBLEMS: dict[str, str] = {}


def native_cache_dir() -> Path:
    """Folder of the compiled kernels: ``$RECVISION_CACHE_DIR/native``, else ``$XDG_CACHE_HOME/recvision/native``,
    else ``~/.cache/recvision/native``."""
    root = os.environ.get("RECVISION_CACHE_DIR")
    if not root:
        xdg = os.environ.get("XDG_CACHE_HOME")
        root = os.path.join(xdg, "recvision") if xdg else os.path.join(os.path.expanduser("~"), ".cache", "recvision")
    return Path(root) / "native"


def _compiler() -> str | None:
    for candidate in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if candidate:
            found = shutil.which(candidate)
            if found:
                return found
    return None


def _compiler_version(cc: str) -> str:
    try:
        done = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.SubprocessError):
        return ""
    return done.stdout.strip().splitlines()[0] if done.stdout.strip() else ""


def _build(kernel: NativeKernel, cc: str, target: Path) -> None:
    """Compile ``kernel`` into ``target`` (atomically); raises ``RuntimeError`` with the compiler's first error."""

    def compile_to(tmp: str) -> None:
        cmd = [cc, *_FLAGS, str(kernel.source), "-o", tmp]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=_COMPILE_TIMEOUT_S, check=False)
        except (OSError, subprocess.SubprocessError) as err:
            raise RuntimeError(f"{cc} could not be run: {err}") from None
        if done.returncode != 0:
            lines = [line for line in (done.stderr or done.stdout).splitlines() if "error" in line.lower()]
            first = lines[0] if lines else (done.stderr or done.stdout).strip()[:200]
            raise RuntimeError(f"{Path(cc).name} failed on {kernel.source.name}: {first}")

    atomic_write(target, compile_to, suffix=".so")


def _library_path(kernel: NativeKernel, cc: str) -> Path:
    digest = hashlib.sha256()
    digest.update(kernel.source.read_bytes())
    for part in (cc, _compiler_version(cc), " ".join(_FLAGS), sys.platform, platform.machine()):
        digest.update(b"\0" + part.encode())
    return native_cache_dir() / f"{kernel.name}-{digest.hexdigest()[:16]}.so"


def _load(kernel: NativeKernel) -> ctypes.CDLL:
    if sys.platform.startswith("win"):
        raise _NotBuildable("native CPU kernels are not built on Windows")
    cc = _compiler()
    if cc is None:
        raise _NotBuildable("no C compiler found ($CC, cc, gcc or clang)")
    path = _library_path(kernel, cc)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        writable = os.access(path.parent, os.W_OK)
    except OSError:
        writable = False
    if not writable:
        # a read-only home: build into a folder of this process
        path = Path(tempfile.mkdtemp(prefix="recvision-native-")) / path.name
    for attempt in range(2):
        if not path.exists():
            _build(kernel, cc, path)
        try:
            lib = ctypes.CDLL(str(path))
            break
        except OSError:
            # a damaged cached file (e.g. from a full disk): rebuild it once
            if attempt:
                raise RuntimeError(f"the compiled kernel {path} cannot be loaded") from None
            path.unlink(missing_ok=True)
    for symbol, (argtypes, restype) in kernel.signatures.items():
        fn = getattr(lib, symbol)
        fn.argtypes, fn.restype = argtypes, restype
    return lib


def load_native(kernel: NativeKernel) -> ctypes.CDLL | None:
    """The compiled library of ``kernel`` (built on first use, then cached), or ``None`` if it cannot be had here.

    Returns ``None`` without trying when native kernels are off (:func:`recvision.config.native_enabled`). The
    outcome of a build is remembered for the process: a failed build is not retried. A build that fails although
    a compiler was found warns once (``RuntimeWarning``); a platform without a compiler falls back silently.
    """
    from ...config import native_enabled

    if not native_enabled():
        return None
    with _LOCK:
        if kernel.name not in _LOADED:
            try:
                _LOADED[kernel.name] = _load(kernel)
            except RuntimeError as err:
                _LOADED[kernel.name] = None
                _PROBLEMS[kernel.name] = str(err)
                if not isinstance(err, _NotBuildable):
                    warnings.warn(
                        f"recvision: native kernel {kernel.name} unavailable ({err}); running the PyTorch forms",
                        RuntimeWarning,
                        stacklevel=2,
                    )
        return _LOADED[kernel.name]


def native_problem(kernel: NativeKernel) -> str | None:
    """``None`` if ``kernel`` is usable here, else one line saying why not (building it if that was not tried)."""
    from ...config import native_enabled

    if not native_enabled():
        return "native CPU kernels are off (recvision.config.set_native(True) or RECVISION_NATIVE=1 turns them on)"
    if load_native(kernel) is not None:
        return None
    return f"the native kernel {kernel.name} is not available: {_PROBLEMS.get(kernel.name, 'unknown reason')}"
