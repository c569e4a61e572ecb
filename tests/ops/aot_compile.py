"""Ahead-of-time compilation check for Triton kernels, shared by the kernel test files.

A test file that defines ``_compile_all(arch)`` and runs it under ``python <file> --compile-for 90 80`` calls
:func:`check_compiles_for_nvidia` from its test: the kernels are compiled to sm_90 / sm_80 binaries in a subprocess
without ``TRITON_INTERPRET``, which catches errors the interpreter lets through. No GPU is needed.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

__all__ = ["check_compiles_for_nvidia"]


def check_compiles_for_nvidia(test_file: str, archs: tuple[str, ...] = ("90", "80")) -> None:
    """Run ``test_file --compile-for *archs`` in a subprocess and fail with its output if it fails."""
    pytest.importorskip("triton.backends.nvidia")
    root = Path(test_file).resolve().parents[2]
    env = {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join([str(root), env.get("PYTHONPATH", "")])
    result = subprocess.run(
        [sys.executable, test_file, "--compile-for", *archs], env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
