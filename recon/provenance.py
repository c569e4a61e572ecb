"""Provenance of reconstruction outputs: the settings that produced a file, stored in it as HDF5 attributes.

Every file ``recon predict`` writes carries, as root attributes of the HDF5 file, the settings its values depend on:
the method (model name, sha256 of its weights file and its model config, the pre-processing it was trained with;
or the classical baseline and its parameters), the undersampling (mask type, acceleration, centre fraction, seed; or
``mask = "file"`` when the input file carries its own mask), the precision and the recon version. The whole record
is also stored as one JSON string (attribute ``provenance``) so that it reads back with its types exactly.

A rerun compares the record it would write with the one stored in an existing output: equal records mean the output
is the result of this very command and may be reused; anything else (including outputs without a record, written
by an older recon or another tool) is a different result and must not be passed off as this run's.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path

import h5py

__all__ = [
    "PROVENANCE_ATTR",
    "Provenance",
    "describe_differences",
    "file_sha256",
    "mask_settings",
    "read_provenance",
    "write_provenance",
]

PROVENANCE_ATTR = "provenance"
"""Root attribute holding the JSON record; the individual keys are also stored as attributes for ``h5dump``."""

Provenance = dict[str, str | int | float | None]
"""One output's settings: JSON scalars only, so that records compare exactly after a round trip."""

MASK_KEYS = ("mask", "acceleration", "center_fraction", "seed")
"""The keys of the undersampling settings (what ``recon figure`` needs to redraw the zero-filled image)."""


def file_sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes (cached by path, size and modification time: weights are hashed once per run).

    Raises:
        OSError: When the file cannot be read.
    """
    path = Path(path).resolve()
    stat = path.stat()
    return _sha256(str(path), stat.st_size, stat.st_mtime_ns)


@lru_cache(maxsize=32)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def mask_settings(record: Mapping[str, object]) -> dict[str, object]:
    """The undersampling part of a record (``mask``, and for retrospective masks acceleration / centre / seed)."""
    return {key: record[key] for key in MASK_KEYS if key in record}


def write_provenance(hf: h5py.File, record: Mapping[str, object]) -> None:
    """Store ``record`` in the root attributes of an open, writable HDF5 file (JSON + one attribute per key)."""
    hf.attrs[PROVENANCE_ATTR] = json.dumps(dict(record), sort_keys=True)
    for key, value in record.items():
        # HDF5 attributes cannot hold None; the JSON record keeps it, the per-key attribute says "none"
        hf.attrs[key] = "none" if value is None else value


def read_provenance(path: str | os.PathLike) -> Provenance | None:
    """The record stored in an output file, or ``None`` when it has none (written by an older recon or another tool).

    Raises:
        OSError: When the file is not a readable HDF5 file.
        ValueError: When the ``provenance`` attribute is not a JSON object (names the file).
    """
    with h5py.File(path, "r") as hf:
        raw = hf.attrs.get(PROVENANCE_ATTR)
    if raw is None:
        return None
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8", "replace")
    try:
        record = json.loads(str(raw))
    except json.JSONDecodeError:
        record = None
    if not isinstance(record, dict):
        raise ValueError(f"{path}: the {PROVENANCE_ATTR!r} attribute is not a JSON object")
    return record


def describe_differences(stored: Mapping[str, object], wanted: Mapping[str, object]) -> str:
    """``"model 'cirim' (now 'rim'), acceleration 8.0 (now 4.0)"``: every key whose value differs, stored first."""

    def show(key: str, value: object) -> str:
        if value is _UNSET:
            return "<unset>"
        if key.endswith("_sha256") and isinstance(value, str):
            return repr(value[:12] + "...")  # enough to tell two files apart on one line
        return repr(value)

    parts = []
    for key in sorted(set(stored) | set(wanted)):
        old, new = stored.get(key, _UNSET), wanted.get(key, _UNSET)
        if old != new:
            parts.append(f"{key} {show(key, old)} (now {show(key, new)})")
    return ", ".join(parts)


_UNSET = object()
