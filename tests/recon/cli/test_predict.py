"""``recon predict``: outputs, masks, models, figures, sharding, resume after an interruption."""

from __future__ import annotations

import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

from recon.baselines import zero_filled_rss
from recon.data.mri_data import read_volume
from recon.data.subsample import apply_mask
from recon.data.synthetic import write_synthetic_dataset
from recon.data.writer import center_crop
from recon.inference import build_mask_func


def _recon(path: Path) -> np.ndarray:
    with h5py.File(path, "r") as hf:
        assert list(hf.keys()) == ["reconstruction"]
        return hf["reconstruction"][()]


def test_zero_filled_matches_the_library_and_is_cropped(tiny_data: Path, tmp_path: Path, run_cli) -> None:
    code, out, err = run_cli("predict", tiny_data, tmp_path / "zf", "--model", "zero-filled", "--acceleration", "4")
    assert code == 0 and err == "" and "3 written, 0 already done, 0 failed" in out
    first = sorted(tiny_data.glob("*.h5"))[0]
    saved = _recon(tmp_path / "zf" / first.name)
    assert saved.dtype == np.float32 and saved.shape == (2, 24, 32)  # cropped to the header's recon matrix

    # the same retrospective mask as the library: equispaced, seeded by (seed, file name), padding respected
    volume = read_volume(first)
    seed = (0, *(ord(c) for c in first.name))
    masked, mask, _ = apply_mask(volume.kspace, build_mask_func("equispaced", 4, 0.08), seed=seed, padding=(0, 32))
    expected = center_crop(zero_filled_rss(masked).numpy(), (24, 32))
    np.testing.assert_allclose(saved, expected, rtol=1e-5, atol=1e-7)
    assert 3.0 < mask.numel() / mask.sum() < 5.0


def test_a_different_seed_draws_a_different_mask(tiny_data: Path, tmp_path: Path, run_cli) -> None:
    first = sorted(tiny_data.glob("*.h5"))[0]
    for seed in (0, 1):
        args = ("--model", "zero-filled", "--mask", "random", "--seed", seed)
        assert run_cli("predict", first, tmp_path / f"s{seed}", *args)[0] == 0
    assert not np.array_equal(_recon(tmp_path / "s0" / first.name), _recon(tmp_path / "s1" / first.name))


def test_file_with_its_own_mask_is_used_as_is(tmp_path: Path, run_cli) -> None:
    # test-set layout: undersampled k-space + mask, no target; --mask options must not change anything
    mask_func = build_mask_func("random", 8, 0.1)
    (path,) = write_synthetic_dataset(tmp_path / "test", 1, 2, (32, 32), 2, mask_func=mask_func, include_target=False)
    for name, accel in (("a", "4"), ("b", "8")):
        args = ("--model", "zero-filled", "--mask", "equispaced", "--acceleration", accel, "--figures")
        assert run_cli("predict", path, tmp_path / name, *args)[0] == 0
    assert (tmp_path / "a" / "figures" / f"{path.stem}.png").is_file()  # no target: images only
    stored = read_volume(path).kspace
    np.testing.assert_allclose(_recon(tmp_path / "a" / path.name), zero_filled_rss(stored).numpy(), rtol=1e-4)
    np.testing.assert_array_equal(_recon(tmp_path / "a" / path.name), _recon(tmp_path / "b" / path.name))


@pytest.mark.parametrize("mask", ["gaussian2d", "poisson"])
def test_2d_masks_with_cs(tiny_data: Path, tmp_path: Path, run_cli, mask: str) -> None:
    first = sorted(tiny_data.glob("*.h5"))[0]
    code, out, _ = run_cli("predict", first, tmp_path, "--model", "cs", "--mask", mask, "--center-fraction", "0.2")
    assert code == 0, out
    recon = _recon(tmp_path / first.name)
    target = read_volume(first).target.numpy()
    assert np.isfinite(recon).all() and recon.shape == target.shape
    assert np.linalg.norm(recon - target) < 0.5 * np.linalg.norm(target)


