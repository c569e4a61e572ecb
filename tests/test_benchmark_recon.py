"""The recon benchmark scripts: the real-anatomy held-out split, the air-region error, and the training benchmark."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_air_mask_keeps_a_margin_around_the_object() -> None:
    bench = _load("recon_default_weights")
    target = torch.zeros(2, 40, 40)
    target[:, 15:25, 15:25] = 1.0
    noisy = target + 0.1 * torch.rand(2, 40, 40)  # a noise floor above the 3 % threshold everywhere
    air = bench.air_mask(noisy, low_noise_target=target)
    assert not air[:, 11:29, 11:29].any()  # the object and a 4-pixel margin are not air
    assert air[:, :5, :5].all() and air[:, -5:, -5:].all()
    assert bench.air_mask(noisy)[:, :5, :5].sum() == 0  # from the noisy target itself, the floor looks like object


@pytest.mark.slow
def test_real_anatomy_split_and_evaluation(tmp_path: Path) -> None:
    pytest.importorskip("nibabel")
    pytest.importorskip("pydicom")
    from recon.data.mri_data import list_volume_files, read_volume
    from recon.data.sources import HELDOUT_SOURCES

    bench = _load("recon_default_weights")
    bench.make_real_data(tmp_path)
    low, noisy = list_volume_files(tmp_path / "low"), list_volume_files(tmp_path / "realistic")
    assert [p.name for p in low] == [p.name for p in noisy] and len(low) == 4
    assert all(any(s in p.name for s in HELDOUT_SOURCES) for p in low)
    # same objects at both levels: the targets agree up to the noise
    a, b = read_volume(low[0]).target.flatten(), read_volume(noisy[0]).target.flatten()
    assert torch.corrcoef(torch.stack([a, b]))[0, 1] > 0.9 and not torch.equal(a, b)
    methods = bench._methods(["zero-filled"], {})
    results = bench.evaluate(
        tmp_path / "realistic", methods, max_volumes=1, mask_types=("equispaced_fraction",), air_from=tmp_path / "low"
    )
    for acc in (4, 8):
        ((ssim, psnr, nmse, seconds, air),) = results["zero-filled"][acc]
        assert 0 < ssim < 1 and psnr > 10 and 0 < nmse < 1 and 0 < air < 0.2
    table = bench.table(results, air=True)
    assert "4x air error (%)" in table and table.count("| zero-filled |") == 1


@pytest.mark.slow
def test_training_benchmark_data_table(tmp_path: Path) -> None:
    script = ROOT / "recon_training.py"
    cmd = [sys.executable, str(script), "--only", "data", "--slices", "1", "--epochs", "2", "--threads", "1"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| 0 |") or line.startswith("| 2 |")]
    assert len(rows) == 2
    for row in rows:
        cold, warm = (float(x) for x in row.split("|")[2:4])
        assert cold > 0 and warm > 0


def test_training_benchmark_child_measures_a_step() -> None:
    bench = _load("recon_training")
    result = bench._child_steps("rim", "bf16", True, 1, 1)
    assert result["s_per_step"] > 0 and result["peak_mib"] > 0
    assert json.loads(json.dumps(result)) == result and np.isfinite(result["s_per_step"])


def test_default_weights_benchmark_reports_cs_lambdas_only_when_cs_ran(tmp_path: Path) -> None:
    from recon.data.synthetic import write_synthetic_dataset

    write_synthetic_dataset(tmp_path / "data", num_volumes=1, num_slices=1, shape=(32, 32), num_coils=2)
    script = ROOT / "recon_default_weights.py"
    for methods, expected in (("zero-filled", False), ("zero-filled,tv", True)):
        cmd = [sys.executable, str(script), "evaluate", "--data", str(tmp_path / "data"), "--methods", methods]
        cmd += ["--mask-types", "equispaced_fraction"]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert ("CS lambdas" in proc.stdout) is expected and "| zero-filled |" in proc.stdout


def test_model_benchmark_layouts_run_each_distinct_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(ROOT))  # the script imports its sibling _measure
    bench = _load("recon_models")
    # "auto" is recon.inference's default, channels-last, so "on" beside it is not run twice
    assert bench.configurations(("fp32", "bf16"), ("auto", "on")) == [("fp32", "auto"), ("bf16", "auto")]
    pairs = bench.configurations(("fp32", "bf16"), ("off", "auto"))
    assert pairs == [("fp32", "off"), ("fp32", "auto"), ("bf16", "off"), ("bf16", "auto")]


@pytest.mark.slow
def test_model_benchmark_times_ours_in_each_layout() -> None:
    script = ROOT / "recon_models.py"
    cmd = [sys.executable, str(script), "--models", "rim", "--size", "32", "--coils", "2"]
    cmd += ["--precision", "fp32", "bf16", "--channels-last", "off", "auto"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| RIM")]
    assert [row.split("|")[2].strip() for row in rows] == ["fp32 NCHW", "fp32", "bf16 NCHW", "bf16"]
    bad = subprocess.run([*cmd[:2], "--worker", "rim", "--channels-last", "on", "off"], capture_output=True, text=True)
    assert bad.returncode == 2 and "one --channels-last value" in bad.stderr
