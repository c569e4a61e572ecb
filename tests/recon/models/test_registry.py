from __future__ import annotations

import pytest

from recon.models import CIRIM, RIM, CellType, RecurrentVarNet, create_model, list_models


def test_list_models() -> None:
    assert list_models() == ["cirim", "recurrentvarnet", "rim"]


@pytest.mark.parametrize(
    ("name", "cls", "cfg"),
    [
        ("rim", RIM, {"num_steps": 2, "hidden_channels": 4, "cell": "mgu"}),
        ("cirim", CIRIM, {"num_cascades": 2, "num_steps": 2, "hidden_channels": 4, "explicit_dc": True}),
        ("recurrentvarnet", RecurrentVarNet, {"num_steps": 2, "hidden_channels": 4, "no_parameter_sharing": False}),
    ],
)
def test_create_model(name: str, cls: type, cfg: dict) -> None:
    model = create_model(name, **cfg)
    assert isinstance(model, cls)
    for key, value in cfg.items():
        assert getattr(model.config, key) == value


def test_enum_coercion() -> None:
    assert create_model("rim", num_steps=1, hidden_channels=2, cell="indrnn").config.cell is CellType.INDRNN


def test_unknown_name() -> None:
    with pytest.raises(ValueError, match=r"unknown model 'varnet'.*'cirim', 'recurrentvarnet', 'rim'"):
        create_model("varnet")


def test_unknown_key() -> None:
    with pytest.raises(ValueError, match=r"unknown config keys \['num_step'\].*valid keys: \['num_steps'"):
        create_model("rim", num_step=3)
    with pytest.raises(ValueError, match="keep_prediction"):
        create_model("cirim", keep_predictions=True)


def test_invalid_value() -> None:
    with pytest.raises(ValueError, match=r"cell='lstm'.*'gru', 'mgu', 'indrnn'"):
        create_model("cirim", cell="lstm")
