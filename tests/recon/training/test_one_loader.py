"""One loader and one centre crop: every path from files to a model goes through recon.models.build_model, and every
crop through recon.ops.center_crop, with results identical to the code they replaced."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from recon.models import build_model, create_model
from recon.ops import center_crop


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    from recon.training import save_checkpoint

    torch.manual_seed(0)
    # a tuple-valued field: JSON stores it as a list, every loader must turn it back into a tuple
    config = {"num_steps": 2, "hidden_channels": 4, "learned_initializer": True, "initializer_channels": [4, 4, 4, 4]}
    model = create_model("rim", **{**config, "initializer_channels": (4, 4, 4, 4)})
    return save_checkpoint(tmp_path / "ckpt", model, "rim", config)


def test_every_loader_gives_the_same_model(checkpoint: Path) -> None:
    from safetensors.torch import load_file

    from recon.cli._common import load_checkpoint_model
    from recon.training.checkpoint import load_model

    state = load_file(checkpoint / "model.safetensors")
    by_training, meta = load_model(checkpoint)
    by_cli, _ = load_checkpoint_model(checkpoint)
    by_build = build_model("rim", meta["model_config"], state)
    assert meta["model_config"]["initializer_channels"] == [4, 4, 4, 4]
    assert by_build.config.initializer_channels == (4, 4, 4, 4)
    torch.manual_seed(1)
    kspace = torch.randn(1, 2, 16, 16, dtype=torch.complex64)
    mask = torch.ones(1, 1, 1, 16)
    sens = torch.randn(1, 2, 16, 16, dtype=torch.complex64)
    with torch.inference_mode():
        outputs = [m.eval()(kspace, mask, sens) for m in (by_training, by_cli, by_build)]
    assert all(torch.equal(outputs[0], out) for out in outputs[1:])  # bit for bit
    for model in (by_training, by_cli, by_build):
        assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())


def test_build_model_refuses_weights_that_do_not_fit(checkpoint: Path) -> None:
    from safetensors.torch import load_file

    state = load_file(checkpoint / "model.safetensors")
    with pytest.raises(RuntimeError, match="size mismatch|Missing key|Unexpected key"):
        build_model("rim", {"num_steps": 2, "hidden_channels": 8}, state)
    with pytest.raises(ValueError, match="unknown model 'unet'"):
        build_model("unet", {}, state)


def test_one_center_crop_for_arrays_and_tensors() -> None:
    import recon.data.writer as writer
    import recon.training.losses as losses

    assert writer.center_crop is losses.center_crop is center_crop
    x = np.arange(2 * 7 * 9).reshape(2, 7, 9)
    # fastMRI's offsets (H - h) // 2, (W - w) // 2 for odd and even sizes, as both replaced copies had them
    np.testing.assert_array_equal(center_crop(x, (4, 4)), x[:, 1:5, 2:6])
    assert torch.equal(center_crop(torch.from_numpy(x), (4, 4)), torch.from_numpy(x[:, 1:5, 2:6]))
    for bad in ((8, 4), (0, 4)):
        with pytest.raises(ValueError, match="must be positive and fit in the image size"):
            center_crop(x, bad)


def test_default_weights_load_through_build_model(monkeypatch: pytest.MonkeyPatch) -> None:
    import recon.weights as weights
    from recon.models import MODEL_NAMES

    assert weights.default_model_names() == list(MODEL_NAMES)
    calls = []

    def spy(name, model_config=None, state_dict=None):
        calls.append(name)
        return build_model(name, model_config, state_dict)

    monkeypatch.setattr(weights, "build_model", spy)
    model = weights.load_default_model("rim")
    assert calls == ["rim"] and not model.training


def test_config_is_a_leaf_module() -> None:
    code = "import sys, recon.config; print(sorted(m for m in sys.modules if m.startswith('recon.training')))"
    root = Path(__file__).resolve().parents[3]
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
    )
    assert out.stdout.strip() == "[]"
    from recon.config import TrainConfig
    from recon.training import TrainConfig as Reexported

    assert Reexported is TrainConfig
