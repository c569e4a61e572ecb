"""The APE benchmark script end to end on a tiny budget: worker processes, JSON, loss curve and the table."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "arrow_pointing.py"


@pytest.mark.slow
def test_arrow_pointing_benchmark_runs(tmp_path: Path) -> None:
    out = tmp_path / "ape.json"
    tiny = "--seeds 0 --steps 10 --batch-size 4 --test-samples 4 --eval-batch-size 4 --jobs 2".split()
    cmd = [sys.executable, str(SCRIPT), "--models", "plstm", "vit", *tiny, "--json", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads(out.read_text())["results"]
    assert sorted(r["family"] for r in results) == ["plstm", "vit"]
    for r in results:
        assert "error" not in r, r
        assert r["steps"] == 10 and len(r["loss_curve"]) == 10
        assert set(r["accuracy"]) == {"64", "128"} and all(0 <= a <= 1 for a in r["accuracy"].values())
    table = proc.stdout[proc.stdout.index("| model") :].splitlines()
    assert len(table) == 4 and table[2].startswith("| plstm_femto") and table[3].startswith("| vit_tiny_patch16_224")


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--steps", "0"], "--steps must be >= 1"),
        (["--scale", "0"], "--scale: ArrowPointingConfig.scale must be a positive number"),
        (["--train-size", "60"], "image size 60 px: must be >= 61"),
        (["--test-sizes", "64", "100"], "image size 100 px"),
    ],
)
def test_arrow_pointing_benchmark_rejects_bad_arguments(argv: list[str], message: str) -> None:
    proc = subprocess.run([sys.executable, str(SCRIPT), *argv], capture_output=True, text=True, check=False)
    assert proc.returncode != 0 and message in proc.stderr, proc.stderr[-1000:]
