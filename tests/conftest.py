"""Test-suite set-up.

Triton reads ``TRITON_INTERPRET`` when a kernel is decorated, so it is set here, before any recvision module
that defines kernels is imported. Without a GPU the kernels then run on CPU tensors through Triton's interpreter.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from collections.abc import Callable

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("TRITON_F32_DEFAULT", "ieee")

import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _seed_everything() -> None:
    torch.manual_seed(42)


@pytest.fixture
def triton_device() -> str:
    """Device on which Triton-kernel tests run: CUDA if present, else the CPU under the interpreter."""
    pytest.importorskip("triton")
    if torch.cuda.is_available():
        return "cuda"
    if os.environ.get("TRITON_INTERPRET") != "1":
        pytest.skip("no GPU and TRITON_INTERPRET is not 1")
    return "cpu"


@pytest.fixture
def torchrun() -> Callable[..., subprocess.CompletedProcess]:
    """Launch ``python -m torch.distributed.run --standalone --nproc_per_node N ARGS`` on the CPU (gloo).

    Skips when torchrun or gloo is unavailable. The ranks run single-threaded with CUDA hidden; ``env`` adds
    variables. Returns the finished process (stdout and stderr captured as text) for the test to check.
    """
    if not (
        torch.distributed.is_available()
        and torch.distributed.is_gloo_available()
        and importlib.util.find_spec("torch.distributed.run") is not None
    ):
        pytest.skip("torch.distributed.run (torchrun) or gloo is unavailable")

    def run(args: list[str], env: dict[str, str] | None = None, nproc: int = 2) -> subprocess.CompletedProcess:
        full_env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc), *args]
        return subprocess.run(cmd, capture_output=True, text=True, env={**full_env, **(env or {})}, timeout=300)

    return run
