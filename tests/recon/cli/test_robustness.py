"""A corpus of bad inputs through ``recon predict`` and ``recon evaluate``.

Every bad input must give one clear line naming the file and the problem (no traceback), a non-zero exit when
nothing could be done, no partial outputs, untouched inputs; good files in a mixed folder are still processed.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from recon.data.synthetic import write_synthetic_dataset

# name -> substring the error line must contain (besides the file name)
BAD_FILES = {
    "empty.h5": "empty file (0 bytes)",
    "not_hdf5.h5": "not a readable HDF5 file",
    "truncated.h5": "",  # h5py's own wording varies by version; the file name and a reason are enough
    "no_kspace.h5": "[kspace]: missing dataset",
    "float_kspace.h5": "expected complex data",
    "rank5_kspace.h5": "expected rank 3",
    "nan_kspace.h5": "NaN",
    "inf_kspace.h5": "Inf",
    "short_mask.h5": "[mask]: expected a 1-D mask of length W=32",
}


def _write(path: Path, **datasets: np.ndarray) -> None:
    with h5py.File(path, "w") as hf:
        for key, value in datasets.items():
            hf.create_dataset(key, data=value)


def make_bad_files(folder: Path, good: Path) -> None:
    """Write :data:`BAD_FILES` into ``folder``, derived from the good multi-coil file ``good``."""
    with h5py.File(good, "r") as hf:
        kspace, target = hf["kspace"][()], hf["reconstruction_rss"][()]
    (folder / "empty.h5").write_bytes(b"")
    (folder / "not_hdf5.h5").write_text("patient,age\n1,42\n")
    data = good.read_bytes()
    (folder / "truncated.h5").write_bytes(data[: len(data) // 2])
    _write(folder / "no_kspace.h5", reconstruction_rss=target)
    _write(folder / "float_kspace.h5", kspace=np.abs(kspace).astype(np.float32), reconstruction_rss=target)
    _write(folder / "rank5_kspace.h5", kspace=kspace[None], reconstruction_rss=target)
    nan = kspace.copy()
    nan[1, 0, 3, 4] = np.nan
    _write(folder / "nan_kspace.h5", kspace=nan, reconstruction_rss=target)
    inf = kspace.copy()
    inf[0, 1, 5, 6] = np.inf
    _write(folder / "inf_kspace.h5", kspace=inf, reconstruction_rss=target)
    mask = np.zeros(30, dtype=np.float32)
    mask[12:18] = 1
    _write(folder / "short_mask.h5", kspace=kspace, mask=mask)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder with two good 32 x 32 multi-coil volumes, one good single-coil volume and :data:`BAD_FILES`."""
    folder = tmp_path_factory.mktemp("corpus")
    good = write_synthetic_dataset(folder, num_volumes=2, num_slices=2, shape=(32, 32), num_coils=2, prefix="good")
    write_synthetic_dataset(folder, 1, 2, (32, 32), challenge="singlecoil", prefix="single")
    make_bad_files(folder, good[0])
    return folder


def _lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.strip()]


def _assert_one_clear_line(err: str, name: str, expected: str) -> None:
    lines = _lines(err)
    assert len(lines) == 1, err
    assert "Traceback" not in err and name in lines[0] and expected in lines[0], lines[0]


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_each_bad_file_alone(corpus: Path, tmp_path: Path, run_cli, tree_state, name: str) -> None:
    before = tree_state(corpus)
    out_dir = tmp_path / "out"
    code, _, err = run_cli("predict", corpus / name, out_dir, "--model", "zero-filled")
    assert code == 1
    _assert_one_clear_line(err, name, BAD_FILES[name])
    assert not out_dir.exists()  # nothing written, not even a temporary file, and no empty folder left
    assert tree_state(corpus) == before


def test_missing_input(tmp_path: Path, run_cli) -> None:
    code, _, err = run_cli("predict", tmp_path / "absent.h5", tmp_path / "out", "--model", "zero-filled")
    assert code == 1
    _assert_one_clear_line(err, "absent.h5", "no such file or directory")


def test_folder_without_h5_files(tmp_path: Path, run_cli) -> None:
    (tmp_path / "readme.txt").write_text("no data here")
    code, _, err = run_cli("predict", tmp_path, tmp_path / "out", "--model", "zero-filled")
    assert code == 1
    _assert_one_clear_line(err, str(tmp_path), "no .h5")


