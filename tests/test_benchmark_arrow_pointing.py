"""The APE benchmark script: end to end on a tiny budget (slow), argument checks and resuming (fast)."""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "arrow_pointing.py"
ANALYSIS = SCRIPT.with_name("arrow_pointing_analysis.py")
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
    argv = ["--models", "plstm", "vit", *TINY, "--stem-layers", "1", "--train-samples", "8", "--json", str(out),
            "--save-weights"]  # fmt: skip
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
    assert (tmp_path / "ape.runs" / "vit_seed0.pt").is_file()
    analysis = subprocess.run([sys.executable, str(ANALYSIS), "errors", str(out), "vit", "0", "--samples", "8"],
                              capture_output=True, text=True, timeout=120)  # fmt: skip
    assert analysis.returncode == 0 and "error by arrow-disc distance" in analysis.stdout, analysis.stderr[-2000:]
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


@pytest.mark.parametrize("norm, layer", [("none", None), ("batch", "BatchNorm2d"), ("layer", "LayerNorm2d")])
def test_arrow_pointing_stem_norm(norm: str, layer: str | None) -> None:
    import torch

    stem = _script().ConvStem.build(3, 8, norm)
    names = [type(m).__name__ for m in stem]
    assert names.count("Conv2d") == 3 and names.count("GELU") == 3
    assert names.count(layer) == 3 if layer else len(names) == 6
    assert all(conv.bias is None for conv in stem if isinstance(conv, torch.nn.Conv2d)) == (layer is not None)
    assert stem(torch.zeros(2, 3, 64, 64)).shape == (2, 8, 8, 8)


def test_arrow_pointing_results_without_later_arguments_resume(tmp_path: Path) -> None:
    """A results file written before ``--stem-norm``, the pool flags and ``--clip-grad`` existed resumes only with
    the values it ran with (no norm, the models' own heads, no clipping)."""
    module = _script()
    out = tmp_path / "ape.json"
    old = [*TINY, "--stem-norm", "none", "--plstm-pool", "corners", "--vit-pool", "token", "--clip-grad", "0"]
    module.write_results(out, module.build_parser().parse_args(old), [])
    saved = json.loads(out.read_text())
    for key in module.ADDED_LATER:
        del saved["protocol"][key]
    out.write_text(json.dumps(saved))
    assert module.load_finished(out, module.build_parser().parse_args(old)) == []
    for flag, value, key in [("--stem-norm", "batch", "stem_norm"), ("--clip-grad", "1", "clip_grad")]:
        with pytest.raises(SystemExit, match=f"differs in: {key}"):
            module.load_finished(out, module.build_parser().parse_args([*old, flag, value]))


def test_arrow_pointing_oracle_report() -> None:
    spec = importlib.util.spec_from_file_location("arrow_pointing_analysis", ANALYSIS)
    analysis = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(analysis)
    args = argparse.Namespace(samples=200, train_size=64, scale=1 / 3, arrow_scale=2.0)
    report = analysis.oracle_report(args)
    rows = {line.split(" | ")[0].strip("| "): line for line in report.splitlines() if line.startswith("| ")}
    assert float(rows["angle + N(0, 2 deg)"].split(" | ")[1]) > 95  # nearly exact geometry: nearly always right
    assert float(rows["direction reversed (head read as tail)"].split(" | ")[1]) < 55
    g = analysis.geometry(50, 64, 0, args)
    assert (analysis.ray_hits(*(g[k] for k in ("arrow_x", "arrow_y", "angle", "circle_x", "circle_y", "radius")))
            == (g["label"] == 1)).all()  # fmt: skip


@pytest.mark.parametrize("family, flag, pool", [("plstm", "--plstm-pool", "corners"), ("vit", "--vit-pool", "avg")])
def test_arrow_pointing_pool_flags(family: str, flag: str, pool: str) -> None:
    module = _script()
    default = module.build_model(family, module.build_parser().parse_args([]))[1]
    assert default.global_pool == {"plstm": "avg", "vit": "token"}[family]  # the protocol's heads
    model = module.build_model(family, module.build_parser().parse_args([flag, pool]))[1]
    assert model.global_pool == pool


def test_arrow_pointing_sensitivity_report() -> None:
    """The paper's pLSTM corner head depends only on the corner cells at initialisation, the mean of all on all."""
    spec = importlib.util.spec_from_file_location("arrow_pointing_analysis", ANALYSIS)
    analysis = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(analysis)
    rows = []
    for pool in ("corners", "avg"):
        report = analysis.main(["sensitivity", "--models", "plstm", "--samples", "4", "--", "--plstm-pool", pool])
        rows.append(report.splitlines()[-1].split(" | "))
    corners, avg = rows
    assert corners[1] == "corners" and float(corners[4].split("-")[1]) < 0.05 and corners[3].endswith("1.00")
    assert avg[1] == "avg" and float(avg[5].split("-")[0]) > 0.2