def test_cs_beats_zero_filled(tiny_data: Path, tmp_path: Path, run_cli) -> None:
    first = sorted(tiny_data.glob("*.h5"))[0]
    for model in ("zero-filled", "cs"):
        assert run_cli("predict", first, tmp_path / model, "--model", model)[0] == 0
    target = read_volume(first).target.numpy()
    errors = {m: np.linalg.norm(_recon(tmp_path / m / first.name) - target) for m in ("zero-filled", "cs")}
    assert errors["cs"] < 0.8 * errors["zero-filled"]


def test_checkpoint_model_and_figures(tiny_data: Path, tiny_checkpoint: Path, tmp_path: Path, run_cli) -> None:
    out_dir = tmp_path / "out"
    args = ("--model", "cirim", "--checkpoint", tiny_checkpoint, "--figures", "--batch-size", "2")
    code, out, err = run_cli("predict", tiny_data, out_dir, *args)
    assert code == 0, err
    for path in sorted(tiny_data.glob("*.h5")):
        recon = _recon(out_dir / path.name)
        assert recon.shape == (2, 24, 32) and np.isfinite(recon).all()
        png = out_dir / "figures" / f"{path.stem}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # the model really runs: the output equals a direct call with the same inputs
    from recon.inference import load_volume, make_reconstructor, reconstruct_volume
    from recon.training import load_model

    model, _ = load_model(tiny_checkpoint)
    first = sorted(tiny_data.glob("*.h5"))[0]
    volume = load_volume(first, build_mask_func("equispaced", 4, 0.08), seed=0)
    direct = reconstruct_volume(volume, make_reconstructor(model), batch_size=1)
    np.testing.assert_allclose(_recon(out_dir / first.name), direct, rtol=1e-4, atol=1e-6)


def test_checkpoint_of_another_model_is_refused(tiny_data: Path, tiny_checkpoint: Path, tmp_path: Path, run_cli):
    code, _, err = run_cli("predict", tiny_data, tmp_path / "o", "--model", "rim", "--checkpoint", tiny_checkpoint)
    assert code == 1 and "holds a 'cirim' model but --model rim" in err
    assert not (tmp_path / "o").exists()


def test_missing_default_weights_give_a_clear_error(tiny_data: Path, tmp_path: Path, run_cli, monkeypatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "recon.weights", None)  # import fails as if the package were not shipped
    code, _, err = run_cli("predict", tiny_data, tmp_path / "o", "--model", "rim")
    assert code == 1 and "no shipped default weights for 'rim'" in err and "Traceback" not in err


def test_output_folder_equal_to_input_folder_is_refused(tiny_data: Path, tmp_path: Path, run_cli, tree_state):
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    before = tree_state(data)
    code, _, err = run_cli("predict", data, data, "--model", "zero-filled")
    assert code == 1 and "outputs would replace the inputs" in err
    assert tree_state(data) == before


