"""Native CPU kernels: C sources shipped with the package, compiled on first use and loaded through :mod:`ctypes`.

A kernel is one C file under an op's ``csrc/`` folder with plain C entry points (pointers and sizes, no Python or
PyTorch headers), so that building it takes a second with the system's C compiler and nothing else. The shared
library is cached under ``$RECVISION_CACHE_DIR`` (default ``$XDG_CACHE_HOME/recvision`` or ``~/.cache/recvision``),
in ``native/<name>-<hash>.so``; the hash covers the source, the compiler and its version, the flags and the platform,
so an edited source or another compiler builds a new file. Builds are written atomically (a temporary beside the
target, synced, then a rename), so concurrent first uses never load a half-written library, and a checksum file
beside each library is checked before it is opened (a damaged library could load and crash the process; it is
rebuilt). A library is code: it is loaded from the cache only if the folder (created ``0700``) and the files are
owned by the user and writable by nobody else; otherwise (a shared or read-only cache) each process builds into a
private temporary folder.

Where no C compiler is found (``$CC``, ``cc``, ``gcc`` or ``clang``), on Windows, when the build fails, or when
:func:`recvision.config.set_native` turned native kernels off (initially ``RECVISION_NATIVE=0``), :func:`load_native`
returns ``None`` and :func:`native_problem` says why in one line; the ops then run their PyTorch forms.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shlex
import shutil
import stat
import subprocess
import sys
import tempfile
import threading
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from ...utils.atomic import atomic_write

__all__ = ["NativeKernel", "load_native", "native_cache_dir", "native_problem"]

# -O3 vectorises the kernels' inner loops; no -ffast-math (no reassociation, NaN and inf handled as in PyTorch; the
# compiler may still fuse a multiply and an add into one FMA where the CPU has it) and no -march=native (a cached
# library must run on every CPU that shares the cache; the sources select instruction sets per function where the
# compiler supports it)
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


def _compiler() -> list[str]:
    """The compiler command: ``$CC`` (split like a shell word list, e.g. ``ccache gcc``) if set, else the first of
    ``cc``, ``gcc``, ``clang`` on the ``PATH``."""
    env = os.environ.get("CC", "").strip()
    if env:
        cmd = shlex.split(env)
        found = shutil.which(cmd[0])
        if found is None:
            raise RuntimeError(f"the compiler in $CC ({env!r}) is not found")
        return [found, *cmd[1:]]
    for candidate in ("cc", "gcc", "clang"):
        found = shutil.which(candidate)
        if found:
            return [found]
    raise _NotBuildable("no C compiler found ($CC, cc, gcc or clang)")


def _compiler_or_none() -> list[str] | None:
    """:func:`_compiler`, or ``None`` where there is none (for tests and messages)."""
    try:
        return _compiler()
    except RuntimeError:
        return None


def _compiler_version(cc: list[str]) -> str:
    try:
        done = subprocess.run([*cc, "--version"], capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.SubprocessError):
        return ""
    return done.stdout.strip().splitlines()[0] if done.stdout.strip() else ""


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _build(kernel: NativeKernel, cc: list[str], target: Path) -> None:
    """Compile ``kernel`` into ``target`` and write its checksum beside it (``target.sha256``), each atomically and
    synced to disk; raises ``RuntimeError`` with the compiler's first error."""
    name = Path(cc[0]).name

    def compile_to(tmp: str) -> None:
        cmd = [*cc, *_FLAGS, str(kernel.source), "-o", tmp]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=_COMPILE_TIMEOUT_S, check=False)
        except (OSError, subprocess.SubprocessError) as err:
            raise RuntimeError(f"{name} could not be run: {err}") from None
        if done.returncode != 0:
            output = f"{done.stderr}\n{done.stdout}"
            errors = [line.strip() for line in output.splitlines() if "error" in line.lower()]
            first = errors[0] if errors else " ".join(output.split())[:200] or "no message"
            raise RuntimeError(f"{name} failed on {kernel.source.name} (exit code {done.returncode}): {first}")
        if os.path.getsize(tmp) == 0:
            raise RuntimeError(f"{name} wrote no library for {kernel.source.name}")
        _sync(tmp)

    atomic_write(target, compile_to, suffix=".so")
    # only the owner may change a library this process will execute (atomic_write applies the umask)
    os.chmod(target, 0o644)
    digest = _sha256(target)

    def write_digest(tmp: str) -> None:
        Path(tmp).write_text(digest + "\n")
        _sync(tmp)

    atomic_write(_digest_path(target), write_digest)
    os.chmod(_digest_path(target), 0o644)


