"""Fixes from a newcomer trial: one clear line for bad input, checked before any work, no empty folders left."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def cs_prediction(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The CS prediction of the first tiny volume (fast: no model)."""
    from recon.cli import main

    out = tmp_path_factory.mktemp("cs_pred")
    first = sorted(tiny_data.glob("*.h5"))[0]
    assert main(["predict", str(first), str(out), "--model", "cs"]) == 0
    return out / first.name


def _one_error_line(err: str, *needles: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err and all(n in lines[0] for n in needles), err


def test_figure_refuses_a_prediction_of_another_volume(tiny_data: Path, cs_prediction: Path, tmp_path, run_cli):
    second = sorted(tiny_data.glob("*.h5"))[1]
    png = tmp_path / "fig.png"
    code, _, err = run_cli("figure", second, cs_prediction, "--out", png)
    assert code == 1 and not png.exists()
    _one_error_line(err, str(cs_prediction), "differs", second.name)


def test_figure_checks_files_exist_before_reading_provenance(tiny_data: Path, tmp_path, run_cli):
    first = sorted(tiny_data.glob("*.h5"))[0]
    for missing in (tmp_path / "nope.h5", tmp_path):
        code, _, err = run_cli("figure", first, missing, "--out", tmp_path / "f.png")
        assert code == 1 and "provenance" not in err
        _one_error_line(err, str(missing))


def test_figure_unwritable_out_is_one_line_before_any_work(tiny_data: Path, cs_prediction: Path, tmp_path, run_cli):
    first = sorted(tiny_data.glob("*.h5"))[0]
    afile = tmp_path / "afile"
    afile.write_text("x")
    code, _, err = run_cli("figure", first, cs_prediction, "--out", afile / "x.png")
    assert code == 1
    _one_error_line(err, str(afile / "x.png"), "cannot write", "is a file, not a folder")
    code, _, err = run_cli("figure", first, cs_prediction, "--out", tmp_path)
    assert code == 1
    _one_error_line(err, "cannot write", "folder")


def test_evaluate_checks_the_csv_path_first(tiny_data: Path, cs_prediction: Path, tmp_path, run_cli, monkeypatch):
    import recon.cli.evaluate as evaluate

    def boom(*args: object) -> None:
        raise AssertionError("scored before checking --csv")

    monkeypatch.setattr(evaluate, "evaluate_dirs", boom)
    afile = tmp_path / "afile"
    afile.write_text("x")
    code, _, err = run_cli(
        "evaluate", "--targets", tiny_data, "--predictions", cs_prediction.parent, "--csv", afile / "x.csv"
    )
    assert code == 1
    _one_error_line(err, "cannot write the CSV file", "is a file, not a folder")


NOT_A_CHECKPOINT = "not a checkpoint (neither a safetensors file nor a torch file)"


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("random.bin", bytes(range(256)) * 4, NOT_A_CHECKPOINT),
        ("notes.ckpt", b"hello\n", NOT_A_CHECKPOINT),
        ("x.pt", b"\x80\x02junk", "not a readable PyTorch checkpoint"),  # starts like a pickle, then is truncated
    ],
)
def test_a_file_that_is_no_checkpoint_is_not_called_a_pickle(tiny_data, tmp_path, run_cli, name, content, expected):
    path = tmp_path / name
    path.write_bytes(content)
    first = sorted(tiny_data.glob("*.h5"))[0]
    code, _, err = run_cli("predict", first, tmp_path / "out", "--model", "cirim", "--checkpoint", path)
    assert code == 1 and "pickle" not in err and not (tmp_path / "out").exists()
    _one_error_line(err, name, expected)


def test_a_safetensors_file_with_its_stem_json_loads(tiny_data: Path, tiny_checkpoint: Path, tmp_path, run_cli):
    # the shipped weights' layout: <stem>.safetensors + <stem>.json, no config.json
    folder = tmp_path / "weights"
    folder.mkdir()
    (folder / "tiny.safetensors").write_bytes((tiny_checkpoint / "model.safetensors").read_bytes())
    (folder / "tiny.json").write_text((tiny_checkpoint / "config.json").read_text())
    first = sorted(tiny_data.glob("*.h5"))[0]
    code, _, err = run_cli(
        "predict", first, tmp_path / "out", "--model", "cirim", "--checkpoint", folder / "tiny.safetensors"
    )
    assert code == 0, err
    (folder / "tiny.json").unlink()
    code, _, err = run_cli(
        "predict", first, tmp_path / "out2", "--model", "cirim", "--checkpoint", folder / "tiny.safetensors"
    )
    assert code == 1 and not (tmp_path / "out2").exists()
    _one_error_line(err, str(folder / "tiny.json"), str(folder / "config.json"))


