"""Test-suite set-up.

Triton reads ``TRITON_INTERPRET`` when a kernel is decorated, so it is set here, before any recvision module
that defines kernels is imported. Without a GPU the kernels then run on CPU tensors through Triton's interpreter.
"""

from __future__ import annotations

import os

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