def _sync(path: str) -> None:
    # a rename after a crash may otherwise expose a file whose blocks were never written (zeros): it would load and
    # crash the process, so the data reach the disk before the rename
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _digest_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _library_name(kernel: NativeKernel, cc: list[str]) -> str:
    digest = hashlib.sha256()
    digest.update(kernel.source.read_bytes())
    for part in (" ".join(cc), _compiler_version(cc), " ".join(_FLAGS), sys.platform, platform.machine()):
        digest.update(b"\0" + part.encode())
    return f"{kernel.name}-{digest.hexdigest()[:16]}.so"


def _trusted(path: Path) -> bool:
    """Whether only this user can change ``path``: owned by us and not writable by group or others. A shared
    library is code, so it is loaded only from a file and a folder that pass this check."""
    try:
        st = path.stat()
    except OSError:
        return False
    return st.st_uid == os.getuid() and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def _open(path: Path) -> ctypes.CDLL:
    try:
        return ctypes.CDLL(str(path))
    except OSError as err:
        raise RuntimeError(f"the compiled kernel {path} cannot be loaded: {err}") from None


def _open_cached(path: Path) -> ctypes.CDLL | None:
    """The cached library at ``path`` if it and its checksum file are ours alone and the checksum matches, else
    ``None``. A damaged library may load and then crash the process, so it is never opened unverified."""
    digest = _digest_path(path)
    if not (_trusted(path) and _trusted(digest)):
        return None
    try:
        if digest.read_text().strip() != _sha256(path):
            return None
        return _open(path)
    except (OSError, RuntimeError, UnicodeDecodeError):
        return None


def _load(kernel: NativeKernel) -> ctypes.CDLL:
    if sys.platform.startswith("win"):
        raise _NotBuildable("native CPU kernels are not built on Windows")
    cc = _compiler()
    folder = native_cache_dir()
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError:
        pass  # a read-only home: a private build below
    path = folder / _library_name(kernel, cc)
    lib = None
    if _trusted(folder):
        lib = _open_cached(path)
        if lib is None and os.access(folder, os.W_OK):
            try:
                _build(kernel, cc, path)  # replaces a missing, foreign or damaged file
            except OSError:
                pass  # e.g. a full disk: a private build below
            else:
                lib = _open(path)
    elif folder.is_dir():
        _warn_once(
            f"recvision: the kernel cache {folder} can be written by other users, so it is not used; every process "
            f"builds {kernel.name} privately (chmod go-w {folder} to cache it)"
        )
    if lib is None:
        # no usable cache (read-only, or a folder others can write to): build in a private folder of this process;
        # the library stays mapped after its file is removed
        private = Path(tempfile.mkdtemp(prefix="recvision-native-"))
        try:
            _build(kernel, cc, private / path.name)
            lib = _open(private / path.name)
        finally:
            shutil.rmtree(private, ignore_errors=True)
    for symbol, (argtypes, restype) in kernel.signatures.items():
        try:
            fn = getattr(lib, symbol)
        except AttributeError:
            raise RuntimeError(f"the compiled kernel {path.name} has no symbol {symbol}") from None
        fn.argtypes, fn.restype = argtypes, restype
    return lib


_WARNED: set[str] = set()


def _warn_once(message: str) -> None:
    if message not in _WARNED:
        _WARNED.add(message)
        warnings.warn(message, RuntimeWarning, stacklevel=4)


def load_native(kernel: NativeKernel) -> ctypes.CDLL | None:
    """The compiled library of ``kernel`` (built on first use, then cached), or ``None`` if it cannot be had here.

    Returns ``None`` without trying when native kernels are off (:func:`recvision.config.native_enabled`). The
    outcome of a build is remembered for the process: a failed build is not retried. A build that fails although
    a compiler was found warns once (``RuntimeWarning``); a platform without a compiler falls back silently.
    """
    from ...config import native_enabled

    if not native_enabled():
        return None
    if kernel.name in _LOADED:  # the common case: no lock once the outcome is known
        return _LOADED[kernel.name]
    with _LOCK:
        if kernel.name not in _LOADED:
            try:
                _LOADED[kernel.name] = _load(kernel)
            except (RuntimeError, OSError) as err:
                _LOADED[kernel.name] = None
                _PROBLEMS[kernel.name] = str(err)
                if not isinstance(err, _NotBuildable):
                    _warn_once(f"recvision: native kernel {kernel.name} unavailable ({err}); running the PyTorch forms")
        return _LOADED[kernel.name]


def native_problem(kernel: NativeKernel) -> str | None:
    """``None`` if ``kernel`` is usable here, else one line saying why not (building it if that was not tried)."""
    from ...config import native_enabled

    if not native_enabled():
        return "native CPU kernels are off (recvision.config.set_native(True) or RECVISION_NATIVE=1 turns them on)"
    if load_native(kernel) is not None:
        return None
    return f"the native kernel {kernel.name} is not available: {_PROBLEMS.get(kernel.name, 'unknown reason')}"
