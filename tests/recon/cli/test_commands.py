"""The ``recon`` dispatcher, ``--help`` of every command, and ``synth`` / ``evaluate`` / ``figure`` / ``demo``."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from recon.cli import COMMANDS
from recon.data.mri_data import read_volume, read_volume_info
from recon.metrics import nmse, psnr, ssim

OWN_COMMANDS = ["synth", "predict", "evaluate", "figure", "demo"]


def test_top_level_help_lists_every_command(run_cli) -> None:
    code, out, _ = run_cli("--help")
    assert code == 0
    for name in COMMANDS:
        assert name in out
    assert "recon demo" in out  # examples


@pytest.mark.parametrize("name", OWN_COMMANDS)
def test_command_help_shows_examples(capsys: pytest.CaptureFixture[str], name: str) -> None:
    from recon.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main([name, "--help"])
    out = capsys.readouterr().out
    assert exit_info.value.code == 0
    assert f"usage: recon {name}" in out and "examples:" in out and f"recon {name}" in out.split("examples:")[1]


def test_unknown_command_and_missing_module(run_cli, monkeypatch: pytest.MonkeyPatch) -> None:
    import recon.cli as cli

    with pytest.raises(SystemExit) as exit_info:
        run_cli("reconstruct")
    assert exit_info.value.code == 2
    monkeypatch.setattr(cli, "_available", lambda name: name != "train")
    code, _, err = run_cli("train", "--config", "x.yaml")
    assert code == 1 and "`recon train` is not available" in err
    code, out, _ = run_cli("--help")
    assert "(not available)" in out


def test_python_dash_m_recon() -> None:
    result = subprocess.run([sys.executable, "-m", "recon", "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "predict" in result.stdout


def test_synth_writes_a_valid_dataset(tmp_path: Path, run_cli) -> None:
    args = ("--volumes", 2, "--slices", 3, "--coils", 3, "--size", 32, 24, "--recon-size", 16, 24, "--seed", 5)
    code, out, _ = run_cli("synth", tmp_path / "d", *args)
    assert code == 0 and "wrote 2 files" in out
    files = sorted((tmp_path / "d").glob("*.h5"))
    assert [f.name for f in files] == ["synth_phantom_5_000.h5", "synth_phantom_5_001.h5"]
    info = read_volume_info(files[0])
    assert info.kspace_shape == (3, 3, 32, 24) and info.recon_size == (16, 24) and not info.has_mask
    assert read_volume(files[0]).target.shape == (3, 16, 24)


def test_synth_test_layout_and_bad_options(tmp_path: Path, run_cli) -> None:
    args = ("--volumes", 1, "--slices", 1, "--size", 32, "--test-layout", "--mask", "random", "--acceleration", 8)
    assert run_cli("synth", tmp_path / "t", *args)[0] == 0
    info = read_volume_info(next((tmp_path / "t").glob("*.h5")))
    assert info.has_mask and info.target_key is None and info.attrs["acceleration"] > 4
    code, _, err = run_cli("synth", tmp_path / "x", "--size", 4)
    assert code == 1 and "--size" in err
    code, _, err = run_cli("synth", tmp_path / "x", "--test-layout", "--mask", "poisson")
    assert code == 1 and "1-D line mask" in err


def test_evaluate_table_and_csv_match_the_metrics(tiny_data: Path, tmp_path: Path, run_cli) -> None:
    preds = tmp_path / "preds"
    assert run_cli("predict", tiny_data, preds, "--model", "zero-filled")[0] == 0
    csv_path = tmp_path / "metrics.csv"
    code, out, err = run_cli("evaluate", "--targets", tiny_data, "--predictions", preds, "--csv", csv_path)
    assert code == 0 and err == ""
    rows = list(csv.DictReader(csv_path.open()))
    assert [r["volume"] for r in rows] == [*sorted(p.name for p in tiny_data.glob("*.h5")), "mean"]
    scores = []
    for row in rows[:-1]:
        with h5py.File(tiny_data / row["volume"]) as t, h5py.File(preds / row["volume"]) as p:
            gt, pred = t["reconstruction_rss"][()], p["reconstruction"][()]
        expected = {"SSIM": ssim(gt, pred), "PSNR": psnr(gt, pred), "NMSE": nmse(gt, pred)}
        scores.append([expected[m] for m in ("SSIM", "PSNR", "NMSE")])
        for metric, value in expected.items():
            assert float(row[metric]) == pytest.approx(value, rel=1e-9)
        assert f"{expected['SSIM']:.4f}" in out
    mean = np.mean(scores, axis=0)
    assert [float(rows[-1][m]) for m in ("SSIM", "PSNR", "NMSE")] == pytest.approx(mean.tolist(), rel=1e-9)
    assert any(line.startswith("mean ") for line in out.splitlines()) and "+/- std" in out


def test_evaluate_reports_missing_predictions(tiny_data: Path, tmp_path: Path, run_cli) -> None:
    first = sorted(tiny_data.glob("*.h5"))[0]
    preds = tmp_path / "preds"
    assert run_cli("predict", first, preds, "--model", "zero-filled")[0] == 0
    code, out, err = run_cli("evaluate", "--targets", tiny_data, "--predictions", preds)
    assert code == 0 and first.name in out
    assert len(err.splitlines()) == 2 and all("no prediction of the same name" in line for line in err.splitlines())
    assert run_cli("evaluate", "--targets", tiny_data, "--predictions", preds, "--strict")[0] == 3


def test_figure_command(tiny_data: Path, tiny_checkpoint: Path, tmp_path: Path, run_cli) -> None:
    first = sorted(tiny_data.glob("*.h5"))[0]
    for model, extra in (("cs", ()), ("cirim", ("--checkpoint", tiny_checkpoint))):
        assert run_cli("predict", first, tmp_path / model, "--model", model, *extra)[0] == 0
    png = tmp_path / "fig.png"
    preds = [tmp_path / m / first.name for m in ("cs", "cirim")]
    code, out, err = run_cli("figure", first, *preds, "--out", png, "--slice", 1)
    assert code == 0, err
    assert png.read_bytes()[:4] == b"\x89PNG"
    code, _, err = run_cli("figure", first, *preds, "--out", png, "--slice", 7)
    assert code == 1 and "--slice 7 is out of range" in err
    code, _, err = run_cli("figure", first, preds[0], "--labels", "a", "b", "--out", png)
    assert code == 1 and "2 labels for 1 predictions" in err


def test_comparison_figure_metrics_in_titles(tmp_path: Path) -> None:
    from recon.figures import comparison_figure, slice_metrics

    rng = np.random.default_rng(0)
    target = rng.random((24, 24)).astype(np.float32)
    noisy = target + 0.1 * rng.standard_normal((24, 24)).astype(np.float32)
    scores = slice_metrics(target, noisy, maxval=1.0)
    assert scores["SSIM"] == pytest.approx(ssim(target[None], noisy[None], maxval=1.0))
    assert scores["PSNR"] == pytest.approx(psnr(target[None], noisy[None], maxval=1.0))
    path = comparison_figure(target, {"zero-filled": noisy, "model": target}, tmp_path / "f.png", maxval=1.0)
    assert path.stat().st_size > 1000
    assert [p.name for p in tmp_path.iterdir()] == ["f.png"]  # no temporary file left
    with pytest.raises(ValueError, match="at least one"):
        comparison_figure(target, {}, tmp_path / "g.png")


@pytest.mark.slow
def test_demo_end_to_end_small(tmp_path: Path, run_cli, tiny_checkpoint: Path, monkeypatch) -> None:
    """The demo on a tiny dataset; default weights replaced by a random tiny checkpoint so the test is fast."""
    import recon.cli._common as common

    monkeypatch.setattr(common, "load_default_model", lambda name: common.load_checkpoint_model(tiny_checkpoint))
    out = tmp_path / "demo"
    args = ("--out", out, "--volumes", 1, "--slices", 2, "--size", 32, "--coils", 2)
    code, stdout, err = run_cli("demo", *args, "--methods", "zero-filled", "cs", "cirim")
    assert code == 0, err
    rows = [line.split() for line in stdout.splitlines()]
    methods = {(row[0], row[-5]) for row in rows if len(row) >= 6 and row[-5] in ("4x", "8x")}
    assert {("zero-filled", "4x"), ("zero-filled", "8x"), ("cs", "4x"), ("cirim", "8x")} <= methods
    for name in ("demo_4x", "demo_8x", "demo_4x_real", "demo_8x_real"):
        assert (out / "figures" / f"{name}.png").is_file()
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert {r["method"] for r in rows} == {"zero-filled", "cs", "cirim"} and len(rows) == 2 * 3 * 2 * 2
    assert {r["data"] for r in rows} == {"phantom", "real"}
    real = [r for r in rows if r["data"] == "real" and r["volume"] != "mean"]
    assert all("epi_heldout" in r["volume"] for r in real)
    assert "real-anatomy volume (epi_heldout" in stdout
    # progress readable in a log: one line per method and acceleration as it starts, and its result
    assert "recon demo: [1/6] phantom data: zero-filled at 4x ...\n" in stdout
    assert "recon demo: [6/6] real data: cirim at 8x: SSIM " in stdout
    # a rerun in the same folder works and does not mix old outputs in
    code, _, err = run_cli("demo", *args, "--methods", "zero-filled", "--accelerations", "4")
    assert code == 0 and err == ""
    # without the real-anatomy volume, none of an earlier run's real-anatomy outputs stay behind
    code, _, err = run_cli("demo", *args, "--methods", "zero-filled", "--accelerations", "4", "--real-source", "none")
    assert code == 0, err
    assert not list((out / "predictions_real").rglob("*.h5")) and not list((out / "figures").glob("*_real.png"))
    assert {r["data"] for r in csv.DictReader((out / "metrics.csv").open())} == {"phantom"}
    # a folder holding other data is refused rather than overwritten
    (out / "data" / "precious.h5").write_bytes(b"x")
    code, _, err = run_cli("demo", *args, "--methods", "zero-filled")
    assert code == 1 and "holds files the demo did not write" in err
    assert (out / "data" / "precious.h5").read_bytes() == b"x"


@pytest.mark.slow
def test_demo_with_the_shipped_weights(tmp_path: Path, run_cli) -> None:
    """`recon demo` as the README runs it (every method, default weights), on a tiny dataset."""
    weights = pytest.importorskip("recon.weights")
    missing = [n for n in weights.default_model_names() if not (weights.WEIGHTS_DIR / f"{n}.safetensors").is_file()]
    if missing:
        pytest.skip(f"default weights not shipped yet: {missing}")
    args = ("--out", tmp_path, "--volumes", 1, "--slices", 1, "--size", 32, "--coils", 2)
    code, out, err = run_cli("demo", *args)
    assert code == 0 and "skipping" not in out, err
    rows = [line.split() for line in out.splitlines()]
    ran = {row[0] for row in rows if len(row) >= 6 and row[-5] in ("4x", "8x")}
    assert ran == {"zero-filled", "cs", "cirim", "rim", "recurrentvarnet"}