def test_single_coil_file_with_a_multicoil_model(corpus: Path, tiny_checkpoint: Path, tmp_path: Path, run_cli):
    single = next(corpus.glob("single_*.h5"))
    args = ("--model", "cirim", "--checkpoint", tiny_checkpoint)
    code, _, err = run_cli("predict", single, tmp_path / "out", *args)
    assert code == 1
    _assert_one_clear_line(err, single.name, "needs multi-coil k-space")
    # the baselines do accept single-coil data
    assert run_cli("predict", single, tmp_path / "zf", "--model", "zero-filled")[0] == 0


def test_mixed_folder_processes_the_good_files(corpus: Path, tmp_path: Path, run_cli, tree_state) -> None:
    before = tree_state(corpus)
    out_dir = tmp_path / "out"
    code, out, err = run_cli("predict", corpus, out_dir, "--model", "cs")
    assert code == 0  # something was done; failures are listed
    good = sorted(p.name for p in corpus.glob("good_*.h5")) + sorted(p.name for p in corpus.glob("single_*.h5"))
    assert sorted(p.name for p in out_dir.iterdir()) == sorted(good)
    lines = _lines(err)
    assert len(lines) == len(BAD_FILES) and "Traceback" not in err
    for name, expected in BAD_FILES.items():
        assert sum(name in line and expected in line for line in lines) == 1, (name, lines)
    assert f"{len(good)} written, 0 already done, {len(BAD_FILES)} failed" in out
    assert tree_state(corpus) == before
    code, _, _ = run_cli("predict", corpus, out_dir, "--model", "cs", "--strict")
    assert code == 3


def test_output_path_is_a_file(corpus: Path, tmp_path: Path, run_cli) -> None:
    blocker = tmp_path / "out"
    blocker.write_text("a file, not a folder")
    code, _, err = run_cli("predict", corpus / "good_phantom_0_000.h5", blocker, "--model", "zero-filled")
    assert code == 1
    _assert_one_clear_line(err, "out", "cannot write to the output directory")
    assert blocker.read_text() == "a file, not a folder"


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root can write to read-only folders")
def test_output_directory_read_only(corpus: Path, tmp_path: Path, run_cli) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        code, _, err = run_cli("predict", corpus / "good_phantom_0_000.h5", locked, "--model", "zero-filled")
    finally:
        locked.chmod(0o700)
    assert code == 1
    _assert_one_clear_line(err, "locked", "cannot write to the output directory")


# ----------------------------------------------------------------------------------------------------------------
# Checkpoints


class _Payload:
    """Any non-tensor object: unpickling it would import and run code."""

    def __init__(self) -> None:
        self.value = 1


def test_pickle_checkpoint_is_refused(corpus: Path, tmp_path: Path, run_cli) -> None:
    from recon.models import create_model

    model = create_model("cirim", num_cascades=1, num_steps=1, hidden_channels=4)
    path = tmp_path / "evil.pt"
    torch.save({"model": "cirim", "model_config": {}, "state_dict": model.state_dict(), "hook": _Payload()}, path)
    args = ("--model", "cirim", "--checkpoint", path)
    code, _, err = run_cli("predict", corpus / "good_phantom_0_000.h5", tmp_path / "out", *args)
    assert code == 1
    _assert_one_clear_line(err, "evil.pt", "refused: this checkpoint carries a pickle payload")
    assert not (tmp_path / "out").exists()


def test_weights_only_pt_checkpoint_is_accepted(corpus: Path, tmp_path: Path, run_cli) -> None:
    from recon.models import create_model

    config = {"num_cascades": 1, "num_steps": 1, "hidden_channels": 4}
    path = tmp_path / "plain.pt"
    state = create_model("cirim", **config).state_dict()
    torch.save({"model": "cirim", "model_config": config, "state_dict": state}, path)
    args = ("--model", "cirim", "--checkpoint", path)
    code, _, err = run_cli("predict", corpus / "good_phantom_0_000.h5", tmp_path / "out", *args)
    assert code == 0, err


