"""The researcher's conveniences: --version, --checkpoint without --model, CS options, evaluate of several folders,
a clear --device error, and richer figures."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

import recon
from recon.provenance import read_provenance


def test_version(run_cli) -> None:
    code, out, err = run_cli("--version")
    assert (code, out, err) == (0, f"recon {recon.__version__}\n", "")


def test_checkpoint_without_model_uses_the_checkpoints_model(tiny_data: Path, tmp_path: Path, run_cli) -> None:
    from recon.models import create_model
    from recon.training import save_checkpoint

    config = {"num_steps": 2, "hidden_channels": 4}
    ckpt = save_checkpoint(tmp_path / "rim", create_model("rim", **config), "rim", config)
    one = sorted(tiny_data.glob("*.h5"))[0]
    code, out, err = run_cli("predict", one, tmp_path / "out", "--checkpoint", ckpt)
    assert code == 0 and err == "" and "1 written" in out  # the default --model cirim no longer gets in the way
    assert read_provenance(tmp_path / "out" / one.name)["method"] == "rim"
    code, _, err = run_cli("predict", one, tmp_path / "out2", "--checkpoint", ckpt, "--model", "cirim")
    assert code == 1 and "holds a 'rim' model but --model cirim was asked for" in err  # an explicit clash still is


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (("--model", "rim", "--cs-lambda", "0.1"), "--cs-lambda / --cs-iterations apply to --model cs only"),
        (("--model", "cs", "--cs-lambda", "-1"), "--cs-lambda must be >= 0; got -1.0"),
        (("--model", "cs", "--cs-iterations", "0"), "--cs-iterations must be >= 1; got 0"),
    ],
)
def test_bad_cs_options(tiny_data: Path, tmp_path: Path, run_cli, options: tuple[str, ...], message: str) -> None:
    code, _, err = run_cli("predict", tiny_data, tmp_path / "out", *options)
    assert code == 1 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize("command", ["predict", "demo"])
def test_device_cuda_without_cuda(tiny_data: Path, tmp_path: Path, run_cli, command: str) -> None:
    out = tmp_path / "out"
    argv = ("predict", tiny_data, out) if command == "predict" else ("demo", "--out", out)
    code, stdout, err = run_cli(*argv, "--device", "cuda")
    lines = err.strip().splitlines()
    assert code == 1 and len(lines) == 1 and stdout == ""
    assert (
        lines[0].startswith(f"recon {command}: error: --device cuda: CUDA is not available") and "--device cpu" in err
    )
    assert not out.exists()  # no empty output folder left behind


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_train_device_cuda_without_cuda(tiny_data: Path, tmp_path: Path, run_cli) -> None:
    config = Path(__file__).resolve().parents[3] / "configs" / "recon" / "rim.yaml"
    code, _, err = run_cli(
        "train", "--config", config, "--data", tiny_data, "--out", tmp_path / "run", "--device", "cuda"
    )
    assert code == 1 and "recon train: error: --device cuda: CUDA is not available" in err
    assert not (tmp_path / "run").exists()


def test_evaluate_several_folders_prints_one_table(tiny_data: Path, tmp_path: Path, run_cli) -> None:
    zf, cs = tmp_path / "zf", tmp_path / "cs"
    assert run_cli("predict", tiny_data, zf, "--model", "zero-filled", "--acceleration", "8")[0] == 0
    assert run_cli("predict", tiny_data, cs, "--model", "cs", "--acceleration", "8", "--cs-iterations", "20")[0] == 0
    _, single, _ = run_cli("evaluate", "--targets", tiny_data, "--predictions", cs)
    code, out, err = run_cli("evaluate", "--targets", tiny_data, "--predictions", zf, cs, "--csv", tmp_path / "m.csv")
    assert code == 0 and err == ""
    rows = {line.split()[0]: line for line in out.splitlines() if line.startswith(str(tmp_path))}
    assert set(rows) == {str(zf), str(cs)}
    assert "zero-filled, equispaced 8x" in rows[str(zf)] and "cs lambda 0.003, equispaced 8x" in rows[str(cs)]
    mean_ssim = next(line.split()[2] for line in single.splitlines() if line.startswith("mean"))
    assert rows[str(cs)].split()[-3] == mean_ssim  # the row is that folder's mean over volumes
    table = list(csv.DictReader((tmp_path / "m.csv").open()))
    assert {r["predictions"] for r in table} == {str(zf), str(cs)} and len(table) == 2 * 4  # 3 volumes + mean each


def test_evaluate_several_folders_reports_an_empty_one(tiny_data: Path, tmp_path: Path, run_cli) -> None:
    zf, empty = tmp_path / "zf", tmp_path / "empty"
    empty.mkdir()
    (empty / "other.h5").write_bytes(b"")
    assert run_cli("predict", tiny_data, zf, "--model", "zero-filled")[0] == 0
    code, out, err = run_cli("evaluate", "--targets", tiny_data, "--predictions", zf, empty, "--strict")
    assert code == 3 and f"{empty}: no prediction could be scored" in err and str(zf) in out


def test_figure_with_mask_zoom_and_amplified_errors(tmp_path: Path) -> None:
    from matplotlib.image import imread

    from recon.figures import comparison_figure

    rng = np.random.default_rng(0)
    target = rng.random((24, 32)).astype(np.float32)
    images = {"a": target + 0.01, "b": target * 0.9}
    mask = np.zeros(32, np.float32)
    mask[::4] = 1
    plain = comparison_figure(target, images, tmp_path / "plain.png")
    rich = comparison_figure(target, images, tmp_path / "rich.png", mask=mask, zoom=(4, 8, 8, 8))
    assert imread(rich).shape[0] > imread(plain).shape[0]  # the zoom row
    comparison_figure(None, images, tmp_path / "no_target.png", mask=mask, zoom="auto")  # mask gets its own column
    with pytest.raises(ValueError, match="must lie inside the image"):
        comparison_figure(target, images, tmp_path / "bad.png", zoom=(20, 0, 8, 8))
    assert not (tmp_path / "bad.png").exists()


def test_figure_titles_name_the_mask_and_the_error_gain(tmp_path: Path, monkeypatch) -> None:
    from matplotlib.figure import Figure

    from recon.figures import comparison_figure

    titles: list[str] = []
    real_savefig = Figure.savefig

    def capture(self, *args, **kwargs):
        titles.extend(ax.get_title() for ax in self.axes)
        return real_savefig(self, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", capture)
    target = np.ones((16, 16), np.float32)
    mask = np.zeros((16, 16), np.float32)
    mask[:, ::2] = 1
    comparison_figure(target, {"m": target * 0.5}, tmp_path / "f.png", mask=mask, zoom="auto", error_scale=0.1)
    assert "sampling mask (2.0x)" in titles and "m (zoom)" in titles and "target (zoom)" in titles
    assert any(t.startswith("|m - target| x10") for t in titles)
