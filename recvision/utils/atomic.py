"""Atomic file and folder writes: a temporary beside the target, then :func:`os.replace`.

A crash, ``Ctrl-C`` or ``kill`` while writing leaves either the old file (folder) or none under the final name, never
a half-written one, and the temporary is removed on any error. Temporaries get unique names (:mod:`tempfile`), so two
processes writing the same target never write into each other's temporary: the last rename wins, whole. Results get
the permissions of a normal new file or folder (``0o666`` / ``0o777`` less the umask), not ``mkstemp``'s owner-only
``0o600`` / ``0o700``.

The one atomic writer of both packages: ``recvision.finetune`` and every file ``recon`` writes (``recon`` may import
``recvision``, not the reverse). It imports only the standard library; ``recon`` imports it inside its writing
functions, so that importing ``recon`` does not import timm through ``recvision/__init__``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

__all__ = ["atomic_dir", "atomic_write"]


def _umask() -> int:
    # os.umask can only be read by setting it; set it straight back
    umask = os.umask(0)
    os.umask(umask)
    return umask


def atomic_write(path: str | os.PathLike, write: Callable[[str], None], suffix: str = ".tmp") -> Path:
    """Write ``path`` through ``write(tmp_name)`` and move the result into place.

    Args:
        path: the final file name; its folder must exist.
        write: writes the whole file to the temporary name it is given.
        suffix: suffix of the temporary file (some writers, e.g. matplotlib, infer the format from it).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        # mkstemp creates owner-only files; outputs should get the usual permissions of a new file
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_dir(path: str | os.PathLike, fill: Callable[[Path], None]) -> Path:
    """Build folder ``path`` through ``fill(tmp_dir)`` beside it and move it into place, replacing an existing one.

    The old folder is first moved aside and removed only once the new one is in place, so a crash leaves the old
    folder, the new one, or (between the two renames, a moment) the old one under a ``.NAME.*.old`` name.

    Args:
        path: the final folder; its parent is created if needed.
        fill: writes the folder's contents into the (empty, existing) temporary folder it is given.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        os.chmod(tmp_dir, 0o777 & ~_umask())  # mkdtemp makes 0o700 folders
        fill(tmp_dir)
        old = None
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
            os.replace(path, old / path.name)
        os.replace(tmp_dir, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp_dir.exists():
            shutil.rmtree(tmp_dir, ignore_errors=True)
    return path
