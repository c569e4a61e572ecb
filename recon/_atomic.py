"""Atomic file writes: a temporary file beside the target, then :func:`os.replace`.

A crash, ``Ctrl-C`` or ``kill`` while writing leaves either the old file or no file under the final name, never a
half-written one, and the temporary file is removed on any error.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path


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
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