def test_sharding_splits_the_files_between_ranks(tiny_data: Path, tmp_path: Path, run_cli, monkeypatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    written = {}
    for rank in (0, 1):
        monkeypatch.setenv("RANK", str(rank))
        code, out, _ = run_cli("predict", tiny_data, tmp_path, "--model", "zero-filled")
        assert code == 0 and f"(rank {rank} of 2)" in out
        written[rank] = {p.name for p in tmp_path.glob("*.h5")} - set().union(*written.values())
    names = sorted(p.name for p in tiny_data.glob("*.h5"))
    assert written == {0: {names[0], names[2]}, 1: {names[1]}}


def test_bad_rank_environment(tiny_data: Path, tmp_path: Path, run_cli, monkeypatch) -> None:
    monkeypatch.setenv("RANK", "2")
    monkeypatch.setenv("WORLD_SIZE", "2")
    code, _, err = run_cli("predict", tiny_data, tmp_path, "--model", "zero-filled")
    assert code == 1 and "RANK < WORLD_SIZE" in err


def test_interrupted_batch_leaves_no_partial_file_and_resumes(
    tiny_data: Path, tmp_path: Path, run_cli, monkeypatch, tree_state
) -> None:
    """Ctrl-C while the second output is being written: the first is kept, no partial file, a rerun finishes."""
    before = tree_state(tiny_data)
    out_dir = tmp_path / "out"
    real_create = h5py.Group.create_dataset
    calls = {"n": 0}

    def interrupted_write(self, name, *args, **kwargs):
        calls["n"] += 1
        dataset = real_create(self, name, *args, **kwargs)
        if calls["n"] == 2:
            raise KeyboardInterrupt  # the data is half-way into the temporary file
        return dataset

    monkeypatch.setattr(h5py.Group, "create_dataset", interrupted_write)
    code, _, err = run_cli("predict", tiny_data, out_dir, "--model", "zero-filled")
    assert code == 130 and "rerun the same command to resume" in err
    names = sorted(p.name for p in tiny_data.glob("*.h5"))
    assert sorted(p.name for p in out_dir.iterdir()) == [names[0]]  # no partial or temporary file
    first_mtime = (out_dir / names[0]).stat().st_mtime_ns

    monkeypatch.setattr(h5py.Group, "create_dataset", real_create)
    code, out, _ = run_cli("predict", tiny_data, out_dir, "--model", "zero-filled")
    assert code == 0 and "2 written, 1 already done, 0 failed" in out
    assert (out_dir / names[0]).stat().st_mtime_ns == first_mtime  # finished output not redone
    assert sorted(p.name for p in out_dir.iterdir()) == names
    code, out, _ = run_cli("predict", tiny_data, out_dir, "--model", "zero-filled", "--overwrite")
    assert "3 written" in out
    assert tree_state(tiny_data) == before


@pytest.mark.slow
def test_killed_process_resumes(tmp_path: Path) -> None:
    """A real `python -m recon predict` killed (SIGKILL), then stopped (SIGTERM) mid-batch, then rerun to the end."""
    import os
    import signal
    import subprocess
    import sys
    import time

    data = tmp_path / "data"
    # about a second of CS per file, so that each signal lands while the batch is still running
    write_synthetic_dataset(data, num_volumes=6, num_slices=4, shape=(64, 64), num_coils=2)
    out_dir = tmp_path / "out"
    cmd = [sys.executable, "-m", "recon", "predict", str(data), str(out_dir), "--model", "cs", "--batch-size", "1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "RECON_NO_PROGRESS": "1"}

    def run_until_one_more_output(sig: int) -> tuple[int, str]:
        before = len(list(out_dir.glob("*.h5")))
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and len(list(out_dir.glob("*.h5"))) <= before:
            time.sleep(0.02)
        proc.send_signal(sig)
        _, stderr = proc.communicate(timeout=60)
        return proc.returncode, stderr

    code, _ = run_until_one_more_output(signal.SIGKILL)
    assert code == -signal.SIGKILL
    for path in out_dir.glob("*.h5"):  # whatever exists under a final name is complete
        assert _recon(path).shape == (4, 64, 64)
    code, stderr = run_until_one_more_output(signal.SIGTERM)
    done = sorted(out_dir.glob("*.h5"))
    assert 2 <= len(done) < 6, "the signals came too late to interrupt the batch"
    assert code == 143 and "rerun the same command to resume" in stderr
    assert not list(out_dir.glob(".*.tmp"))  # SIGTERM unwinds: temporary files removed
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert f"{6 - len(done)} written, {len(done)} already done, 0 failed" in result.stdout
    assert sorted(p.name for p in out_dir.iterdir()) == sorted(p.name for p in data.glob("*.h5"))


def test_checkpoint_preprocessing_comes_from_its_training_config(tiny_checkpoint: Path, tmp_path: Path) -> None:
    import json

    from recon.cli._common import load_checkpoint_model
    from recon.inference import Preprocessing

    assert load_checkpoint_model(tiny_checkpoint)[1] == Preprocessing("acs", "max")
    ckpt = tmp_path / "ckpt"
    shutil.copytree(tiny_checkpoint, ckpt)
    meta = json.loads((ckpt / "config.json").read_text())
    meta["train_config"]["data"].update(sens_method="espirit", normalize="mean")
    (ckpt / "config.json").write_text(json.dumps(meta))
    assert load_checkpoint_model(ckpt)[1] == Preprocessing("espirit", "mean")


@pytest.mark.slow  # imports MONAI (the training transforms): several seconds
def test_inference_preprocessing_matches_training(tiny_data: Path, tiny_checkpoint: Path) -> None:
    """``recon predict`` feeds a model exactly as ``recon train`` did (coil maps, scaling), so the outputs agree."""
    training_data = pytest.importorskip("recon.training.data")
    from recon.config import DataConfig
    from recon.inference import Preprocessing, load_volume, make_reconstructor, reconstruct_volume
    from recon.training import load_model

    model, _ = load_model(tiny_checkpoint)
    first = sorted(tiny_data.glob("*.h5"))[0]
    volume = load_volume(first, build_mask_func("random", 4, 0.08), seed=3)
    ours = reconstruct_volume(volume, make_reconstructor(model), batch_size=2, preprocessing=Preprocessing())
    kspace, mask, num_low = volume.masked_kspace, volume.mask, volume.num_low_frequencies
    theirs = training_data.reconstruct(model, kspace, mask, DataConfig(), num_low)
    np.testing.assert_allclose(ours, center_crop(theirs.numpy(), ours.shape[-2:]), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize(
    ("name", "config", "mask"),
    [
        ("rim", {"num_steps": 2, "hidden_channels": 4}, "random"),
        (
            "recurrentvarnet",
            {"num_steps": 2, "hidden_channels": 4, "num_layers": 1, "initializer_channels": (4, 4)},
            "poisson",
        ),
    ],
)
def test_other_models_from_checkpoints(tiny_data: Path, tmp_path: Path, run_cli, name: str, config, mask: str):
    from recon.models import create_model
    from recon.training import save_checkpoint

    config = {**config, "initializer_dilations": (1, 2)} if name == "recurrentvarnet" else config
    ckpt = save_checkpoint(tmp_path / "ckpt", create_model(name, **config), name, config)
    first = sorted(tiny_data.glob("*.h5"))[0]
    args = ("--model", name, "--checkpoint", ckpt, "--mask", mask, "--center-fraction", "0.2")
    code, _, err = run_cli("predict", first, tmp_path / "out", *args)
    assert code == 0, err
    recon = _recon(tmp_path / "out" / first.name)
    assert recon.shape == (2, 24, 32) and np.isfinite(recon).all() and recon.max() > 0


def test_precision_bf16_is_recorded_and_close_to_fp32(
    tiny_data: Path, tiny_checkpoint: Path, tmp_path: Path, run_cli
) -> None:
    from recon.provenance import read_provenance

    outs = {}
    for precision in ("fp32", "bf16"):
        out_dir = tmp_path / precision
        args = ("--checkpoint", tiny_checkpoint, "--precision", precision)
        code, _, err = run_cli("predict", tiny_data, out_dir, *args)
        assert code == 0, err
        first = sorted(out_dir.glob("*.h5"))[0]
        assert read_provenance(first)["precision"] == precision
        outs[precision] = _recon(first)
    fp32, bf16 = outs["fp32"], outs["bf16"]
    # magnitudes in the file's units; bf16 convs through the tiny CIRIM stay within 2 % RMS of fp32
    assert np.sqrt(np.mean((bf16 - fp32) ** 2)) < 2e-2 * np.sqrt(np.mean(fp32**2))
    # a rerun in the other precision is a different setting: refused without --overwrite
    code, _, err = run_cli(
        "predict", tiny_data, tmp_path / "fp32", "--checkpoint", tiny_checkpoint, "--precision", "bf16"
    )
    assert code == 1 and "precision" in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--precision", "fp16"), "--precision must be one of fp32, bf16; got 'fp16'"),
        (("--model", "cs", "--precision", "bf16"), "--precision bf16 applies to the learned models; --model cs"),
    ],
)
def test_bad_precision_is_one_line(tiny_data: Path, tmp_path: Path, run_cli, args, message) -> None:
    code, out, err = run_cli("predict", tiny_data, tmp_path / "o", *args)
    assert code == 1 and message in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "o").exists()
