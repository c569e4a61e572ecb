"""Findings of a newcomer's trial: repeated --predictions, run folders as --checkpoint, a lone .safetensors, weights
told apart in the evaluate table, file counts, and a demo too small for its acceleration."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

from recon.provenance import read_provenance

TINY_RIM = {"num_steps": 2, "hidden_channels": 4}


def _rim_checkpoint(path: Path, seed: int) -> Path:
    from recon.models import create_model
    from recon.training import save_checkpoint

    torch.manual_seed(seed)
    return save_checkpoint(path, create_model("rim", **TINY_RIM), "rim", TINY_RIM)


def test_evaluate_repeated_predictions_and_weights_in_settings(tiny_data: Path, tmp_path: Path, run_cli) -> None:
    one = sorted(tiny_data.glob("*.h5"))[0]
    outs = []
    for seed in (0, 1):
        out = tmp_path / f"rim{seed}"
        ckpt = _rim_checkpoint(tmp_path / f"ckpt{seed}", seed)
        assert run_cli("predict", one, out, "--checkpoint", ckpt)[0] == 0
        outs.append(out)
    code, out, err = run_cli("evaluate", "--targets", one, "--predictions", outs[0], "--predictions", outs[1])
    assert code == 0 and err == ""
    rows = {line.split()[0]: line for line in out.splitlines() if line.startswith(str(tmp_path))}
    assert set(rows) == {str(o) for o in outs}  # both kept, not only the last
    for folder in outs:
        digest = read_provenance(folder / one.name)["weights_sha256"][:8]
        assert f"rim {digest}, equispaced 4x" in rows[str(folder)]
    assert rows[str(outs[0])].split()[1:3] != rows[str(outs[1])].split()[1:3]


def test_predict_accepts_a_run_folder(tiny_data: Path, tmp_path: Path, run_cli) -> None:
    run_dir = tmp_path / "run"
    _rim_checkpoint(run_dir / "last", 0)
    shutil.copytree(run_dir / "last", run_dir / "step-00000002")
    one = sorted(tiny_data.glob("*.h5"))[0]
    code, out, err = run_cli("predict", one, tmp_path / "out", "--checkpoint", run_dir)
    assert code == 0 and err == "" and "1 written" in out
    by_last = tmp_path / "out_last"
    assert run_cli("predict", one, by_last, "--checkpoint", run_dir / "last")[0] == 0
    assert read_provenance(tmp_path / "out" / one.name) == read_provenance(by_last / one.name)


def test_lone_safetensors_names_the_missing_config(tiny_data: Path, tmp_path: Path, run_cli) -> None:
    ckpt = _rim_checkpoint(tmp_path / "ckpt", 0)
    lone = tmp_path / "alone" / "weights.safetensors"
    lone.parent.mkdir()
    shutil.copy(ckpt / "model.safetensors", lone)
    code, out, err = run_cli("predict", tiny_data, tmp_path / "out", "--checkpoint", lone)
    lines = err.strip().splitlines()
    assert code == 1 and out == "" and len(lines) == 1
    # both accepted configs are named: <stem>.json (the shipped weights' layout) and config.json
    assert str(lone.with_suffix(".json")) in lines[0] and str(lone.parent / "config.json") in lines[0]
    assert not (tmp_path / "out").exists()


def test_synth_counts_files_in_words(tmp_path: Path, run_cli) -> None:
    code, out, _ = run_cli("synth", tmp_path / "one", "--volumes", 1, "--slices", 1, "--size", 32, "--coils", 2)
    assert code == 0 and "wrote 1 file to" in out


def test_demo_warns_when_the_centre_is_too_small(capsys) -> None:
    import recon.cli.demo as demo

    demo._warn_small_centre(128, [4, 8])
    demo._warn_small_centre(32, [4])
    assert capsys.readouterr().err == ""
    demo._warn_small_centre(32, [4, 8])
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "--size 32 is too small for 8x" in lines[0] and "1 column(s)" in lines[0]
    assert "use --size 63 or more" in lines[0]


def test_demo_command_prints_the_warning(tmp_path: Path, run_cli) -> None:
    args = ("--out", tmp_path, "--volumes", 1, "--slices", 1, "--size", 32, "--coils", 2, "--real-source", "none")
    code, _, err = run_cli("demo", *args, "--methods", "zero-filled", "--accelerations", 8)
    assert code == 0 and err.startswith("recon demo: warning: --size 32 is too small for 8x")
