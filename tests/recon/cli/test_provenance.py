"""Provenance in every `recon predict` output; reruns never reuse or replace outputs of other settings silently;
`recon figure` takes the mask from the predictions' provenance."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import h5py
import numpy as np
import pytest

import recon
from recon.provenance import read_provenance


def _attrs(path: Path) -> dict[str, object]:
    with h5py.File(path, "r") as hf:
        return dict(hf.attrs)


def test_outputs_carry_their_provenance(tiny_data: Path, tmp_path: Path, run_cli) -> None:
    out = tmp_path / "zf"
    args = ("--mask", "random", "--acceleration", "6", "--center-fraction", "0.1", "--seed", "7")
    code, _, err = run_cli("predict", tiny_data, out, "--model", "zero-filled", *args)
    assert code == 0 and err == ""
    for path in sorted(out.glob("*.h5")):
        record = read_provenance(path)
        assert record == {
            "method": "zero-filled",
            "mask": "random",
            "acceleration": 6.0,
            "center_fraction": 0.1,
            "seed": 7,
            "sens_method": "acs",
            "normalize": "max",
            "precision": "fp32",
            "recon_version": recon.__version__,
        }
        attrs = _attrs(path)  # also one readable attribute per setting (h5dump / h5py users)
        assert attrs["acceleration"] == 6.0 and attrs["mask"] == "random" and json.loads(attrs["provenance"]) == record


def test_checkpoint_provenance_hashes_the_weights(tiny_data: Path, tiny_checkpoint: Path, tmp_path: Path, run_cli):
    out = tmp_path / "ckpt"
    code, _, err = run_cli("predict", tiny_data, out, "--model", "cirim", "--checkpoint", tiny_checkpoint)
    assert code == 0, err
    record = read_provenance(sorted(out.glob("*.h5"))[0])
    weights = hashlib.sha256((tiny_checkpoint / "model.safetensors").read_bytes()).hexdigest()
    config = hashlib.sha256((tiny_checkpoint / "config.json").read_bytes()).hexdigest()
    assert record["method"] == "cirim" and record["weights_sha256"] == weights and record["config_sha256"] == config


def test_cs_provenance_records_lambda_and_iterations(tiny_data: Path, tmp_path: Path, run_cli) -> None:
    one = sorted(tiny_data.glob("*.h5"))[0]
    code, _, err = run_cli("predict", one, tmp_path / "default", "--model", "cs")
    assert code == 0, err
    record = read_provenance(tmp_path / "default" / one.name)
    assert (record["cs_method"], record["cs_lambda"], record["cs_iterations"]) == ("tv", 3e-3, 100)
    code, _, err = run_cli(
        "predict", one, tmp_path / "tuned", "--model", "cs", "--cs-lambda", "0.03", "--cs-iterations", "20"
    )
    assert code == 0, err
    record = read_provenance(tmp_path / "tuned" / one.name)
    assert (record["cs_lambda"], record["cs_iterations"]) == (0.03, 20)
    with h5py.File(tmp_path / "default" / one.name) as a, h5py.File(tmp_path / "tuned" / one.name) as b:
        assert not np.allclose(a["reconstruction"][()], b["reconstruction"][()])  # the options reach the solver


def test_rerun_with_the_same_settings_reuses_the_outputs(tiny_data: Path, tmp_path: Path, run_cli) -> None:
    out = tmp_path / "out"
    assert run_cli("predict", tiny_data, out, "--model", "zero-filled")[0] == 0
    mtimes = {p.name: p.stat().st_mtime_ns for p in out.glob("*.h5")}
    code, text, _ = run_cli("predict", tiny_data, out, "--model", "zero-filled")
    assert code == 0 and "0 written, 3 already done" in text
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.h5")} == mtimes


def test_rerun_with_other_settings_is_refused_then_overwritten(
    tiny_data: Path, tmp_path: Path, run_cli, tree_state
) -> None:
    out = tmp_path / "out"
    assert run_cli("predict", tiny_data, out, "--model", "zero-filled", "--acceleration", "8")[0] == 0
    before = tree_state(out)
    code, text, err = run_cli("predict", tiny_data, out, "--model", "cs", "--acceleration", "4")
    assert code == 1 and text == ""
    lines = err.strip().splitlines()
    first = out / sorted(p.name for p in tiny_data.glob("*.h5"))[0]
    assert len(lines) == 1 and lines[0].startswith(f"recon predict: error: {first}: refusing to reuse or replace")
    assert "acceleration 8.0 (now 4.0)" in lines[0] and "method 'zero-filled' (now 'cs')" in lines[0]
    assert "and 2 more" in lines[0] and "--overwrite" in lines[0]
    assert tree_state(out) == before  # nothing written, nothing removed

    code, text, err = run_cli("predict", tiny_data, out, "--model", "zero-filled", "--acceleration", "4", "--overwrite")
    assert code == 0 and "3 written" in text
    assert all(read_provenance(p)["acceleration"] == 4.0 for p in out.glob("*.h5"))
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in tiny_data.glob("*.h5"))  # no temporaries


def test_output_without_provenance_is_refused(tiny_data: Path, tmp_path: Path, run_cli) -> None:
    """An output of an older recon (no record) may hold anything: refused, with the reason, unless --overwrite."""
    out = tmp_path / "old"
    out.mkdir()
    name = sorted(p.name for p in tiny_data.glob("*.h5"))[0]
    with h5py.File(out / name, "w") as hf:
        hf.create_dataset("reconstruction", data=np.zeros((2, 24, 32), np.float32))
    code, _, err = run_cli("predict", tiny_data, out, "--model", "zero-filled")
    assert code == 1 and f"{out / name}: refusing" in err and "without provenance" in err
    assert len(list(out.glob("*.h5"))) == 1
    code, text, _ = run_cli("predict", tiny_data, out, "--model", "zero-filled", "--overwrite")
    assert code == 0 and "3 written" in text and read_provenance(out / name) is not None


def _capture_figure(monkeypatch: pytest.MonkeyPatch) -> dict[str, object]:
    import recon.figures

    seen: dict[str, object] = {}

    def capture(target, images, path, **kwargs):
        seen.update(images=dict(images), **kwargs)
        return Path(path)

    monkeypatch.setattr(recon.figures, "comparison_figure", capture)
    return seen


def test_figure_takes_the_mask_from_the_provenance(tiny_data: Path, tmp_path: Path, run_cli, monkeypatch) -> None:
    one = sorted(tiny_data.glob("*.h5"))[0]
    mask = ("--acceleration", "8", "--center-fraction", "0.04", "--seed", "3")
    assert run_cli("predict", one, tmp_path / "zf8", "--model", "zero-filled", *mask)[0] == 0
    seen = _capture_figure(monkeypatch)
    code, _, err = run_cli("figure", one, tmp_path / "zf8" / one.name, "--out", tmp_path / "f.png")
    assert code == 0, err
    with h5py.File(tmp_path / "zf8" / one.name) as hf:
        expected = hf["reconstruction"][()]
    images = seen["images"]
    index = expected.shape[0] // 2
    # the recomputed zero-filled panel is the 8x one of the prediction, not the 4x of the option defaults
    np.testing.assert_allclose(images["zero-filled"], expected[index], rtol=1e-5, atol=1e-7)
    assert "(equispaced 8x" in seen["title"]


def test_figure_refuses_predictions_of_different_masks(tiny_data: Path, tmp_path: Path, run_cli) -> None:
    one = sorted(tiny_data.glob("*.h5"))[0]
    assert run_cli("predict", one, tmp_path / "a", "--model", "zero-filled", "--acceleration", "8")[0] == 0
    assert run_cli("predict", one, tmp_path / "b", "--model", "zero-filled", "--acceleration", "4")[0] == 0
    pa, pb = tmp_path / "a" / one.name, tmp_path / "b" / one.name
    code, _, err = run_cli("figure", one, pa, pb, "--out", tmp_path / "f.png")
    assert code == 1 and f"{pb}: undersampled differently from {pa}" in err and "acceleration 4.0" in err
    code, _, err = run_cli("figure", one, pa, "--acceleration", "4", "--out", tmp_path / "f.png")
    assert code == 1 and "--acceleration 4.0 contradicts the provenance" in err
    assert not (tmp_path / "f.png").exists()


def test_figure_of_old_predictions_warns_and_uses_the_options(tiny_data: Path, tmp_path: Path, run_cli) -> None:
    one = sorted(tiny_data.glob("*.h5"))[0]
    old = tmp_path / "old" / one.name
    old.parent.mkdir()
    with h5py.File(old, "w") as hf:
        hf.create_dataset("reconstruction", data=np.ones((2, 24, 32), np.float32))
    code, out, err = run_cli("figure", one, old, "--out", tmp_path / "f.png")
    assert code == 0 and "has no provenance" in err and "acceleration 4.0" in err and (tmp_path / "f.png").is_file()
