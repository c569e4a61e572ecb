"""Loading DIRECT / ATOMMIC checkpoints: reproduce the reference outputs stored in ``tests/data/interop``.

The fixtures were written by ``tests/interop/make_fixtures.py`` with the reference implementations themselves
(random weights, small sizes); here only our code runs. Our models run in float64 on the stored inputs; DIRECT's
references are float32 (its FFT wrappers accept complex64 only), ATOMMIC's float64.
"""

from __future__ import annotations

import json
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from recon.interop import (
    ConversionError,
    convert_atommic_state_dict,
    convert_direct_state_dict,
    from_real_pair,
    load_atommic_checkpoint,
    load_direct_checkpoint,
    read_state_dict,
)
from recon.ops import sens_reduce

DATA = Path(__file__).resolve().parents[1] / "data" / "interop"
CASES = sorted(p.stem for p in DATA.glob("*.safetensors"))
TOLERANCE = 1e-4


def _model_name(case: str) -> str:
    return next(m for m in ("recurrentvarnet", "cirim", "rim") if case.split("_", 1)[1].startswith(m))


def _fixture(case: str) -> tuple[dict, dict[str, torch.Tensor]]:
    with safe_open(str(DATA / f"{case}.safetensors"), framework="pt") as f:
        config = json.loads(f.metadata()["config"])
    with np.load(DATA / f"{case}.npz") as npz:
        arrays = {k: torch.from_numpy(npz[k]).double() for k in npz.files}
    return config, arrays


def _rel(ours: torch.Tensor, ref: torch.Tensor) -> float:
    return ((ours - ref).abs().norm() / ref.abs().norm()).item()


def _load(case: str, config: dict) -> torch.nn.Module:
    path = DATA / f"{case}.safetensors"
    model = _model_name(case)
    config = {k: v for k, v in config.items() if k != "kind"}
    if case.startswith("direct_"):
        return load_direct_checkpoint(path, model, **config)
    return load_atommic_checkpoint(path, model)  # the config comes from the file's metadata


def test_fixtures_present() -> None:
    assert len(CASES) >= 6, f"expected the interop fixtures in {DATA}; run tests/interop/make_fixtures.py"
    assert {_model_name(c) for c in CASES} == {"rim", "cirim", "recurrentvarnet"}
    assert {c.split("_")[0] for c in CASES} == {"direct", "atommic"}


@pytest.mark.parametrize("case", CASES)
def test_reproduces_reference(case: str) -> None:
    config, arrays = _fixture(case)
    model = _load(case, config).double()
    kspace, mask, sens = from_real_pair(arrays["masked_kspace"], arrays["mask"], arrays["sens_maps"])
    with torch.no_grad():
        predictions = model.predictions(kspace, mask, sens)
    kind = config["kind"]
    if kind == "kspace":  # DIRECT RecurrentVarNet returns k^T; ours returns R F^-1 k^T
        reference = sens_reduce(torch.view_as_complex(arrays["output"].contiguous()), sens)
        assert _rel(predictions[-1][-1], reference) < TOLERANCE
        return
    if "outputs" not in arrays:  # ATOMMIC RecurrentVarNet: only the final image
        reference = torch.view_as_complex(arrays["output"].contiguous())
        assert _rel(predictions[-1][-1], reference) < TOLERANCE
        return
    outputs = arrays["outputs"]
    if kind == "image":
        outputs = torch.view_as_complex(outputs.contiguous())
    if outputs.ndim == 4:  # (T, N, H, W): one "cascade"
        outputs = outputs[None]
    assert len(predictions) == outputs.shape[0] and all(len(c) == outputs.shape[1] for c in predictions)
    for c, cascade in enumerate(predictions):
        for t, ours in enumerate(cascade):
            ours = ours.abs() if kind == "magnitude" else ours
            err = _rel(ours, outputs[c, t])
            assert err < TOLERANCE, f"cascade {c} step {t}: relative error {err:.2e}"


def test_wrong_weights_are_detected() -> None:
    """The comparison has teeth: flipping the GRU update-gate conversion breaks reproduction."""
    config, arrays = _fixture("direct_recurrentvarnet")
    model = _load("direct_recurrentvarnet", config).double()
    kspace, mask, sens = from_real_pair(arrays["masked_kspace"], arrays["mask"], arrays["sens_maps"])
    reference = sens_reduce(torch.view_as_complex(arrays["output"].contiguous()), sens)
    with torch.no_grad():
        model.blocks[0].regularizer.cells[0].ih.bias[6:12].neg_()
        assert _rel(model(kspace, mask, sens), reference) > 1e-3


def test_pickle_payload_refused(tmp_path: Path) -> None:
    class Payload:
        def __reduce__(self):
            return (print, ("executed",))

    path = tmp_path / "model_1000.pt"
    with open(path, "wb") as f:
        pickle.dump({"model": {"w": torch.zeros(1)}, "extra": Payload()}, f, protocol=2)
    with pytest.raises(ValueError, match="refusing to unpickle"):
        load_direct_checkpoint(path, "cirim", time_steps=3)


