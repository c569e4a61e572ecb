from __future__ import annotations

import json

import pytest
import torch
from helpers import TINY, tiny_dataset

from recon.training import TrainConfig, build_scheduler, load_model, train


def _config(**kw) -> TrainConfig:
    base = {"model": "rim", "model_config": TINY["rim"], "max_steps": 4, "lr": 3e-3, "seed": 0, "device": "cpu"}
    base.update(kw)
    return TrainConfig(**base)


@pytest.mark.parametrize("name", ["rim", "cirim"])
def test_loss_goes_down(name):
    data = tiny_dataset(n=1)
    result = train(_config(model=name, model_config=TINY[name], max_steps=25, lr=5e-3, schedule="constant"), data)
    assert len(result.losses) == 25 and result.step == 25
    assert result.losses[-1] < 0.8 * result.losses[0]


def test_same_seed_same_weights():
    data = tiny_dataset(n=4)
    a = train(_config(batch_size=2), data).model.state_dict()
    b = train(_config(batch_size=2), data).model.state_dict()
    c = train(_config(batch_size=2, seed=1), data).model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_checkpoint_round_trip_and_resume(tmp_path):
    data = tiny_dataset(n=3)
    full = train(_config(max_steps=6, warmup_steps=2, schedule="constant"), data)
    ckpt = tmp_path / "ckpt"
    first = train(_config(max_steps=3, warmup_steps=2, schedule="constant", checkpoint_dir=str(ckpt)), data)
    # round trip: the model rebuilt from config.json + safetensors equals the trained one
    model, meta = load_model(ckpt / "last")
    assert meta["model"] == "rim" and meta["step"] == 3 and meta["model_config"] == TINY["rim"]
    assert json.loads((ckpt / "step-00000003" / "config.json").read_text())["step"] == 3
    sd = first.model.state_dict()
    assert all(torch.equal(sd[k], v) for k, v in model.state_dict().items())
    assert not list(ckpt.glob(".*"))  # no temporary files left
    # resume (to 6 steps) continues exactly as the uninterrupted run (the cosine schedule would depend on max_steps)
    resumed = train(
        _config(max_steps=6, warmup_steps=2, schedule="constant", checkpoint_dir=str(ckpt), resume="last"), data
    )
    assert resumed.step == 6 and len(resumed.losses) == 3
    assert resumed.losses == full.losses[3:]
    ref = full.model.state_dict()
    assert all(torch.equal(ref[k], v) for k, v in resumed.model.state_dict().items())


def test_schedule_warmup_then_cosine():
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = build_scheduler(opt, TrainConfig(max_steps=10, warmup_steps=2, schedule="constant", min_lr_ratio=0.1))
    lrs = []
    for _ in range(10):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] < lrs[1] < lrs[2] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[2:], lrs[3:], strict=False))
    assert lrs[-1] > 0.1


def test_grad_clip_and_bad_items():
    with pytest.raises(KeyError):
        train(_config(max_steps=1), [{"masked_kspace": torch.zeros(1)}])
    with pytest.raises(ValueError):
        train(_config(max_steps=1, batch_size=4), tiny_dataset(n=2))
