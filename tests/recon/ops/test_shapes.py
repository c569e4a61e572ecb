"""The pure-Python broadcast check agrees with torch and keeps sympy out of the recon operators."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from recon.ops._shapes import broadcast_shape

CASES = [((), ()), ((3,), ()), ((2, 1, 4), (3, 1)), ((1, 1, 5, 5), (2, 8, 5, 5)), ((2, 3), (3, 2)), ((4,), (5,))]


@pytest.mark.parametrize("a, b", CASES)
def test_matches_torch_broadcast_shapes(a: tuple[int, ...], b: tuple[int, ...]) -> None:
    try:
        expected = tuple(torch.broadcast_shapes(a, b))
    except RuntimeError:
        expected = None
    assert broadcast_shape(a, b) == expected


def test_operators_do_not_import_sympy() -> None:
    code = (
        "import sys, torch\n"
        "from recon.ops import sense_forward\n"
        "x = torch.randn(1, 2, 8, 8, dtype=torch.complex64)\n"
        "sens = torch.randn(1, 2, 8, 8, dtype=torch.complex64)\n"
        "sense_forward(x[:, 0], sens, torch.ones(1, 1, 1, 8))\n"
        "print('sympy' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
