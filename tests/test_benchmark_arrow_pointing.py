"""The APE benchmark script: end to end on a tiny budget (slow), argument checks and resuming (fast)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "arrow_pointing.py"
TINY = "--seeds 0 --steps 4 --batch-size 4 --val-samples 4 --eval-every 2 --test-samples 4 --eval-batch-size 4".split()


def _script():
    spec = importlib.util.spec_from_file_location("arrow_pointing_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(*argv: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *argv], capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_arrow_pointing_benchmark_runs_and_resumes(tmp_path: Path) -> None:
    out = tmp_path / "ape.json"
    argv = ["--models", "plstm", "vit", *TINY, "--stem-layers", "1", "--train-samples", "8", "--json", str(out)]
    proc = _run(*argv)
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads(out.read_text())["results"]
    assert sorted(r["family"] for r in results) == ["plstm", "vit"]
    for r in results:
        assert "error" not in r, r
        assert r["steps"] == 4 and [c["step"] for c in r["curve"]] == [2, 4]
        assert set(r["accuracy"]) == {"64", "128"} and all(0 <= a <= 1 for a in r["accuracy"].values())
    table = proc.stdout[proc.stdout.index("| model") :].splitlines()
    assert len(table) == 4 and table[2].startswith("| plstm_femto") and table[3].startswith("| vit_tiny_patch16_224")
    curves = out.with_suffix(".curves.csv").read_text().splitlines()
    assert curves[0] == "model,seed,step,train_loss,val_acc,seconds" and len(curves) == 1 + 2 * 2
    assert "test @128 px" in (tmp_path / "ape.runs" / "plstm_seed0.log").read_text()
    again = _run(*argv, timeout=60)  # both runs are in the JSON: nothing is trained again
    assert again.returncode == 0 and "2 runs already in" in again.stdout, again.stderr[-2000:]
    assert json.loads(out.read_text())["results"] == results


def test_arrow_pointing_benchmark_skips_finished_runs(tmp_path: Path) -> None:
    """A results file of the same protocol: its runs are skipped; the table is printed from it."""
    module = _script()
    out = tmp_path / "ape.json"
    argv = ["--models", "vit", *TINY, "--json", str(out)]
    args = module.build_parser().parse_args(argv)
    fake = {"family": "vit", "model": "vit_tiny_patch16_224", "seed": 0, "params": 1000, "steps": 4, "train_s": 60.0,
            "s_per_step": 15.0, "curve": [{"step": 4, "train_loss": 0.1, "val_acc": 0.95, "s": 60.0}],
            "accuracy": {"64": 0.96, "128": 0.7}}  # fmt: skip
    module.write_results(out, args, [fake])
    proc = _run(*argv, "--jobs", "1", timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (
        "1 runs already in" in proc.stdout
        and "| vit_tiny_patch16_224 | 1k | 1 | 96.0 ± 0.0 | 70.0 ± 0.0" in proc.stdout
    )
    assert not (tmp_path / "ape.runs").exists()  # no worker was started
    assert out.with_suffix(".curves.csv").read_text().splitlines()[1] == "vit,0,4,0.1000,0.9500,60"


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--steps", "0"], "--steps must be >= 1"),
        (["--eval-every", "0"], "--eval-every must be >= 1"),
        (["--scale", "0"], "--scale / --arrow-scale: ArrowPointingConfig.scale must be a positive number"),
        (["--train-size", "60"], "image size 60 px: must be >= 61"),
        (["--test-sizes", "64", "100"], "image size 100 px"),
        (["--stem-layers", "4"], "--stem-layers 4: must be >= 0 with 2**layers dividing --patch-size 8"),
        (["--train-samples", "10"], "--train-samples 10: must be 0 (fresh images) or >= --batch-size"),
    ],
)
def test_arrow_pointing_benchmark_rejects_bad_arguments(argv: list[str], message: str) -> None:
    proc = _run(*argv, timeout=120)
    assert proc.returncode != 0 and message in proc.stderr, proc.stderr[-1000:]


def test_arrow_pointing_benchmark_refuses_results_of_another_protocol(tmp_path: Path) -> None:
    module = _script()
    out = tmp_path / "ape.json"
    module.write_results(out, module.build_parser().parse_args([*TINY, "--lr", "5e-4"]), [])
    proc = _run(*TINY, "--json", str(out), timeout=120)
    assert proc.returncode != 0 and "holds runs of another protocol (differs in: lr)" in proc.stderr, proc.stderr
    out.write_text("not json")
    proc = _run(*TINY, "--json", str(out), timeout=120)
    assert proc.returncode != 0 and "not a results file of this script" in proc.stderr, proc.stderr