def test_synth_validation_error_leaves_no_folder(tmp_path, run_cli):
    out = tmp_path / "s8" / "deeper"
    code, _, err = run_cli("synth", out, "--recon-size", 100, 100, "--size", 64)
    assert code == 1 and "Traceback" not in err
    assert not (tmp_path / "s8").exists()


def test_predict_leaves_no_empty_folder_when_every_file_fails(tmp_path, run_cli):
    bad = tmp_path / "in"
    bad.mkdir()
    (bad / "broken.h5").write_bytes(b"not hdf5")
    out = tmp_path / "out"
    code, _, err = run_cli("predict", bad, out, "--model", "zero-filled")
    assert code != 0 and "broken.h5" in err
    assert not out.exists()
    out.mkdir()  # a folder that existed before is kept
    run_cli("predict", bad, out, "--model", "zero-filled")
    assert out.is_dir()


def test_predict_into_a_file_says_it_is_not_a_folder(tiny_data: Path, tmp_path, run_cli):
    afile = tmp_path / "afile"
    afile.write_text("x")
    first = sorted(tiny_data.glob("*.h5"))[0]
    for out in (afile, afile / "sub"):
        code, _, err = run_cli("predict", first, out, "--model", "zero-filled")
        assert code == 1 and afile.read_text() == "x"
        _one_error_line(err, str(out), "is a file, not a folder")


@pytest.mark.parametrize("value", ["inf", "nan", "0.5", "-2"])
def test_non_finite_or_small_acceleration_is_refused(tiny_data: Path, tmp_path, run_cli, value):
    first = sorted(tiny_data.glob("*.h5"))[0]
    code, _, err = run_cli("predict", first, tmp_path / "out", "--model", "zero-filled", "--acceleration", value)
    assert code == 1 and not (tmp_path / "out").exists()
    _one_error_line(err, "--acceleration must be a finite number >= 1")
    code, _, err = run_cli("synth", tmp_path / "s", "--test-layout", "--acceleration", value)
    assert code == 1 and not (tmp_path / "s").exists()
    _one_error_line(err, "--acceleration must be a finite number >= 1")


def test_acceleration_must_be_finite_in_configs_and_the_api():
    from recon.config import DataConfig
    from recon.inference import build_mask_func

    with pytest.raises(ValueError, match="finite"):
        DataConfig(accelerations=[float("inf")], center_fractions=[0.08])
    with pytest.raises(ValueError, match="finite"):
        build_mask_func("equispaced", float("inf"), 0.08)


def test_center_fraction_zero_is_refused_once_naming_the_option(tiny_data: Path, tmp_path, run_cli):
    code, _, err = run_cli("predict", tiny_data, tmp_path / "out", "--model", "cs", "--center-fraction", 0)
    assert code == 1 and not (tmp_path / "out").exists()
    _one_error_line(err, "--center-fraction must be > 0")


def test_center_fraction_zero_is_ignored_for_files_with_their_own_mask(tmp_path, run_cli):
    from recon.data.synthetic import write_synthetic_dataset
    from recon.inference import build_mask_func

    data = tmp_path / "test_layout"
    mask = build_mask_func("equispaced", 4, 0.08)
    write_synthetic_dataset(data, 1, 2, (32, 32), num_coils=2, mask_func=mask, include_target=False)
    code, _, err = run_cli("predict", data, tmp_path / "out", "--model", "zero-filled", "--center-fraction", 0)
    assert code == 0, err


TRAIN_CONFIG = """\
model: {name: rim, num_steps: 2, hidden_channels: 4, cell: indrnn}
data: {mask_types: [equispaced_fraction], accelerations: [4], center_fractions: [0.16]}
train: {batch_size: 1, lr: 0.001, warmup_steps: 0, val_every: 0, log_every: 1, checkpoint_every: 0}
"""


def test_train_max_steps_zero_is_refused_and_a_finished_resume_says_so(tiny_data: Path, tmp_path, run_cli):
    config, run = tmp_path / "rim.yaml", tmp_path / "run"
    config.write_text(TRAIN_CONFIG)
    base = ["train", "--config", config, "--data", tiny_data, "--out", run, "--threads", 1]
    code, _, err = run_cli(*base, "--max-steps", 0)
    assert code == 1 and not run.exists()
    _one_error_line(err, "--max-steps must be >= 1; got 0")
    code, out, err = run_cli(*base, "--max-steps", 2)
    assert code == 0, err
    code, out, err = run_cli("train", "--data", tiny_data, "--out", run, "--resume", "--max-steps", 1, "--threads", 1)
    assert code == 0, err
    assert "already at step 2" in out and "nothing to train" in out