@pytest.mark.parametrize("damage", ["garbage", "no_config", "wrong_shapes"])
def test_damaged_checkpoint_folder(corpus: Path, tiny_checkpoint: Path, tmp_path: Path, run_cli, damage: str):
    ckpt = tmp_path / "ckpt"
    shutil.copytree(tiny_checkpoint, ckpt)
    expected = {
        "garbage": "not a valid safetensors file",
        "no_config": "config.json missing; expected a `recon train` run folder (with last/) or a checkpoint folder",
        "wrong_shapes": "weights do not fit",
    }[damage]
    if damage == "garbage":
        (ckpt / "model.safetensors").write_bytes(b"\x80\x04not safetensors at all")
    elif damage == "no_config":
        (ckpt / "config.json").unlink()
    else:
        text = (ckpt / "config.json").read_text().replace('"hidden_channels": 4', '"hidden_channels": 6')
        (ckpt / "config.json").write_text(text)
    args = ("--model", "cirim", "--checkpoint", ckpt)
    code, _, err = run_cli("predict", corpus / "good_phantom_0_000.h5", tmp_path / "out", *args)
    assert code == 1
    _assert_one_clear_line(err, "ckpt", expected)


# ----------------------------------------------------------------------------------------------------------------
# evaluate


@pytest.fixture
def pairs(corpus: Path, tmp_path: Path, run_cli) -> tuple[Path, Path]:
    """(targets, predictions): the two good volumes and their zero-filled predictions."""
    targets, preds = tmp_path / "targets", tmp_path / "preds"
    targets.mkdir()
    for path in corpus.glob("good_*.h5"):
        shutil.copy2(path, targets / path.name)
    assert run_cli("predict", targets, preds, "--model", "zero-filled")[0] == 0
    return targets, preds


def test_evaluate_bad_predictions(pairs: tuple[Path, Path], run_cli, tree_state) -> None:
    targets, preds = pairs
    names = sorted(p.name for p in preds.glob("*.h5"))
    _write(preds / names[1], reconstruction=np.zeros((2, 20, 32), np.float32))  # wrong shape
    _write(preds / "stranger.h5", reconstruction=np.zeros((2, 32, 32), np.float32))  # no target of that name
    before = tree_state(targets), tree_state(preds)
    code, out, err = run_cli("evaluate", "--targets", targets, "--predictions", preds)
    assert code == 0 and names[0] in out and names[1] not in out  # the good pair is scored
    lines = _lines(err)
    assert len(lines) == 2 and "Traceback" not in err
    assert any(names[1] in line and "differs from the target's" in line for line in lines)
    assert any("stranger.h5" in line and "no target of the same name" in line for line in lines)
    assert (tree_state(targets), tree_state(preds)) == before


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("nan", "NaN or Inf"),
        ("no_key", "no dataset reconstruction"),
        ("text", "not a readable HDF5 file"),
        ("complex", "expected real (slices, h, w) data"),
    ],
)
def test_evaluate_nothing_scorable(pairs: tuple[Path, Path], tmp_path: Path, run_cli, content: str, expected: str):
    targets, _ = pairs
    name = sorted(p.name for p in targets.glob("*.h5"))[0]
    preds = tmp_path / "bad_preds"
    preds.mkdir()
    if content == "text":
        (preds / name).write_text("not hdf5")
    elif content == "no_key":
        _write(preds / name, recon=np.zeros((2, 32, 32), np.float32))
    elif content == "complex":
        _write(preds / name, reconstruction=np.zeros((2, 32, 32), np.complex64))
    else:
        _write(preds / name, reconstruction=np.full((2, 32, 32), np.nan, np.float32))
    csv = tmp_path / "m.csv"
    code, _, err = run_cli("evaluate", "--targets", targets, "--predictions", preds, "--csv", csv)
    assert code == 1 and not csv.exists()
    lines = _lines(err)
    assert "Traceback" not in err
    assert any(name in line and expected in line for line in lines), lines
    assert lines[-1].endswith("could be scored")


def test_evaluate_csv_path_is_a_folder(pairs: tuple[Path, Path], tmp_path: Path, run_cli) -> None:
    targets, preds = pairs
    folder = tmp_path / "results"
    folder.mkdir()
    code, out, err = run_cli("evaluate", "--targets", targets, "--predictions", preds, "--csv", folder)
    assert code == 1 and out == ""  # refused before scoring anything (nothing computed in vain)
    _assert_one_clear_line(err, "results", "cannot write the CSV file")
    assert list(folder.iterdir()) == [] and not list(tmp_path.glob(".results.*"))


def test_evaluate_missing_folders(tmp_path: Path, run_cli) -> None:
    code, _, err = run_cli("evaluate", "--targets", tmp_path / "nope", "--predictions", tmp_path)
    assert code == 1
    _assert_one_clear_line(err, "nope", "targets folder not found")