def test_direct_and_lightning_wrappers(tmp_path: Path) -> None:
    state = load_file(DATA / "direct_cirim.safetensors")
    torch.save({"model": state, "__version__": "2.2.0", "iteration": 5}, tmp_path / "model_5.pt")
    model = load_direct_checkpoint(tmp_path / "model_5.pt", "cirim", time_steps=3)
    assert model.config.num_cascades == 2 and model.config.carry_hidden is False
    atommic = load_file(DATA / "atommic_rim.safetensors")
    torch.save({"state_dict": atommic, "epoch": 3}, tmp_path / "rim.ckpt")
    rim = load_atommic_checkpoint(
        tmp_path / "rim.ckpt", "rim", time_steps=2, fft_centered=True, fft_normalization="ortho"
    )
    assert rim.config.num_steps == 8 and rim.config.cell.value == "gru"  # rounded up as ATOMMIC does
    read, config = read_state_dict(tmp_path / "rim.ckpt")
    assert read.keys() == atommic.keys() and config is None


def test_unknown_and_missing_keys_named(tmp_path: Path) -> None:
    state = load_file(DATA / "direct_cirim.safetensors")
    extra = {**state, "block_list.0.surprise.weight": torch.zeros(2)}
    with pytest.raises(ConversionError, match="surprise"):
        convert_direct_state_dict(extra, "cirim", time_steps=3)
    missing = {k: v for k, v in state.items() if k != "block_list.1.layers.0.recurrent.hh"}
    with pytest.raises(ConversionError, match=r"block_list\.1\.layers\.0\.recurrent\.hh"):
        convert_direct_state_dict(missing, "cirim", time_steps=3)
    with pytest.raises(ConversionError, match="time_steps"):
        convert_direct_state_dict(state, "cirim")
    with pytest.raises(ValueError, match="unknown DIRECT cirim config keys"):
        convert_direct_state_dict(state, "cirim", time_steps=3, length=4)
    with pytest.raises(ConversionError, match="recurrent_hidden_channels"):
        convert_direct_state_dict(state, "cirim", time_steps=3, recurrent_hidden_channels=64)


def test_wrong_model_refused() -> None:
    state = load_file(DATA / "direct_cirim.safetensors")
    with pytest.raises(ConversionError, match="not a DIRECT RIM"):
        convert_direct_state_dict(state, "rim", length=3)
    with pytest.raises(ValueError, match="unknown model"):
        convert_direct_state_dict(state, "varnet")
    cirim = load_file(DATA / "atommic_cirim.safetensors")
    with pytest.raises(ConversionError, match="one cascade"):
        convert_atommic_state_dict(cirim, "rim", time_steps=8)
    with pytest.raises(ConversionError, match="not an ATOMMIC RecurrentVarNet"):
        convert_atommic_state_dict(cirim, "recurrentvarnet", num_steps=8)


def test_atommic_unsupported_settings(tmp_path: Path) -> None:
    state = load_file(DATA / "atommic_cirim.safetensors")
    with pytest.raises(ConversionError, match="no_dc"):
        convert_atommic_state_dict(state, "cirim", time_steps=8, no_dc=False)
    with pytest.raises(ConversionError, match="conv_dilations"):
        convert_atommic_state_dict(state, "cirim", time_steps=8, conv_dilations=[1, 1, 1])
    with pytest.raises(ConversionError, match="recurrent_layer"):
        convert_atommic_state_dict(state, "cirim", time_steps=8, recurrent_layer="GRU")
    sens = {**state, "coil_sensitivity_maps_nn.model.0.weight": torch.zeros(1)}
    with pytest.raises(ConversionError, match="drop_sensitivity_model"):
        convert_atommic_state_dict(sens, "cirim", time_steps=8)
    converted, config = convert_atommic_state_dict(sens, "cirim", time_steps=8, drop_sensitivity_model=True)
    assert config["cell"] == "indrnn" and config["sigma"] == 1.0
    assert convert_atommic_state_dict(state, "cirim", time_steps=8, sigma=0.2)[1]["sigma"] == 1.0  # clamped


def test_safetensors_round_trip_of_converted(tmp_path: Path) -> None:
    """The converted weights are plain tensors: they save as safetensors and reload into a fresh model."""
    from recon.models import create_model

    converted, config = convert_direct_state_dict(
        load_file(DATA / "direct_rim.safetensors"), "rim", initializer_dilations=(1, 2)
    )
    save_file(converted, tmp_path / "ours.safetensors")
    model = create_model("rim", **config)
    model.load_state_dict(load_file(tmp_path / "ours.safetensors"))
    assert config["regularizer"] == "gru_stack" and config["no_parameter_sharing"]


