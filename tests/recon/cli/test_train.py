"""``recon train``: a few steps on a tiny synthetic set, logs, checkpoints, resolved config, resume, bad input."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from recon.config import load_config
from recon.training import load_model

CONFIG = """\
model: {name: rim, num_steps: 2, hidden_channels: 4, cell: indrnn}
train: {lr: 3.0e-3, warmup_steps: 1, log_every: 1, seed: 0, device: cpu}
data: {mask_types: [equispaced_fraction, random], accelerations: [4, 8], center_fractions: [0.16, 0.08]}
"""


def _records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


def test_train_logs_checkpoints_and_resumes(
    tmp_path: Path, tiny_data: Path, run_cli: Callable[..., tuple[int, str, str]]
) -> None:
    config, run = tmp_path / "rim.yaml", tmp_path / "run"
    config.write_text(CONFIG)
    args = ["train", "--config", config, "--data", tiny_data, "--val", tiny_data, "--out", run, "--threads", "1"]
    code, out, err = run_cli(*args, "--max-steps", 3)
    assert code == 0, err
    records = _records(run)
    losses = [r for r in records if "loss" in r]
    assert [r["step"] for r in losses] == [1, 2, 3] and all(r["loss"] > 0 for r in losses)
    vals = [r for r in records if "val_ssim" in r]
    assert [r["step"] for r in vals] == [3] and 0 < vals[0]["val_ssim"] < 1
    assert "val_ssim" in out and "loss" in out
    # the resolved config: every field written out, the command-line override applied, loadable again
    resolved = load_config(run / "config.yaml")
    assert resolved.train.max_steps == 3 and resolved.model_config["hidden_channels"] == 4
    assert resolved.data.center_fractions == [0.16, 0.08]
    model, meta = load_model(run / "last")
    assert meta["step"] == 3 and meta["train_config"]["data"]["sens_method"] == "acs"
    assert (run / "step-00000003" / "model.safetensors").is_file()
    # training again into the same folder without --resume is refused (nothing is overwritten)
    before = (run / "last" / "model.safetensors").read_bytes()
    code, _, err = run_cli(*args, "--max-steps", 5)
    assert code != 0 and "already holds a run" in err and "--resume" in err
    assert (run / "last" / "model.safetensors").read_bytes() == before
    # --resume continues the step count from RUN_DIR/last (and reads RUN_DIR/config.yaml without --config)
    code, _, err = run_cli("train", "--data", tiny_data, "--out", run, "--resume", "--max-steps", 5, "--threads", 1)
    assert code == 0, err
    assert [r["step"] for r in _records(run) if "loss" in r] == [1, 2, 3, 4, 5]
    resumed, meta = load_model(run / "last")
    assert meta["step"] == 5
    after = resumed.state_dict()
    assert not all(torch.equal(value, after[key]) for key, value in model.state_dict().items())


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("model: {name: rim, hidden: 4}\n", "unknown key 'hidden' in section 'model'"),
        ("model: {name: rim}\ndata: {masks: [random]}\n", "unknown key 'masks' in section 'data'"),
    ],
)
def test_bad_config_is_one_line_error(
    tmp_path: Path, tiny_data: Path, run_cli: Callable[..., tuple[int, str, str]], text: str, needle: str
) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(text)
    code, _, err = run_cli("train", "--config", config, "--data", tiny_data, "--out", tmp_path / "run")
    assert code != 0 and needle in err and str(config) in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_bad_data_and_resume_without_run(
    tmp_path: Path, tiny_data: Path, run_cli: Callable[..., tuple[int, str, str]]
) -> None:
    config = tmp_path / "rim.yaml"
    config.write_text(CONFIG)
    code, _, err = run_cli("train", "--config", config, "--data", tmp_path / "nope", "--out", tmp_path / "run")
    assert code != 0 and "nope" in err
    code, _, err = run_cli("train", "--config", config, "--data", tiny_data, "--out", tmp_path / "r2", "--resume")
    assert code != 0 and "no checkpoint to resume" in err


def test_training_slices_masks_scale_and_crop(tiny_data: Path) -> None:
    from recon.baselines import zero_filled_rss
    from recon.config import DataConfig
    from recon.training.data import SliceMaskDataset

    data = DataConfig(center_fractions=[0.16, 0.08])
    train = SliceMaskDataset(tiny_data, data, seed=0, train=True)
    item = train[0]
    assert item["masked_kspace"].shape == item["sens_maps"].shape == (2, 32, 32)
    assert item["mask"].shape == (1, 1, 32) and item["target"].shape == (24, 32)  # target at the recon matrix
    assert float(zero_filled_rss(item["masked_kspace"]).max()) == pytest.approx(1.0, rel=1e-5)  # "max" scaling
    # training masks: a function of (seed, epoch, index) only
    masks, sampled = {}, set()
    for epoch in range(4):
        train.set_epoch(epoch)
        masks[epoch] = [train[i]["mask"] for i in range(len(train))]
        assert all(torch.equal(m, train[i]["mask"]) for i, m in enumerate(masks[epoch]))
        sampled |= {int(m.sum()) for m in masks[epoch]}
    assert any(not torch.equal(a, b) for a, b in zip(masks[0], masks[1], strict=True))
    assert len(sampled) > 1  # mixed accelerations / mask types
    # validation masks: fixed per file and slice, whatever the epoch
    val = SliceMaskDataset(tiny_data, data, seed=0, train=False)
    first = [val[i]["mask"] for i in range(len(val))]
    val.set_epoch(3)
    assert all(torch.equal(a, val[i]["mask"]) for i, a in enumerate(first))
    cropped = SliceMaskDataset(tiny_data, DataConfig(crop=[16, 16]), train=False)[0]
    assert cropped["target"].shape == (16, 16)


@pytest.mark.slow
def test_train_under_torchrun_two_ranks(tmp_path: Path, tiny_data: Path, torchrun) -> None:
    config, run = tmp_path / "rim.yaml", tmp_path / "run"
    config.write_text(CONFIG)
    cmd = ["-m", "recon", "train", "--config", str(config), "--data", str(tiny_data), "--val", str(tiny_data)]
    proc = torchrun([*cmd, "--out", str(run), "--max-steps", "2"], env={"RECON_NO_PROGRESS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = _records(run)  # only rank 0 logs: one record per step, one validation
    assert [r["step"] for r in records if "loss" in r] == [1, 2]
    assert [r["step"] for r in records if "val_ssim" in r] == [2]
    assert load_model(run / "last")[1]["step"] == 2


def test_train_speed_options_and_initial_weights(
    tmp_path: Path, tiny_data: Path, run_cli: Callable[..., tuple[int, str, str]]
) -> None:
    """--precision bf16 and --workers reach the training settings; --initial-weights starts from given weights."""
    from safetensors.torch import save_file

    from recon.models import create_model

    config = tmp_path / "rim.yaml"
    config.write_text(CONFIG)
    torch.manual_seed(123)
    start = create_model("rim", num_steps=2, hidden_channels=4, cell="indrnn")
    weights = tmp_path / "start.safetensors"
    save_file({k: v.contiguous() for k, v in start.state_dict().items()}, str(weights))
    run = tmp_path / "run"
    args = ["train", "--config", config, "--data", tiny_data, "--out", run, "--threads", 1, "--max-steps", 1]
    code, _, err = run_cli(*args, "--precision", "bf16", "--workers", 2, "--initial-weights", weights)
    assert code == 0, err
    resolved = load_config(run / "config.yaml")
    assert resolved.train.precision == "bf16" and resolved.train.num_workers == 2
    # one (warm-up) step from the initial weights stays far closer to them than to another initialisation
    model, _ = load_model(run / "last")
    torch.manual_seed(0)
    other = create_model("rim", num_steps=2, hidden_channels=4, cell="indrnn").state_dict()
    trained_1 = model.state_dict()
    moved = sum(float((trained_1[k] - v).abs().sum()) for k, v in start.state_dict().items())
    apart = sum(float((other[k] - v).abs().sum()) for k, v in start.state_dict().items())
    assert moved < 0.1 * apart
    # two steps with workers and bf16 run and change the weights
    code, _, err = run_cli("train", "--data", tiny_data, "--out", run, "--resume", "--max-steps", 2, "--threads", 1)
    assert code == 0, err
    trained, _ = load_model(run / "last")
    assert not all(torch.equal(v, trained.state_dict()[k]) for k, v in start.state_dict().items())


@pytest.mark.parametrize(
    ("make", "needle"),
    [
        (lambda p: p.write_text("not safetensors"), "--initial-weights must be a readable .safetensors"),
        (
            lambda p: __import__("safetensors.torch").torch.save_file({"x": torch.zeros(1)}, str(p)),
            "1 unexpected key(s), e.g. x",
        ),
    ],
)
def test_bad_initial_weights_are_one_line_errors(
    tmp_path: Path, tiny_data: Path, run_cli: Callable[..., tuple[int, str, str]], make, needle: str
) -> None:
    config, weights = tmp_path / "rim.yaml", tmp_path / "w.safetensors"
    config.write_text(CONFIG)
    make(weights)
    code, _, err = run_cli(
        "train", "--config", config, "--data", tiny_data, "--out", tmp_path / "run", "--initial-weights", weights
    )
    assert code != 0 and needle in err and str(weights) in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()  # nothing written


def test_initial_weights_shape_mismatch_and_run_folder(
    tmp_path: Path, tiny_data: Path, run_cli: Callable[..., tuple[int, str, str]]
) -> None:
    """Weights of another size name the mismatch; a run folder (or its `last`) is accepted as initial weights."""
    from safetensors.torch import save_file

    from recon.models import create_model

    config = tmp_path / "rim.yaml"
    config.write_text(CONFIG)
    wide = tmp_path / "wide.safetensors"
    save_file(
        {k: v.contiguous() for k, v in create_model("rim", num_steps=2, hidden_channels=8).state_dict().items()},
        str(wide),
    )
    code, _, err = run_cli(
        "train", "--config", config, "--data", tiny_data, "--out", tmp_path / "x", "--initial-weights", wide
    )
    assert code != 0 and "shape mismatch(es), e.g." in err and "(8" in err and "hidden_channels=4" in err
    base = ["train", "--config", config, "--data", tiny_data, "--threads", 1, "--max-steps", 1]
    code, _, err = run_cli(*base, "--out", tmp_path / "first")
    assert code == 0, err
    code, _, err = run_cli(*base, "--out", tmp_path / "second", "--initial-weights", tmp_path / "first")
    assert code == 0, err
