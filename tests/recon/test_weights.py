"""The shipped default weights (:mod:`recon.weights`): they load, are in eval mode, run, and beat zero-filling."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from recon.baselines import zero_filled_rss
from recon.config import config_to_dict, load_config
from recon.data.mri_data import read_volume
from recon.data.subsample import apply_mask, create_mask_for_mask_type
from recon.data.synthetic import write_synthetic_dataset
from recon.metrics import ssim
from recon.training.data import reconstruct
from recon.weights import (
    WEIGHTS_DIR,
    default_config,
    default_metadata,
    default_model_names,
    load_default_model,
)

NAMES = ["cirim", "rim", "recurrentvarnet"]
CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "recon"


@pytest.fixture(scope="module")
def held_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One held-out volume (seed and source unlike the training set's draws): 2 slices, 128 x 128, 8 coils."""
    out = tmp_path_factory.mktemp("held_out")
    (path,) = write_synthetic_dataset(out, 1, 2, (128, 128), 8, "ellipses", seed=12345, prefix="heldout")
    return path


def test_names_and_unknown_name() -> None:
    assert default_model_names() == NAMES
    with pytest.raises(ValueError, match="unet") as info:
        load_default_model("unet")
    for name in NAMES:
        assert name in str(info.value)


def test_files_are_small_and_match_the_shipped_configs() -> None:
    total = sum((WEIGHTS_DIR / f"{n}.safetensors").stat().st_size for n in NAMES)
    assert total < 5 * 2**20
    assert (WEIGHTS_DIR / "MODEL_CARD.md").is_file()
    for name in NAMES:
        meta, config = default_metadata(name), default_config(name)
        shipped = load_config(CONFIGS / f"{name}.yaml")
        resolved, expected = config_to_dict(config), config_to_dict(shipped)
        assert resolved["model"] == expected["model"]  # the config in configs/recon/ is the one trained
        assert resolved["data"] == expected["data"]
        assert f"configs/recon/{name}.yaml" in meta["command"] and meta["step"] > 0


@pytest.mark.parametrize("name", NAMES)
def test_loads_in_eval_mode_runs_and_beats_zero_filled(name: str, held_out: Path) -> None:
    model = load_default_model(name)
    assert not model.training and not any(m.training for m in model.modules())
    assert all(not p.is_meta and p.device.type == "cpu" for p in model.parameters())
    volume = read_volume(held_out)
    func = create_mask_for_mask_type("equispaced_fraction", [0.08], [4])
    preds, zero_filled = [], []
    for s, kspace in enumerate(volume.kspace):
        masked, mask, num_low = apply_mask(kspace, func, seed=s)
        preds.append(reconstruct(model, masked, mask, default_config(name).data, num_low))
        zero_filled.append(zero_filled_rss(masked))
    pred, zf = torch.stack(preds), torch.stack(zero_filled)
    assert pred.shape == volume.target.shape and torch.isfinite(pred).all()
    target = volume.target
    assert ssim(target, pred) > ssim(target, zf) + 0.05


def test_one_list_of_model_names() -> None:
    from recon.inference import MODEL_NAMES as inference_names
    from recon.models import MODEL_NAMES, MODELS, list_models

    assert inference_names is MODEL_NAMES and set(MODEL_NAMES) == set(MODELS) == set(list_models())
    assert MODEL_NAMES[0] == "cirim"  # the command line's default and first choice
    assert set(default_model_names()) == set(MODEL_NAMES)