def test_atommic_archive(tmp_path: Path) -> None:
    """An ``.atommic`` archive: ``model_weights.ckpt`` read weights-only in memory, ``model_config.yaml`` as config."""
    import io
    import tarfile

    import yaml

    config, arrays = _fixture("atommic_cirim")
    buffer = io.BytesIO()
    torch.save(load_file(DATA / "atommic_cirim.safetensors"), buffer)
    members = {
        "./model_weights.ckpt": buffer.getvalue(),
        "./model_config.yaml": yaml.safe_dump({k: v for k, v in config.items() if k != "kind"}).encode(),
    }
    with tarfile.open(tmp_path / "cirim.atommic", "w:gz") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    model = load_atommic_checkpoint(tmp_path / "cirim.atommic", "cirim").double()
    kspace, mask, sens = from_real_pair(arrays["masked_kspace"], arrays["mask"], arrays["sens_maps"])
    reference = torch.view_as_complex(arrays["outputs"][-1, -1].contiguous())
    with torch.no_grad():
        assert _rel(model(kspace, mask, sens), reference) < TOLERANCE


def test_atommic_rss_with_sense_initializer_refused() -> None:
    """ATOMMIC feeds a 'sense' initialiser the pipeline's RSS image under RSS coil combination: refused, with why."""
    state = load_file(DATA / "atommic_recurrentvarnet_uncentred.safetensors")
    config, _ = _fixture("atommic_recurrentvarnet_uncentred")
    config = {k: v for k, v in config.items() if k != "kind"}
    assert config["coil_combination_method"] == "RSS" and config["initializer_initialization"] == "zero_filled"
    convert_atommic_state_dict(state, "recurrentvarnet", config)  # the reproduced pairing still loads
    with pytest.raises(ConversionError, match="initializer_initialization='sense' with coil_combination_method='RSS'"):
        convert_atommic_state_dict(state, "recurrentvarnet", config, initializer_initialization="sense")


def test_direct_rim_steps_refused_unless_one() -> None:
    state = load_file(DATA / "direct_rim.safetensors")
    config, _ = _fixture("direct_rim")
    config = {k: v for k, v in config.items() if k != "kind"}
    convert_direct_state_dict(state, "rim", **config, steps=1)
    with pytest.raises(ConversionError, match="steps=2 is not supported: only steps=1"):
        convert_direct_state_dict(state, "rim", **config, steps=2)


def _lightning_ckpt(path: Path, case: str, extra: object = None) -> dict:
    omegaconf = pytest.importorskip("omegaconf")
    config, arrays = _fixture(case)
    cfg = omegaconf.OmegaConf.create({k: v for k, v in config.items() if k != "kind"})
    hparams = {"cfg": cfg} if extra is None else {"cfg": cfg, "extra": extra}
    torch.save({"state_dict": load_file(DATA / f"{case}.safetensors"), "hyper_parameters": hparams}, path)
    return arrays


def test_lightning_checkpoint_with_omegaconf_hyper_parameters(tmp_path: Path) -> None:
    """The OmegaConf config is read through an allow-list and used as the model config."""
    arrays = _lightning_ckpt(tmp_path / "cirim.ckpt", "atommic_cirim")
    with pytest.raises(pickle.UnpicklingError):  # plain weights_only loading refuses it
        torch.load(tmp_path / "cirim.ckpt", weights_only=True)
    state, config = read_state_dict(tmp_path / "cirim.ckpt")
    assert isinstance(config, dict) and type(config["time_steps"]) is int
    model = load_atommic_checkpoint(tmp_path / "cirim.ckpt", "cirim").double()  # no overrides: config from the file
    kspace, mask, sens = from_real_pair(arrays["masked_kspace"], arrays["mask"], arrays["sens_maps"])
    reference = torch.view_as_complex(arrays["outputs"][-1, -1].contiguous())
    with torch.no_grad():
        assert _rel(model(kspace, mask, sens), reference) < TOLERANCE


def test_lightning_checkpoint_with_a_payload_is_still_refused(tmp_path: Path) -> None:
    class Payload:
        def __reduce__(self):
            return (print, ("executed",))

    _lightning_ckpt(tmp_path / "evil.ckpt", "atommic_cirim", extra=Payload())
    with pytest.raises(ValueError, match=r"refusing to unpickle it: it needs builtins\.print"):
        read_state_dict(tmp_path / "evil.ckpt")


def test_lightning_omegaconf_checkpoint_without_omegaconf(tmp_path: Path, monkeypatch) -> None:
    """Without omegaconf: plain checkpoints still load; an OmegaConf one gets one line saying what to install."""
    _lightning_ckpt(tmp_path / "cirim.ckpt", "atommic_cirim")
    torch.save({"state_dict": load_file(DATA / "atommic_rim.safetensors")}, tmp_path / "plain.ckpt")
    monkeypatch.setitem(sys.modules, "omegaconf", None)  # import omegaconf now fails
    assert read_state_dict(tmp_path / "plain.ckpt")[1] is None
    with pytest.raises(ValueError, match="install omegaconf") as info:
        read_state_dict(tmp_path / "cirim.ckpt")
    assert "\n" not in str(info.value)
