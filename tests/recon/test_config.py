"""YAML run configs (:mod:`recon.config`): the shipped files load, bad keys and values are named, round trip."""

from __future__ import annotations

from pathlib import Path

import pytest

from recon.config import ConfigError, DataConfig, config_to_dict, load_config, save_config
from recon.models import create_model

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "recon"


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "run.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("name", ["cirim", "rim", "recurrentvarnet"])
def test_shipped_configs_load_and_build(name: str) -> None:
    config = load_config(CONFIGS / f"{name}.yaml")
    assert config.model == name and config.train.model == name
    assert config.train.model_config == config.model_config
    assert sorted(config.data.accelerations) == [4, 8]
    assert set(config.data.mask_types) == {"equispaced_fraction", "random"}
    model = create_model(name, **config.model_config)
    params = sum(p.numel() for p in model.parameters())
    assert 1_000 < params < 500_000  # CPU-sized


@pytest.mark.parametrize(
    ("text", "needles"),
    [
        ("model: {name: rim, hiden_channels: 8}\n", ["'hiden_channels'", "'model'", "hidden_channels", "num_steps"]),
        ("model: {name: rim}\ntrain: {max_step: 3}\n", ["'max_step'", "'train'", "max_steps", "lr"]),
        ("model: {name: rim}\ndata: {acceleration: [4]}\n", ["'acceleration'", "'data'", "accelerations"]),
        ("model: {name: rim}\nmodels: {}\n", ["'models'", "top-level", "train"]),
        ("model: {name: rim}\ntrain: {checkpoint_dir: x}\n", ["'checkpoint_dir'", "'train'"]),
    ],
)
def test_unknown_keys_name_key_section_valid_keys_and_file(tmp_path: Path, text: str, needles: list[str]) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert message.startswith(str(path))
    for needle in needles:
        assert needle in message


@pytest.mark.parametrize(
    ("text", "needles"),
    [
        ("train: {lr: 1}\n", ["'model'", "name"]),
        ("model: {name: unet}\n", ["'unet'", "cirim", "recurrentvarnet"]),
        ("model: {name: rim}\ntrain: {max_steps: many}\n", ["train.max_steps", "integer", "'many'"]),
        ("model: {name: rim}\ntrain: {amp: 3}\n", ["train.amp", "boolean"]),
        ("model: {name: rim, cell: lstm}\n", ["'model'", "lstm", "gru"]),
        ("model: {name: rim}\ndata: {accelerations: [4, 8], center_fractions: [0.08]}\n", ["'data'", "same length"]),
        ("model: {name: rim}\ndata: {mask_types: [poisson2d]}\n", ["'data'", "poisson2d", "random"]),
        ("model: {name: rim}\ntrain: {schedule: linear}\n", ["'train'", "cosine"]),
        ("- just\n- a list\n", ["mapping"]),
        ("model: {name: rim\n", ["YAML"]),
    ],
)
def test_bad_values_name_the_file(tmp_path: Path, text: str, needles: list[str]) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert message.startswith(str(path))
    for needle in needles:
        assert needle in message


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "absent.yaml")


def test_defaults_and_round_trip(tmp_path: Path) -> None:
    config = load_config(_write(tmp_path, "model: {name: cirim, num_cascades: 2}\ntrain: {lr: 5.0e-4}\n"))
    assert config.model_config == {"num_cascades": 2}
    assert config.train.lr == 5e-4 and config.train.max_steps == 1000  # TrainConfig default
    assert config.data == DataConfig()
    saved = save_config(config, tmp_path / "out" / "resolved.yaml")
    again = load_config(saved)
    assert config_to_dict(again) == config_to_dict(config)
    resolved = config_to_dict(again)
    assert resolved["model"]["num_cascades"] == 2 and resolved["model"]["cell"] == "indrnn"  # defaults written out
    assert resolved["train"]["lr"] == 5e-4 and "checkpoint_dir" not in resolved["train"]
    assert not list(saved.parent.glob(".*"))  # no temporary file left
